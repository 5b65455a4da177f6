"""A small HTTP/2 test client (h2 over asyncio TLS streams) that exposes what the tests need to
control: per-stream flow control (a stream may stop acknowledging DATA: a slow reader), resets,
raw frames, and everything received, awaited by predicate (no sleeps)."""
from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass, field
from typing import Callable

import h2.config
import h2.connection
import h2.events
import h2.exceptions


@dataclass
class StreamState:
    status: int | None = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    ended: bool = False
    reset: int | None = None          # error code of a RST_STREAM from the server
    slow: bool = False                # do not acknowledge this stream's DATA (connection window only)
    unacked: int = 0

    @property
    def done(self) -> bool:
        return self.ended or self.reset is not None

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name.encode():
                return v.decode()
        return None

    def json(self):
        return json.loads(bytes(self.body))


class H2Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 settings: dict | None = None):
        self.reader = reader
        self.writer = writer
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        if settings:
            self.conn.local_settings = h2.settings.Settings(client=True, initial_values=settings)
        self.conn.initiate_connection()
        self.streams: dict[int, StreamState] = {}
        self.events: list[h2.events.Event] = []
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.closed = False
        self.pings_received = 0
        self._changed = asyncio.Condition()
        self._flush()
        self._task = asyncio.ensure_future(self._read_loop())

    @classmethod
    async def connect(cls, port: int, ssl_ctx: ssl.SSLContext, settings: dict | None = None) -> "H2Client":
        ssl_ctx.set_alpn_protocols(["h2"])
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ssl_ctx,
                                                       server_hostname="127.0.0.1")
        assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
        return cls(reader, writer, settings)

    # -- sending -------------------------------------------------------------------------------------
    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    def request(self, method: str, path: str, headers: list[tuple[str, str]] = (), body: bytes = b"",
                *, end: bool = True, slow: bool = False) -> int:
        sid = self.conn.get_next_available_stream_id()
        fields = [(":method", method), (":scheme", "https"), (":authority", "gateway"), (":path", path)]
        fields += list(headers)
        self.streams[sid] = StreamState(slow=slow)
        self.conn.send_headers(sid, [(k.encode(), v.encode()) for k, v in fields],
                               end_stream=end and not body)
        if body:
            self.conn.send_data(sid, body, end_stream=end)
        self._flush()
        return sid

    def send_data(self, sid: int, data: bytes, end: bool = False) -> None:
        self.conn.send_data(sid, data, end_stream=end)
        self._flush()

    def reset(self, sid: int, code: int = 8) -> None:      # 8 = CANCEL, as kubectl sends
        self.conn.reset_stream(sid, code)
        self._flush()

    def ack(self, sid: int) -> None:
        """A slow reader finally takes what it has."""
        state = self.streams[sid]
        state.slow = False
        if state.unacked and not state.done:
            self.conn.increment_flow_control_window(state.unacked, sid)
        state.unacked = 0
        self._flush()

    def write_raw(self, data: bytes) -> None:
        self.writer.write(data)

    # -- receiving -------------------------------------------------------------------------------------
    async def _read_loop(self) -> None:
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                try:
                    events = self.conn.receive_data(data)
                except h2.exceptions.ProtocolError:
                    break
                for event in events:
                    self._on_event(event)
                self._flush()
                async with self._changed:
                    self._changed.notify_all()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            self.closed = True
            async with self._changed:
                self._changed.notify_all()

    def _on_event(self, event) -> None:
        self.events.append(event)
        sid = getattr(event, "stream_id", None)
        state = self.streams.get(sid) if sid else None
        if isinstance(event, h2.events.ResponseReceived):
            state.headers = [(k, v) for k, v in event.headers if not k.startswith(b":")]
            state.status = int(dict(event.headers)[b":status"])
        elif isinstance(event, h2.events.DataReceived):
            if state is None:
                return
            state.body += event.data
            if state.slow:
                # the connection window is handed back, the stream's is not: a slow reader
                state.unacked += event.flow_controlled_length
                self.conn.increment_flow_control_window(event.flow_controlled_length)
            else:
                self.conn.acknowledge_received_data(event.flow_controlled_length, sid)
        elif isinstance(event, h2.events.StreamEnded) and state is not None:
            state.ended = True
        elif isinstance(event, h2.events.StreamReset) and state is not None:
            state.reset = event.error_code
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event
        elif isinstance(event, h2.events.PingReceived):
            self.pings_received += 1

    async def wait(self, predicate: Callable[[], bool], what: str = "condition") -> None:
        async with self._changed:
            while not predicate():
                if self.closed:
                    if predicate():
                        return
                    raise AssertionError(f"connection closed while waiting for {what}")
                await self._changed.wait()

    async def wait_closed(self) -> None:
        async with self._changed:
            while not self.closed:
                await self._changed.wait()

    async def response(self, sid: int) -> StreamState:
        await self.wait(lambda: self.streams[sid].done, f"stream {sid} to end")
        return self.streams[sid]

    async def get(self, path: str, headers: list[tuple[str, str]] = ()) -> StreamState:
        return await self.response(self.request("GET", path, headers))

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass
