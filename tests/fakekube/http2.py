"""HTTP/2 over asyncio streams with h2: the same `httpcore` application as http1.py, one task per
stream. Request bodies are read whole (as on HTTP/1.1) and acknowledged as they arrive, bounded
by MAX_BODY; responses wait for the peer's flow-control window. A RST_STREAM cancels the stream's
handler (that is how a watch ends when the client abandons it). Upgrades never happen here:
clients open separate HTTP/1.1 connections for them."""
from __future__ import annotations

import asyncio
import contextlib
import logging

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions

from .http1 import MAX_BODY, Application
from .httpcore import Request, Response, send_bytes
from .status import ApiError, internal

log = logging.getLogger(__name__)


class _H2Response(Response):
    def __init__(self, server: "_Connection", stream_id: int):
        self._server = server
        self._sid = stream_id
        self.started = False
        self.finished = False

    async def start(self, status: int, headers: list[tuple[str, str]]) -> None:
        self.started = True
        fields = [(":status", str(status))] + [(k.lower(), v) for k, v in headers
                                                if k.lower() not in ("connection", "transfer-encoding")]
        self._server.conn.send_headers(self._sid, [(k.encode(), v.encode()) for k, v in fields])
        await self._server.flush()

    async def write(self, data: bytes) -> None:
        await self._server.send_data(self._sid, data)

    async def finish(self) -> None:
        self.finished = True
        self._server.conn.end_stream(self._sid)
        await self._server.flush()


class _Stream:
    def __init__(self, headers: list[tuple[bytes, bytes]]):
        self.headers = headers
        self.body = bytearray()
        self.task: asyncio.Task | None = None
        self.window = asyncio.Event()


class _Connection:
    def __init__(self, app: Application, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.app = app
        self.reader = reader
        self.writer = writer
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
        ssl_object = writer.get_extra_info("ssl_object")
        self.peer_cert = ssl_object.getpeercert() if ssl_object is not None else None
        self.streams: dict[int, _Stream] = {}
        self.closed = False

    async def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.writer.write(data)
            await self.writer.drain()       # watch events must not sit in a buffer

    async def send_data(self, sid: int, data: bytes) -> None:
        while data:
            stream = self.streams.get(sid)
            if self.closed or stream is None:
                raise ConnectionError("stream or connection closed")
            size = min(len(data), self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if size <= 0:
                stream.window.clear()
                await stream.window.wait()
                continue
            self.conn.send_data(sid, data[:size])
            data = data[size:]
            await self.flush()

    async def run(self) -> None:
        self.conn.initiate_connection()
        try:
            await self.flush()
            while True:
                data = await self.reader.read(65536)
                if not data:
                    return
                try:
                    events = self.conn.receive_data(data)
                except h2.exceptions.ProtocolError:
                    await self.flush()
                    return
                for event in events:
                    self._dispatch(event)
                await self.flush()
        finally:
            self.closed = True
            tasks = [s.task for s in self.streams.values() if s.task is not None]
            for stream in self.streams.values():
                stream.window.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                self.writer.close()

    def _dispatch(self, event: h2.events.Event) -> None:
        sid = getattr(event, "stream_id", 0)
        stream = self.streams.get(sid)
        if isinstance(event, h2.events.RequestReceived):
            self.streams[sid] = _Stream(event.headers)
            if event.stream_ended is not None:
                self._start(sid)
        elif isinstance(event, h2.events.DataReceived):
            self.conn.acknowledge_received_data(event.flow_controlled_length, sid)
            if stream is not None and stream.task is None:
                stream.body += event.data
                if len(stream.body) > MAX_BODY:
                    self.conn.reset_stream(sid, h2.errors.ErrorCodes.REFUSED_STREAM)
                    del self.streams[sid]
        elif isinstance(event, h2.events.StreamEnded):
            if stream is not None and stream.task is None:
                self._start(sid)
        elif isinstance(event, h2.events.StreamReset):
            if stream is not None and stream.task is not None:
                stream.task.cancel()           # the client abandoned it (a watch, logs -f)
            self.streams.pop(sid, None)
        elif isinstance(event, h2.events.WindowUpdated):
            for s in ([stream] if sid else self.streams.values()):
                if s is not None:
                    s.window.set()
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            for s in self.streams.values():
                s.window.set()

    def _start(self, sid: int) -> None:
        stream = self.streams[sid]
        pseudo = {k: v for k, v in stream.headers if k.startswith(b":")}
        headers = [(k, v) for k, v in stream.headers if not k.startswith(b":")]
        if b":authority" in pseudo:
            headers.insert(0, (b"host", pseudo[b":authority"]))
        request = Request(method=pseudo.get(b":method", b"GET").decode(),
                          target=pseudo.get(b":path", b"/").decode("latin-1"),
                          headers=headers, body=bytes(stream.body), peer_cert=self.peer_cert or None)
        stream.task = asyncio.ensure_future(self._serve(sid, request))

    async def _serve(self, sid: int, request: Request) -> None:
        response = _H2Response(self, sid)
        try:
            try:
                await self.app.handle(request, response)
            except ApiError as err:
                await self._error(sid, response, err)
            except (ConnectionError, asyncio.CancelledError, h2.exceptions.StreamClosedError):
                raise
            except Exception as exc:  # noqa: BLE001 - no tracebacks to clients, a 500 Status instead
                log.exception("handler failed for %s %s", request.method, request.target)
                await self._error(sid, response, internal(type(exc).__name__))
        except (ConnectionError, asyncio.CancelledError, h2.exceptions.StreamClosedError,
                h2.exceptions.ProtocolError):
            pass
        finally:
            if not self.closed and not response.finished and sid in self.streams:
                with contextlib.suppress(h2.exceptions.ProtocolError):
                    self.conn.reset_stream(sid, h2.errors.ErrorCodes.INTERNAL_ERROR)
                with contextlib.suppress(ConnectionError):
                    await self.flush()
            self.streams.pop(sid, None)

    async def _error(self, sid: int, response: _H2Response, err: ApiError) -> None:
        if response.started:
            raise ConnectionError("error after the response started")
        await send_bytes(response, err.code, err.body(), "application/json")


async def serve_h2_connection(app: Application, reader: asyncio.StreamReader,
                              writer: asyncio.StreamWriter) -> None:
    await _Connection(app, reader, writer).run()
