"""Clients that open many idle connections and watches through the gateway cheaply (bench_idle.py).

- `KeepAliveConnection`: HTTP/1.1 over TLS, one GET answered in full, then the connection idles.
- `Http1Watch`: HTTP/1.1 over TLS, one watch per connection, held once its first event arrived.
- `H2Watches`: one HTTP/2 connection carrying many watch streams, each held once its first event
  arrived; the connection keeps reading so the gateway's PINGs are answered.

Each `open()` returns only when the gateway has answered (so the connection or stream is really
established end to end) and raises `ConnectionProblem` otherwise.
"""
from __future__ import annotations

import asyncio
import ssl

import h11
import h2.config
import h2.connection
import h2.events

HANDSHAKE_TIMEOUT = 60.0
READ_SIZE = 65536


class ConnectionProblem(Exception):
    """The gateway did not establish a connection or stream as asked."""


class Target:
    """Where the gateway listens, the path prefix of the cluster, and the caller's token."""

    def __init__(self, port: int, prefix: str, token: str, ca_file: str):
        self.port, self.prefix = port, prefix
        self.authorization = f"Bearer {token}".encode()
        self.contexts = {}
        for alpn in ("http/1.1", "h2"):
            context = ssl.create_default_context(cafile=ca_file)
            context.set_alpn_protocols([alpn])
            self.contexts[alpn] = context

    async def dial(self, alpn: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            "127.0.0.1", self.port, ssl=self.contexts[alpn], server_hostname="127.0.0.1"), HANDSHAKE_TIMEOUT)
        if writer.get_extra_info("ssl_object").selected_alpn_protocol() != alpn:
            writer.close()
            raise ConnectionProblem(f"the gateway did not select ALPN {alpn}")
        return reader, writer


class _Http1:
    def __init__(self, target: Target):
        self.target = target
        self.writer: asyncio.StreamWriter | None = None

    async def _exchange(self, path: str, until: type) -> None:
        """Sends GET `path`; returns at the first h11 event of type `until` after a 200 head."""
        reader, self.writer = await self.target.dial("http/1.1")
        conn = h11.Connection(h11.CLIENT)
        self.writer.write(conn.send(h11.Request(method="GET", target=self.target.prefix + path, headers=[
            ("Host", f"127.0.0.1:{self.target.port}"), ("Authorization", self.target.authorization)])))
        self.writer.write(conn.send(h11.EndOfMessage()))
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await asyncio.wait_for(reader.read(READ_SIZE), HANDSHAKE_TIMEOUT)
                conn.receive_data(data)
            elif isinstance(event, h11.Response) and event.status_code != 200:
                raise ConnectionProblem(f"GET {path}: {event.status_code}")
            elif isinstance(event, until):
                return
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionProblem(f"GET {path}: the gateway closed the connection")

    def alive(self) -> bool:
        return self.writer is not None and not self.writer.transport.is_closing()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class KeepAliveConnection(_Http1):
    async def open(self) -> None:
        await self._exchange("/api/v1/namespaces/default/pods/web-0", h11.EndOfMessage)


class Http1Watch(_Http1):
    async def open(self) -> None:
        await self._exchange("/api/v1/namespaces/default/pods?watch=true", h11.Data)


class H2Watches:
    """Up to `streams` watches on one HTTP/2 connection."""

    def __init__(self, target: Target):
        self.target = target
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.writer: asyncio.StreamWriter | None = None
        self._first_event: dict[int, asyncio.Future] = {}
        self._pump: asyncio.Task | None = None
        self.ended = 0      # watches that ended or were reset: a held watch never does

    async def open(self, streams: int) -> None:
        reader, self.writer = await self.target.dial("h2")
        self.conn.initiate_connection()
        self._pump = asyncio.create_task(self._read(reader))
        loop = asyncio.get_running_loop()
        path = f"{self.target.prefix}/api/v1/namespaces/default/pods?watch=true".encode()
        for _ in range(streams):
            stream_id = self.conn.get_next_available_stream_id()
            self._first_event[stream_id] = loop.create_future()
            self.conn.send_headers(stream_id, [
                (b":method", b"GET"), (b":scheme", b"https"), (b":authority", f"127.0.0.1:{self.target.port}".encode()),
                (b":path", path), (b"authorization", self.target.authorization)], end_stream=True)
        self.writer.write(self.conn.data_to_send())
        try:
            await asyncio.wait_for(asyncio.gather(*self._first_event.values()), HANDSHAKE_TIMEOUT)
        except asyncio.TimeoutError:
            waiting = sum(1 for f in self._first_event.values() if not f.done())
            raise ConnectionProblem(f"{waiting} of {streams} HTTP/2 watches got no first event") from None

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while data := await reader.read(READ_SIZE):
            for event in self.conn.receive_data(data):
                first = self._first_event.get(getattr(event, "stream_id", 0))
                if isinstance(event, h2.events.ResponseReceived) and dict(event.headers)[b":status"] != b"200":
                    self._settle(first, ConnectionProblem(f"watch answered {dict(event.headers)[b':status']!r}"))
                elif isinstance(event, h2.events.DataReceived):
                    self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    self._settle(first, None)
                elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                    self.ended += 1
                    self._settle(first, ConnectionProblem("a watch ended while it should be held"))
            self.writer.write(self.conn.data_to_send())
        self.ended = len(self._first_event)
        for future in self._first_event.values():
            self._settle(future, ConnectionProblem("the gateway closed the HTTP/2 connection"))

    def alive(self) -> int:
        """How many of its watches are still open."""
        return len(self._first_event) - self.ended

    @staticmethod
    def _settle(future: asyncio.Future | None, problem: Exception | None) -> None:
        if future is not None and not future.done():
            if problem is None:
                future.set_result(None)
            else:
                future.set_exception(problem)

    def close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
        if self.writer is not None:
            self.writer.close()
