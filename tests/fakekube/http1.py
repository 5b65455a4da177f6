"""HTTP/1.1 over asyncio streams with h11: keep-alive, chunked streaming, upgrade hand-over."""
from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Awaitable, Callable, Protocol

import h11

from .httpcore import Request, Response, send_bytes
from .status import ApiError, internal

log = logging.getLogger(__name__)

MAX_BODY = 16 * 1024 * 1024

# Takes over the connection after an authorized upgrade request: (initial bytes, reader, writer).
UpgradeHandler = Callable[[bytes, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Application(Protocol):
    async def handle(self, request: Request, response: Response) -> None: ...

    async def prepare_upgrade(self, request: Request) -> UpgradeHandler | None: ...


class _H11Response(Response):
    def __init__(self, conn: h11.Connection, writer: asyncio.StreamWriter):
        self._conn = conn
        self._writer = writer
        self.started = False
        self.finished = False

    async def start(self, status: int, headers: list[tuple[str, str]]) -> None:
        self.started = True
        await self._send(h11.Response(status_code=status, headers=headers))

    async def write(self, data: bytes) -> None:
        if data:
            await self._send(h11.Data(data=data))

    async def finish(self) -> None:
        self.finished = True
        await self._send(h11.EndOfMessage())

    async def _send(self, event: h11.Event) -> None:
        self._writer.write(self._conn.send(event))
        await self._writer.drain()          # flush per write: watch events must not sit in a buffer


class _Connection:
    def __init__(self, app: Application, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.app = app
        self.reader = reader
        self.writer = writer
        self.conn = h11.Connection(h11.SERVER)
        ssl_object = writer.get_extra_info("ssl_object")
        self.peer_cert = ssl_object.getpeercert() if ssl_object is not None else None

    async def _next_event(self) -> h11.Event:
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            self.conn.receive_data(await self.reader.read(65536))

    async def _read_request(self, head: h11.Request) -> Request:
        body = bytearray()
        while True:
            event = await self._next_event()
            if isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY:
                    raise ApiError(413, "request entity too large", "RequestEntityTooLarge")
            elif isinstance(event, h11.EndOfMessage):
                break
        return Request(method=head.method.decode(), target=head.target.decode("latin-1"),
                       headers=[(k.lower(), v) for k, v in head.headers.raw_items()],
                       body=bytes(body), peer_cert=self.peer_cert or None)

    async def run(self) -> None:
        try:
            while True:
                try:
                    event = await self._next_event()
                    if not isinstance(event, h11.Request):
                        return              # ConnectionClosed, or PAUSED after a hand-over
                    request = await self._read_request(event)
                except h11.RemoteProtocolError as exc:
                    await self._early_error(ApiError(exc.error_status_hint, f"malformed request: {exc}",
                                                     "BadRequest"))
                    return
                except ApiError as err:
                    await self._early_error(err)
                    return
                outcome = await self._maybe_upgrade(request)
                if outcome is True:
                    return
                if outcome is None:
                    await self._serve(request)
                if self.conn.our_state is not h11.DONE or self.conn.their_state is not h11.DONE:
                    return
                self.conn.start_next_cycle()
        except (ConnectionError, asyncio.IncompleteReadError, h11.LocalProtocolError):
            return
        finally:
            with contextlib.suppress(Exception):
                self.writer.close()

    async def _maybe_upgrade(self, request: Request) -> bool | None:
        """True: connection handed over; False: refused with an error; None: serve normally."""
        if self.conn.their_state is not h11.MIGHT_SWITCH_PROTOCOL:
            return None
        try:
            takeover = await self.app.prepare_upgrade(request)
        except ApiError as err:
            # A non-101 answer denies the switch; h11 then keeps the connection alive as usual.
            await send_bytes(_H11Response(self.conn, self.writer), err.code, err.body(), "application/json")
            return False
        if takeover is None:
            return None
        initial, _closed = self.conn.trailing_data
        await takeover(initial, self.reader, self.writer)
        return True

    async def _serve(self, request: Request) -> None:
        """Runs the handler while watching the socket: EOF means the client left (ends watches)."""
        response = _H11Response(self.conn, self.writer)
        handler = asyncio.ensure_future(self._guarded(request, response))
        eof_watch = asyncio.ensure_future(self._watch_eof())
        try:
            done, _ = await asyncio.wait({handler, eof_watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (eof_watch, handler):
                task.cancel()
            # Wait for both to really end: the next request's read must not race the EOF watcher's.
            await asyncio.wait({eof_watch, handler})
        if eof_watch in done or handler.cancelled() or handler.exception() is not None or not response.finished:
            raise ConnectionError("connection unusable: the client left or the response broke off")

    async def _watch_eof(self) -> None:
        while True:
            data = await self.reader.read(65536)
            if not data:
                return
            self.conn.receive_data(data)     # pipelined bytes wait in h11's buffer

    async def _guarded(self, request: Request, response: Response) -> None:
        try:
            await self.app.handle(request, response)
        except ApiError as err:
            await self._error(response, err)
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception as exc:  # noqa: BLE001 - no tracebacks to clients, a 500 Status instead
            log.exception("handler failed for %s %s", request.method, request.target)
            await self._error(response, internal(type(exc).__name__))

    @staticmethod
    async def _error(response: Response, err: ApiError) -> None:
        if response.started:
            raise ConnectionError("error after the response started")   # cannot change the status now
        await send_bytes(response, err.code, err.body(), "application/json")

    async def _early_error(self, err: ApiError) -> None:
        """Answers a request that could not be read (malformed, too large), then the connection closes."""
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = err.body()
        with contextlib.suppress(Exception):
            self.writer.write(self.conn.send(h11.Response(
                status_code=err.code, headers=[("Content-Type", "application/json"),
                                               ("Content-Length", str(len(body))), ("Connection", "close")])))
            self.writer.write(self.conn.send(h11.Data(data=body)))
            self.writer.write(self.conn.send(h11.EndOfMessage()))
            await self.writer.drain()


async def serve_connection(app: Application, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter) -> None:
    await _Connection(app, reader, writer).run()
