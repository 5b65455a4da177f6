"""The Kubernetes channel protocols over WebSocket, and a small asyncio WebSocket server end.

`ChannelCodec` is sans-IO: a message is one channel byte (binary protocols) or one ASCII digit
followed by base64 (base64.channel.k8s.io), then the payload. `WebSocketConnection` drives
wsproto over an asyncio stream pair for a request whose head the HTTP server already parsed.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
from urllib.parse import urlencode

from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (AcceptConnection, BytesMessage, CloseConnection, Message, Ping,
                            Request, TextMessage)
from wsproto.utilities import RemoteProtocolError

from .upgrade_request import UpgradeRequest

STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
CLOSE = 255                  # v5: [255, channel] half-closes that channel

V5 = "v5.channel.k8s.io"
V4 = "v4.channel.k8s.io"
V3 = "v3.channel.k8s.io"
V2 = "v2.channel.k8s.io"
V1 = "channel.k8s.io"
BASE64 = "base64.channel.k8s.io"
EXEC_PROTOCOLS = (V5, V4, V3, V2, V1, BASE64)
SPDY_TUNNEL = "SPDY/3.1+portforward.k8s.io"


def offered_protocols(request: UpgradeRequest) -> list[str]:
    """Sec-WebSocket-Protocol values in the client's order (repeated headers and commas)."""
    return [p.strip() for value in request.header_values(b"sec-websocket-protocol")
            for p in value.decode("latin-1").split(",") if p.strip()]


def negotiate(offered: list[str], supported: tuple[str, ...]) -> str | None:
    """First offered protocol we support: the client's preference wins, as in wsstream."""
    return next((p for p in offered if p in supported), None)


class ChannelProtocolError(ValueError):
    pass


class ChannelCodec:
    def __init__(self, protocol: str):
        self.protocol = protocol
        self.binary = protocol != BASE64
        self.structured_status = protocol in (V5, V4)   # v4+: Status JSON on the error channel
        self.close_signal = protocol == V5

    def encode(self, channel: int, payload: bytes) -> bytes | str:
        if self.binary:
            return bytes([channel]) + payload
        return str(channel) + base64.b64encode(payload).decode("ascii")

    def decode(self, message: bytes | str) -> tuple[int, bytes]:
        if self.binary:
            if not isinstance(message, bytes) or not message:
                raise ChannelProtocolError("expected a non-empty binary message")
            return message[0], message[1:]
        if not isinstance(message, str) or not message or not message[0].isdigit():
            raise ChannelProtocolError("expected a text message starting with a channel digit")
        try:
            return int(message[0]), base64.b64decode(message[1:], validate=True)
        except ValueError:
            raise ChannelProtocolError("invalid base64 payload") from None


def _raw_head(request: UpgradeRequest) -> bytes:
    # wsproto wants the request as bytes; rebuild it from the parsed head (same headers, in order).
    target = request.path + ("?" + urlencode(request.query, doseq=True) if request.query else "")
    lines = [f"{request.method} {target} HTTP/1.1".encode()]
    lines += [name + b": " + value for name, value in request.headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


class WebSocketConnection:
    """Server end of one WebSocket: answers PINGs, reassembles fragmented messages."""

    def __init__(self, request: UpgradeRequest, initial: bytes,
                 reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self._ws = WSConnection(ConnectionType.SERVER)
        self._reader, self._writer = reader, writer
        self._messages: list[bytes | str] = []
        self._partial: list[bytes | str] = []
        self._closed = False
        self.close_received = False
        try:
            self._ws.receive_data(_raw_head(request) + initial)
            self._request = next((e for e in self._ws.events() if isinstance(e, Request)), None)
        except RemoteProtocolError:
            self._request = None
        if self._request is None:
            raise ChannelProtocolError("not a valid WebSocket upgrade request")

    async def accept(self, subprotocol: str) -> None:
        self._writer.write(self._ws.send(AcceptConnection(subprotocol=subprotocol)))
        await self._writer.drain()

    async def send(self, message: bytes | str) -> None:
        if self._ws.state != ConnectionState.OPEN:
            raise ConnectionResetError("WebSocket is closing")
        event = BytesMessage(message) if isinstance(message, bytes) else TextMessage(message)
        self._writer.write(self._ws.send(event))
        await self._writer.drain()

    async def recv(self) -> bytes | str | None:
        """Next complete data message; None once the peer closed or the connection dropped."""
        while not self._messages:
            if self._closed:
                return None
            data = await self._reader.read(65536)
            if not data:
                self._closed = True
                return None
            try:
                self._ws.receive_data(data)
                self._process_events()
            except RemoteProtocolError:
                self._closed = True
                return None
        return self._messages.pop(0)

    def _process_events(self) -> None:
        for event in self._ws.events():
            if isinstance(event, Ping):
                self._writer.write(self._ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                self.close_received = True
                if self._ws.state == ConnectionState.REMOTE_CLOSING:
                    self._writer.write(self._ws.send(event.response()))
                self._closed = True
            elif isinstance(event, Message):
                self._partial.append(event.data)
                if event.message_finished:
                    joined = (b"" if isinstance(event, BytesMessage) else "").join(self._partial)
                    self._partial.clear()
                    self._messages.append(joined)

    async def send_close(self, code: int = 1000) -> None:
        """Start the closing handshake; the peer's answer arrives through recv() (as None)."""
        if self._ws.state == ConnectionState.OPEN:
            self._writer.write(self._ws.send(CloseConnection(code=code)))
            await self._writer.drain()

    async def close(self, code: int = 1000, wait: float = 5.0) -> None:
        """Close and give the peer a moment to answer; only when nobody else is reading."""
        await self.send_close(code)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                while await self.recv() is not None:
                    pass              # late data after our close is discarded
