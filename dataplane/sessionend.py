"""Ending a spliced exec / attach / cp / port-forward session so that kubectl learns why.

When the gateway itself ends a session (the caller's credentials were revoked, kubectl access
to the cluster was switched off, policy no longer allows it: liveexchanges.py), cutting the
connection tells kubectl nothing; over SPDY it even exits 0, as if the command had succeeded.
So the splice (splice.py) walks the server's frames as they pass (framewalk.py), and to end a
session it stops forwarding the server's bytes at a frame boundary, then speaks as the server
would: the reason on the session's error channel and the protocol's close.

- WebSocket (v5/v4.channel.k8s.io; v1-v3 and base64 too): a message on channel 3 carrying a
  metav1.Status (plain text before v4), then a close frame with code 1000 (client-go reads the
  error channel only after a normal closure).
- SPDY/3.1: a DATA frame with FIN on each of the client's error streams (the Status for v4+
  exec, plain text for older protocols and port-forward), FIN on the other streams so that
  kubectl's copy loops end, then GOAWAY.
- Port-forward tunnelled over WebSocket (SPDY/3.1+portforward.k8s.io) has no error channel at
  the WebSocket level: it gets a close frame 1008 naming the reason, and kubectl reports the
  lost connection.

Then the client gets a moment to hang up before the connection closes, so that the last bytes
are not lost to a reset.
"""
from __future__ import annotations

import asyncio
import base64
import json

from . import spdyframes, wsframes
from .splice import ENDED

BOUNDARY_WAIT = 2.0             # how long the server may take to finish the frame it is sending
LINGER = 5.0                    # how long the client gets to hang up after the last frame

_STATUS_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io", "v5.base64.channel.k8s.io",
                     "v4.base64.channel.k8s.io")


def caller_status(revocation: str, shown: str) -> dict:
    """The Status that tells kubectl why the gateway ended its session; `shown` is what the
    caller may be told (liveexchanges.LiveExchange.shown), `revocation` the audited reason."""
    unauthorized = revocation.startswith("authentication refused")
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": f"session ended by AccessPoint: {shown or 'no longer allowed'}",
            "reason": "Unauthorized" if unauthorized else "Forbidden",
            "code": 401 if unauthorized else 403}


def _response_header(raw_head: bytes, name: bytes) -> str:
    for line in raw_head.split(b"\r\n")[1:]:
        key, sep, value = line.partition(b":")
        if sep and key.strip().lower() == name:
            return value.strip().decode("latin-1")
    return ""


def for_upgrade(upgrade: bytes | None, raw_head: bytes) -> SessionEnding | None:
    """The way to end the session that a 101 (`raw_head`) to an `Upgrade: upgrade` request
    started; None for a protocol the gateway does not know (it is then only cut)."""
    upgrade = (upgrade or b"").strip()
    if upgrade == b"websocket":
        return WebSocketEnding(_response_header(raw_head, b"sec-websocket-protocol"))
    if upgrade == b"spdy/3.1":
        return SpdyEnding(_response_header(raw_head, b"x-stream-protocol-version"))
    return None


class SessionEnding:
    """One session's walkers and its ending. `end(reason)` may come at any time; the splice's
    server → client pump (`pump_out`) then finishes the frame in flight, sends the closing
    frames and returns ENDED."""

    def __init__(self, protocol: str, server: wsframes.WsFrames | spdyframes.ServerFrames):
        self.protocol = protocol
        self.server = server
        self.observe_in = None           # a callable fed the client's bytes, where needed
        self.status: dict | None = None  # set by `end`
        self._pump: asyncio.Task | None = None
        self._reading = False

    def end(self, revocation: str, shown: str = "") -> None:
        if self.status is not None:
            return
        self.status = caller_status(revocation, shown)
        if self._reading and self._pump is not None:
            self._pump.cancel()          # it waits on the server: nothing is torn

    async def pump_out(self, reader, writer, stats) -> bool | str:
        """splice._pump for server → client, walking frames; True/False as there, or ENDED."""
        self._pump = asyncio.current_task()
        while self.status is None:
            self._reading = True
            try:
                data = await reader.read(65536)
            except asyncio.CancelledError:
                if self.status is not None and self._pump.uncancel() == 0:
                    break
                raise
            finally:
                self._reading = False
            if not data:
                half_close = writer.can_write_eof()
                writer.write_eof()
                return half_close
            self.server.feed(data)
            stats.bytes_out += len(data)
            await writer.write(data)
        if await self._finish_frame(reader, writer, stats):
            await writer.write(self.closing())
        return ENDED

    async def _finish_frame(self, reader, writer, stats) -> bool:
        """Forward the rest of the frame in flight; False when it does not come in time."""
        deadline = asyncio.get_running_loop().time() + BOUNDARY_WAIT
        while not self.server.at_boundary:
            try:
                async with asyncio.timeout_at(deadline):
                    data = await reader.read(65536)
            except TimeoutError:
                return False
            if not data:
                return False
            data = data[:self.server.feed(data, stop_at_boundary=True)]
            stats.bytes_out += len(data)
            await writer.write(data)
        return True

    def closing(self) -> bytes:
        """The frames that end the session, given what has passed so far."""
        raise NotImplementedError

    def message(self) -> bytes:
        """What the error channel carries under the negotiated protocol."""
        if self.protocol in _STATUS_PROTOCOLS:
            return json.dumps(self.status, separators=(",", ":")).encode()
        return self.status["message"].encode()

    @staticmethod
    async def linger(client_reader) -> None:
        """Discard what the client still sends until it hangs up (or LINGER has passed)."""
        try:
            async with asyncio.timeout(LINGER):
                while await client_reader.read(65536):
                    pass
        except TimeoutError:
            pass


class WebSocketEnding(SessionEnding):
    def __init__(self, protocol: str):
        super().__init__(protocol, wsframes.WsFrames())

    def closing(self) -> bytes:
        if self.server.close_seen:
            return b""                   # the server is closing already: nothing to add
        out = bytearray()
        if self.server.in_message:       # end the server's fragmented message where it stands
            out += wsframes.frame(wsframes.OP_CONTINUATION, b"")
        if "channel.k8s.io" not in self.protocol:    # port-forward's SPDY tunnel: no error channel
            return bytes(out + wsframes.close_frame(1008, self.status["message"]))
        if "base64" in self.protocol:
            out += wsframes.frame(wsframes.OP_TEXT, b"3" + base64.b64encode(self.message()))
        else:
            out += wsframes.frame(wsframes.OP_BINARY, b"\x03" + self.message())
        return bytes(out + wsframes.close_frame(1000))


class SpdyEnding(SessionEnding):
    def __init__(self, protocol: str):
        super().__init__(protocol, spdyframes.ServerFrames())
        self.client = spdyframes.ClientFrames()
        self.observe_in = self.client.feed

    def closing(self) -> bytes:
        if self.server.goaway_seen or self.client.failed:
            return b""
        out = bytearray()
        message = self.message()
        for stream_id, stream_type in sorted(self.client.streams.items()):
            if stream_id in self.server.finished:
                continue
            payload = message if stream_type == "error" else b""
            out += spdyframes.data_frame(stream_id, payload, fin=True)
        return bytes(out + spdyframes.goaway_frame(self.client.last_stream))
