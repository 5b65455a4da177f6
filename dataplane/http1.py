"""Downstream HTTP/1.1: a thin asyncio Protocol around the sans-IO parser in native.httpparse.

One request at a time per connection, strictly in order: the next request head is parsed only
after the current response has ended; pipelined bytes wait in the buffer (bounded: reading
pauses once more than a head's worth is waiting). Request bodies (Content-Length or chunked)
stream to the handler through a `BodyReader` with backpressure. There is no idle timeout while a
request is being served (watches, logs -f and exec run for hours); the only timers are the
head timeout (a head must be complete within `head_timeout` of its first byte: slowloris) and
the keep-alive idle timeout between requests.

Connection phases (the whole state machine):

    HEAD ──head parsed──▶ BODY ──body complete──▶ WAIT ──response ended──▶ HEAD (keep-alive)
      │                    │                        │                      or CLOSED
      │                    └─────────── 101 sent ───┴──▶ UPGRADED (byte pipe) ──▶ CLOSED
      └─ parse error / head timeout ──▶ CLOSED (Status answered first)
"""
from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from cryptography import x509

from native.httpparse import ChunkedDecoder, HttpParseError, parse_request_head

from . import status
from .flow import ByteQueue, ConnectionGone, Flag, FlowControl, PipeReader, transport_peer
from .pipeline import Request

log = logging.getLogger("accesspoint.http1")

HEAD, BODY, WAIT, UPGRADED, CLOSED = "head", "body", "wait", "upgraded", "closed"

Handler = Callable[..., Awaitable[None]]     # (request, response[, prepared]); prepared: see `fast`
# serves a request without a body or upgrade from callbacks, or hands it on with `spawn(prepared)`
FastHandler = Callable[[Request, "Response", Callable[[object], None]], None]

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

# the body of every request without one (most of them): at its end already, never fed
_NO_BODY = ByteQueue(None)
_NO_BODY.feed_eof()


class BodyReader:
    """The request body as the handler reads it: `await read()` → bytes, b"" at the end."""

    def __init__(self, protocol: "HTTP1Protocol", queue: ByteQueue, length: int | None,
                 chunked: bool, expect_continue: bool):
        self._protocol = protocol
        self._queue = queue
        self.length = length          # Content-Length, None when chunked or absent
        self.chunked = chunked
        self.bytes_read = 0
        self._expect_continue = expect_continue

    @property
    def empty(self) -> bool:
        """There is no body at all (no Content-Length > 0, not chunked)."""
        return not self.chunked and not self.length

    async def read(self, limit: int = -1) -> bytes:
        if self._expect_continue:
            self._expect_continue = False
            self._protocol._send_continue()
        data = await self._queue.read(limit)
        self.bytes_read += len(data)
        return data


class PipeWriter:
    """Raw writes after a 101. `write_eof` half-closes where the transport can (not over TLS)."""

    def __init__(self, transport: asyncio.Transport, flow: FlowControl):
        self._transport = transport
        self._flow = flow
        self.eof_sent = False

    async def write(self, data: bytes) -> None:
        if self._flow.closed or self._transport.is_closing():
            raise ConnectionGone("client connection closed")
        self._transport.write(data)
        await self._flow.drain()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def write_eof(self) -> None:
        """Half-close toward the client; over TLS this is deferred to the connection's close
        (when the upgrade handler returns), so that the audit event is written first."""
        self.eof_sent = True
        if self._transport.can_write_eof() and not self._transport.is_closing():
            self._transport.write_eof()

    def close(self) -> None:
        self._transport.close()


class Response:
    """The response to one request (contract in docs/architecture.md)."""

    def __init__(self, protocol: "HTTP1Protocol", request: Request, version: bytes):
        self._protocol = protocol
        self._request = request
        self._version = version
        self.aborted = Flag()     # the client went away (the handler task is cancelled)
        self.started = False
        self.finished = False
        self.upgraded = False
        self.status: int | None = None
        self.bytes_out = 0            # body bytes written (after framing is removed)
        self._chunked = False
        self._no_body = False
        self.keep_alive = True
        self._handler_task: asyncio.Task | None = None
        self.on_abort: Callable[[], None] | None = None     # the fast path's, instead of a task
        self.on_writable: Callable[[], None] | None = None  # the client's buffer drained again
        # the head waits for the first body bytes (or the end) to leave in the same write: one
        # TLS record and one syscall for a small response; it leaves on its own at the next
        # turn of the event loop when the body is not ready yet (a watch waiting for events)
        self._head: bytes | None = None

    @property
    def writes_paused(self) -> bool:
        """The client's transport buffer is above its high-water mark (`on_writable` follows)."""
        return self._protocol.flow.write_paused

    def cancel_on_abort(self, task: asyncio.Task) -> None:
        """Cancel `task` (the handler) when the client goes away; ConnectionGone if it has."""
        if self.aborted.is_set():
            raise ConnectionGone("client went away")
        self._handler_task = task

    def abort(self) -> None:
        """The client went away."""
        self.aborted.set()
        task = self._handler_task
        if task is not None and not task.done():
            task.cancel()
        if self.on_abort is not None:
            self.on_abort()

    async def start(self, status_code: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.begin(status_code, headers)
        self._protocol._loop.call_soon(self.flush_head)
        await self._protocol.flow.drain()

    def begin(self, status_code: int, headers: list[tuple[bytes, bytes]]) -> None:
        """`start` without waiting: the head waits for the first body bytes, `end_now` or
        `flush_head`."""
        if self.started:
            raise RuntimeError("response already started")
        if self.aborted.is_set():
            raise ConnectionGone("client went away")
        self.started = True
        self.status = status_code
        proto = self._protocol
        has_length = any(name == b"content-length" for name, _ in headers)
        self._no_body = (self._request.method == "HEAD" or status_code in (204, 304)
                         or 100 <= status_code < 200)
        self.keep_alive = proto._keep_alive_possible()
        if any(name == b"connection" and b"close" in value.lower() for name, value in headers):
            self.keep_alive = False
        lines = [b"HTTP/1.1 %d %s" % (status_code, status.phrase(status_code).encode())]
        for name, value in headers:
            if name in (b"connection", b"transfer-encoding", b"keep-alive"):
                continue                # framing is ours
            if self._no_body and status_code in (204,) and name == b"content-length":
                continue
            lines.append(name + b": " + value)
        if not self._no_body and not has_length:
            if self._version == b"1.1":
                self._chunked = True
                lines.append(b"transfer-encoding: chunked")
            else:
                self.keep_alive = False   # HTTP/1.0: the body ends with the connection
        if not self.keep_alive:
            lines.append(b"connection: close")
        self._head = b"\r\n".join(lines) + b"\r\n\r\n"

    def flush_head(self) -> None:
        """Write the head now if it still waits for body bytes."""
        head, self._head = self._head, None
        if head is not None:
            self._protocol._write(head)

    async def write(self, data: bytes) -> None:
        self.send(data)
        await self._protocol.flow.drain()

    def send(self, data: bytes) -> None:
        """`write` without waiting for the client to take it (the caller watches `flow`)."""
        if not self.started:
            raise RuntimeError("response not started")
        if self.aborted.is_set():
            raise ConnectionGone("client went away")
        if not data or self._no_body:
            return
        self.bytes_out += len(data)
        head, self._head = self._head, None
        if self._chunked:
            self._protocol._write(b"".join((head or b"", b"%x\r\n" % len(data), data, b"\r\n")))
        elif head is not None:
            self._protocol._write(head + data)
        else:
            self._protocol._write(data)

    async def end(self) -> None:
        self.end_now()

    def end_now(self) -> None:
        if self.finished:
            return
        if not self.started:
            raise RuntimeError("response not started")
        self.finished = True
        head, self._head = self._head, None
        if self._chunked and not self.aborted.is_set():
            self._protocol._write(head + b"0\r\n\r\n" if head is not None else b"0\r\n\r\n")
        elif head is not None:
            self._protocol._write(head)

    def exchange_done(self) -> None:
        """The fast path is done with this request (ended or not): the connection goes on with
        the next request, or closes, as after a handler task."""
        self.on_abort = self.on_writable = None
        self._protocol._finish(self, parse_later=True)

    async def upgrade(self, head: bytes) -> tuple[PipeReader, PipeWriter]:
        """Send the (upstream's) 101 head unchanged; the connection becomes a byte pipe. Bytes
        the client sent after its request head come out of the reader first."""
        if self.started:
            raise RuntimeError("response already started")
        if self.aborted.is_set():
            raise ConnectionGone("client went away")
        self.started = self.upgraded = True
        self.status = 101
        return self._protocol._upgrade(head)

    async def send_status(self, err: status.StatusError,
                          extra: list[tuple[bytes, bytes]] = ()) -> None:
        """Answer with a Status (convenience for the pipeline)."""
        body = err.body
        headers = err.status_headers(len(body)) + list(extra)
        if err.close:
            headers.append((b"connection", b"close"))
        await self.start(err.code, headers)
        await self.write(body)


class HTTP1Protocol(asyncio.Protocol):
    def __init__(self, handler: Handler, *, head_timeout: float = 10.0,
                 keepalive_timeout: float = 60.0, max_head: int = 65536, max_line: int = 8192,
                 on_close: Callable[["HTTP1Protocol"], None] | None = None,
                 fast: FastHandler | None = None):
        self._handler = handler
        self._fast = fast
        self._head_timeout = head_timeout
        self._keepalive_timeout = keepalive_timeout
        self._max_head = max_head
        self._max_line = max_line
        self._on_close = on_close
        self._buffer = bytearray()
        self.phase = HEAD
        self.transport: asyncio.Transport | None = None
        self.flow: FlowControl | None = None
        self._loop = asyncio.get_event_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_kind = ""          # "head", "idle" or "" (no timer due)
        self._deadline = 0.0
        self._request: Request | None = None
        self._response: Response | None = None
        self._task: asyncio.Task | None = None
        self._body: ByteQueue | None = None
        self._body_remaining = 0
        self._decoder = None
        self._body_done = True
        self._expect_continue = False
        self._continue_sent = False
        self._pipe: ByteQueue | None = None
        self._draining = False
        self.peer_cert: x509.Certificate | None = None
        self.client: tuple[str, int] = ("", 0)
        self.requests_served = 0

    # -- asyncio callbacks ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.flow = FlowControl(transport)
        self.client, self.peer_cert = transport_peer(transport)
        self._arm_timer(self._head_timeout, "head")

    def data_received(self, data: bytes) -> None:
        if self.phase == UPGRADED:
            self._pipe.feed(data)
            return
        if self.phase == CLOSED:
            return
        self._buffer += data
        if self.phase == HEAD:
            idle = self._timer_kind == "idle"
            self._parse_head()
            if idle and self.phase == HEAD and self._buffer:
                self._arm_timer(self._head_timeout, "head")   # a head started: slowloris clock
        elif self.phase == BODY:
            self._feed_body()
        else:
            self._bound_buffer()

    def eof_received(self) -> bool:
        if self.phase == UPGRADED:
            self._pipe.feed_eof()
        elif self.phase == BODY and self._body is not None:
            self._body.set_exception(status.bad_request("the client closed the connection mid-body", close=True))
        return False     # TLS cannot stay half-open; the transport closes (connection_lost follows)

    def connection_lost(self, exc: Exception | None) -> None:
        self.phase = CLOSED
        self._cancel_timer()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.flow is not None:
            self.flow.connection_lost()
        if self._response is not None:
            self._response.abort()
        if self._body is not None and not self._body_done:
            self._body.set_exception(ConnectionGone("client went away"))
        if self._pipe is not None:
            self._pipe.feed_eof()
        if self._on_close is not None:
            self._on_close(self)

    def pause_writing(self) -> None:
        self.flow.pause_writing()

    def resume_writing(self) -> None:
        self.flow.resume_writing()
        response = self._response
        if response is not None and response.on_writable is not None:
            response.on_writable()

    # -- server control (drain) ------------------------------------------------------------------
    @property
    def idle(self) -> bool:
        return self.phase == HEAD and not self._buffer

    def shutdown(self) -> None:
        """Graceful drain: idle keep-alive connections close now, busy ones after their response."""
        self._draining = True
        if self.phase == HEAD:
            self._close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # -- internals -------------------------------------------------------------------------------
    # One lazy timer per connection: arming only moves the deadline and cancelling only clears the
    # kind; the loop's timer is replaced only when the new deadline is earlier than its own. When
    # it fires early it re-arms for what is left, so a keep-alive request costs no timer at all.
    def _arm_timer(self, seconds: float, kind: str) -> None:
        if not (seconds and seconds > 0):
            self._cancel_timer()
            return
        self._timer_kind = kind
        self._deadline = self._loop.time() + seconds
        if self._timer is None or self._timer.when() > self._deadline:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._loop.call_at(self._deadline, self._on_timer)

    def _cancel_timer(self) -> None:
        self._timer_kind = ""

    def _on_timer(self) -> None:
        self._timer = None
        if not self._timer_kind:
            return
        if self._loop.time() < self._deadline:
            self._timer = self._loop.call_at(self._deadline, self._on_timer)
            return
        if self.phase != HEAD:
            return
        if self._timer_kind == "head" and self._buffer:
            self._fail(status.request_timeout())
        else:
            self._close()

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _close(self) -> None:
        if self._response is not None:
            self._response.flush_head()     # a started response shows its head before the close
        self.phase = CLOSED if self.phase != UPGRADED else self.phase
        self._cancel_timer()
        if self.transport is not None:
            self.transport.close()

    def _fail(self, err: status.StatusError) -> None:
        """Answer a protocol error ourselves and close (no pipeline involved)."""
        self._write(err.render(close=True))
        self._close()

    def _bound_buffer(self) -> None:
        if len(self._buffer) > self._max_head:
            self.flow.pause_reading()

    def _keep_alive_possible(self) -> bool:
        req = self._request
        return (req is not None and req.keep_alive and not self._draining and self._body_done
                and not (self._expect_continue and not self._continue_sent))

    def _send_continue(self) -> None:
        if (self._expect_continue and not self._continue_sent and self._response is not None
                and not self._response.started and not self._body_done):
            self._continue_sent = True
            self._write(_CONTINUE)

    def _parse_head(self) -> None:
        try:
            parsed = parse_request_head(self._buffer, self._max_line, self._max_head)
        except HttpParseError as exc:
            self._fail(status.from_parse_error(exc))
            return
        if parsed is None:
            return
        head, consumed = parsed
        del self._buffer[:consumed]
        self._cancel_timer()
        self._start_request(head)

    def _start_request(self, head) -> None:
        self.phase = BODY
        self.requests_served += 1
        try:
            method = head.method.decode("ascii")
            target = head.target.decode("ascii")
        except UnicodeDecodeError:
            self._fail(status.bad_request("non-ASCII bytes in the request line", close=True))
            return
        expect = None
        for name, value in head.headers:
            if name == b"expect":
                expect = value.lower()
        if expect is not None and expect != b"100-continue":
            self._fail(status.StatusError(417, "only Expect: 100-continue is supported", close=True))
            return
        self._decoder = ChunkedDecoder() if head.chunked else None
        self._body_remaining = head.content_length or 0
        self._body_done = not head.chunked and not self._body_remaining
        self._body = _NO_BODY if self._body_done else ByteQueue(self.flow)
        self._expect_continue = expect is not None and head.version == b"1.1" and not self._body_done
        self._continue_sent = False
        body = BodyReader(self, self._body, head.content_length, head.chunked, self._expect_continue)
        request = Request(
            method=method, target=target, headers=list(head.headers), body=body,
            client=self.client, peer_cert=self.peer_cert, protocol="http/1.1",
            upgrade=head.upgrade, keep_alive=head.keep_alive, version=head.version.decode("ascii"),
        )
        self._request = request
        self._response = Response(self, request, head.version)
        if self._body_done:
            self.phase = WAIT
            self._bound_buffer()
        else:
            self._feed_body()
        if self._fast is not None and body.empty and head.upgrade is None:
            self._fast(request, self._response, self._spawn)
        else:
            self._spawn(None)

    def _spawn(self, prepared) -> None:
        """Serve the current request in a handler task (`prepared`: what the fast path decided)."""
        self._task = self._loop.create_task(self._run(self._request, self._response, prepared))

    def _feed_body(self) -> None:
        if not self._buffer:
            return
        if self._decoder is None:
            take = min(self._body_remaining, len(self._buffer))
            self._body.feed(bytes(self._buffer[:take]))
            del self._buffer[:take]
            self._body_remaining -= take
            done = self._body_remaining == 0
        else:
            data = bytes(self._buffer)
            self._buffer.clear()
            try:
                pieces = self._decoder.feed(data)
            except HttpParseError as exc:
                self._body_error(status.from_parse_error(exc))
                return
            for piece in pieces:
                self._body.feed(piece)
            done = self._decoder.done
            if done:
                self._buffer += self._decoder.unconsumed()
        if done:
            self._body_done = True
            self._body.feed_eof()
            self.phase = WAIT
            self._bound_buffer()

    def _body_error(self, err: status.StatusError) -> None:
        self._body_done = True   # nothing more will be read from this connection
        self._body.set_exception(err)
        self._draining = True
        self.phase = WAIT
        self._buffer.clear()
        self.flow.pause_reading()
        if self._response is not None and self._response.started:
            self.abort()

    def _upgrade(self, head: bytes) -> tuple[PipeReader, PipeWriter]:
        self.phase = UPGRADED
        self._cancel_timer()
        self._pipe = ByteQueue(self.flow)
        if self._buffer:
            self._pipe.feed(bytes(self._buffer))
            self._buffer.clear()
        self.flow.resume_reading()
        self._write(head)
        return PipeReader(self._pipe), PipeWriter(self.transport, self.flow)

    async def _run(self, request: Request, response: Response, prepared=None) -> None:
        try:
            if prepared is None:
                await self._handler(request, response)
            else:
                await self._handler(request, response, prepared)
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception:   # a bug in the handler: answer 500 if we still can
            log.exception("request handler failed")
            if not response.started and not response.aborted.is_set():
                try:
                    await response.send_status(status.internal_error())
                    await response.end()
                except ConnectionError:
                    pass
            response.keep_alive = False
        finally:
            self._finish(response)

    def _finish(self, response: Response, parse_later: bool = False) -> None:
        self._task = None
        if self.phase == CLOSED:
            return
        if response.upgraded:
            self._close()
            return
        if not response.finished or not response.keep_alive or not self._body_done or self._draining:
            self._close()
            return
        # keep-alive: the next request (possibly already buffered: pipelining)
        self.phase = HEAD
        self._request = self._response = None
        self._body = None
        self._decoder = None
        self._arm_timer(self._keepalive_timeout, "idle")
        self.flow.resume_reading()
        if self._buffer:
            self._arm_timer(self._head_timeout, "head")
            if parse_later:    # from inside an upstream callback: the next request must not start there
                self._loop.call_soon(self._parse_pending)
            else:
                self._parse_head()

    def _parse_pending(self) -> None:
        if self.phase == HEAD and self._buffer:
            self._parse_head()
