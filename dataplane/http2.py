"""Downstream HTTP/2: a thin asyncio Protocol around the sans-IO `h2` state machine.

Every stream becomes one pipeline `Request` served by the same handler as HTTP/1.1 (its own
decision and audit event). Flow control, both directions:

- Request bodies: received DATA waits in the stream's `H2Body`; its flow-controlled length is
  acknowledged (WINDOW_UPDATE) only when the pipeline takes the bytes, so a slow upstream
  back-pressures the client. DATA that nobody will read (stream reset, response already ended,
  unknown stream) is acknowledged at once so the connection window never leaks.
- Responses: `H2Response.write` sends at most the stream's and the connection's send window and
  waits for WINDOW_UPDATE beyond it, then for the transport's buffer (`FlowControl.drain`). A slow
  reader stalls only its own stream.

Limits: SETTINGS_MAX_CONCURRENT_STREAMS, SETTINGS_MAX_HEADER_LIST_SIZE (enforced by hpack on the
decoded size, which also stops HPACK bombs), h2's CONTINUATION backlog, handler tasks per
connection never above the stream limit (reset streams still being cancelled count: CVE-2023-44487),
and a reset budget: more client RST_STREAMs (or refused streams) than `max_resets` within
`reset_window` seconds → GOAWAY ENHANCE_YOUR_CALM and close.

Keep-alive: while streams are active and the connection has been quiet for `ping_interval`, the
gateway PINGs the client (load balancers do not cut idle watches); no ACK within `ping_timeout`
→ the connection is dead and every stream is aborted (their upstream requests are cancelled).
A connection without streams closes after `idle_timeout`.

Graceful drain: GOAWAY(last stream id) is sent as a raw frame (h2's `close_connection` would
forbid sending the in-flight streams' DATA), later streams are refused, in-flight ones finish,
then the final GOAWAY and close.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass
from typing import Awaitable, Callable

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from cryptography import x509
from h2.errors import ErrorCodes
from hpack import NeverIndexedHeaderTuple
from hyperframe.frame import GoAwayFrame

from . import headers as hdrs
from . import status
from .flow import ChunkBuffer, ConnectionGone, Flag, FlowControl, transport_peer
from .pipeline import Request

log = logging.getLogger("accesspoint.http2")

Handler = Callable[[Request, "H2Response"], Awaitable[None]]

# connection-specific fields HTTP/2 forbids (RFC 9113 §8.2.2); framing is h2's
_FORBIDDEN_RESPONSE_FIELDS = hdrs.HOP_BY_HOP | {b"content-length"}
# DATA bytes that may wait for the end of the loop turn before they are written (_data_queued)
DATA_FLUSH_AT = 64 * 1024
# a new value on every response: kept out of the HPACK dynamic table, where it would only evict
# the fields that repeat
_UNIQUE_RESPONSE_FIELDS = frozenset({b"x-accesspoint-request-id"})


@dataclass(frozen=True)
class H2Limits:
    max_concurrent_streams: int = 250
    max_header_list_size: int = 65536
    stream_window: int = 256 * 1024           # receive window per stream (request bodies)
    connection_window: int = 4 * 1024 * 1024  # receive window of the whole connection
    ping_interval: float = 30.0
    ping_timeout: float = 15.0
    idle_timeout: float = 60.0                # no streams for this long → close
    reset_window: float = 10.0
    max_resets: int = 200

    @classmethod
    def from_config(cls, config) -> "H2Limits":
        return cls(max_concurrent_streams=config.http2_max_streams,
                   ping_interval=config.http2_ping_interval, ping_timeout=config.http2_ping_timeout)


# -- sans-IO policies ----------------------------------------------------------------------------------

class ResetBudget:
    """Client stream resets (and refused streams) counted per fixed window of `window` seconds."""

    def __init__(self, limit: int, window: float, clock: Callable[[], float] = time.monotonic):
        self.limit = limit
        self.window = window
        self._clock = clock
        self._start = clock()
        self.count = 0

    def spend(self) -> bool:
        """Record one reset; False once the budget of this window is exceeded."""
        now = self._clock()
        if now - self._start >= self.window:
            self._start, self.count = now, 0
        self.count += 1
        return self.count <= self.limit


class Keepalive:
    """Decides, on each tick, whether to PING, to declare the peer dead, or to close an idle
    connection. Times are passed in (no clock of its own)."""

    PING, DEAD, IDLE = "ping", "dead", "idle"

    def __init__(self, interval: float, timeout: float, idle_timeout: float, now: float):
        self.interval = interval
        self.timeout = timeout
        self.idle_timeout = idle_timeout
        self.last_activity = now
        self.idle_since: float | None = now
        self.ping_sent: float | None = None

    def received(self, now: float) -> None:
        self.last_activity = now

    def streams_changed(self, active: int, now: float) -> None:
        self.idle_since = now if active == 0 else None

    def acked(self) -> None:
        self.ping_sent = None

    def tick(self, now: float, active: int) -> str | None:
        if self.ping_sent is not None:
            return self.DEAD if now - self.ping_sent >= self.timeout else None
        if active == 0:
            if self.idle_since is not None and now - self.idle_since >= self.idle_timeout:
                return self.IDLE
            return None
        if self.interval > 0 and now - self.last_activity >= self.interval:
            self.ping_sent = now
            return self.PING
        return None


# -- per stream ------------------------------------------------------------------------------------------

class H2Body(ChunkBuffer):
    """A stream's request body as the pipeline reads it; bytes are acknowledged as they are taken."""

    def __init__(self, ack: Callable[[int], None], length: int | None, ended: bool):
        super().__init__(eof=ended)   # chunks: [data, flow-controlled bytes not yet acknowledged]
        self._ack = ack
        self.length = length
        # no Content-Length and more to come: HTTP/1.1 upstream needs chunked framing
        self.chunked = length is None and not ended
        self.bytes_read = 0

    @property
    def empty(self) -> bool:
        return not self.chunked and not self.length

    @property
    def done(self) -> bool:
        return self._eof or self._exc is not None

    def feed(self, data: bytes, flow_controlled: int) -> None:
        self._chunks.append([data, flow_controlled])
        self._wake()

    def feed_eof(self) -> None:
        self._eof = True
        self._wake()

    def set_exception(self, exc: BaseException) -> None:
        if self._exc is None and not self._eof:
            self._exc = exc
        self.discard()
        self._wake()

    def discard(self) -> None:
        """Nobody will read what is buffered: give the window back."""
        while self._chunks:
            self._ack(self._chunks.popleft()[1])

    async def read(self, limit: int = -1) -> bytes:
        if not await self._wait_readable():
            return b""
        entry = self._chunks[0]
        data, unacked = entry
        if 0 < limit < len(data):
            taken, entry[0] = data[:limit], data[limit:]
            ack = len(taken)
            entry[1] = unacked - ack
        else:
            taken = data
            ack = unacked                     # the rest, padding included
            self._chunks.popleft()
        self.bytes_read += len(taken)
        self._ack(ack)
        return taken


class H2Response:
    """The response on one stream (contract in docs/architecture.md)."""

    def __init__(self, protocol: "H2Protocol", stream_id: int, method: str):
        self._protocol = protocol
        self.stream_id = stream_id
        self._method = method
        self.aborted = Flag()     # the client went away (the handler task is cancelled)
        self.window = asyncio.Event()         # set when the send window may have opened
        self.started = False
        self.finished = False
        self.upgraded = False
        self.status: int | None = None
        self.bytes_out = 0
        self.keep_alive = True                # meaningless on h2; the pipeline may clear it
        self._handler_task: asyncio.Task | None = None

    async def start(self, status_code: int, headers: list[tuple[bytes, bytes]]) -> None:
        if self.started:
            raise RuntimeError("response already started")
        self._check()
        self.started = True
        self.status = status_code
        named = hdrs.connection_tokens(headers)
        fields = [(b":status", str(status_code).encode())]
        for name, value in headers:
            name = name.lower()
            if name in _FORBIDDEN_RESPONSE_FIELDS or name in named or name.startswith(b"proxy-"):
                continue
            fields.append(NeverIndexedHeaderTuple(name, value) if name in _UNIQUE_RESPONSE_FIELDS
                          else (name, value))
        # content-length is dropped above: h2 frames the body itself, and a HEAD/304 answer's
        # length describes a body it never carries
        self._protocol.send_headers(self.stream_id, fields)
        await self._protocol.flow.drain()

    async def write(self, data: bytes) -> None:
        if not self.started:
            raise RuntimeError("response not started")
        self._check()
        if not data or self._method == "HEAD" or self.status in (204, 304):
            return
        self.bytes_out += len(data)
        await self._protocol.send_data(self, data)

    async def end(self) -> None:
        if self.finished:
            return
        if not self.started:
            raise RuntimeError("response not started")
        self.finished = True
        if not self.aborted.is_set():
            self._protocol.end_stream(self.stream_id)

    async def upgrade(self, head: bytes):
        raise ConnectionGone("HTTP/2 streams are never upgraded")

    def cancel_on_abort(self, task: asyncio.Task) -> None:
        """Cancel `task` (the handler) when the stream or connection goes; ConnectionGone if it has."""
        self._check()
        self._handler_task = task

    async def send_status(self, err: status.StatusError,
                          extra: list[tuple[bytes, bytes]] = ()) -> None:
        body = err.body
        await self.start(err.code, err.status_headers(len(body)) + list(extra))
        await self.write(body)

    def _check(self) -> None:
        if self.aborted.is_set():
            raise ConnectionGone("the client reset the stream")

    def abort(self) -> None:
        self.aborted.set()
        self.window.set()
        _cancel(self._handler_task)


def _cancel(task: asyncio.Task | None) -> None:
    if task is not None and not task.done():
        task.cancel()


@dataclass
class _Stream:
    request: Request
    response: H2Response
    body: H2Body
    task: asyncio.Task | None = None


# -- the connection -------------------------------------------------------------------------------------

class H2DataSender:
    """DATA within the peer's flow-control windows, for either side's connection (which has
    `conn`, `flow`, `closed` and `_flush`)."""

    conn: h2.connection.H2Connection
    flow: FlowControl | None
    closed: bool

    def _flush(self) -> None:
        raise NotImplementedError

    def _data_queued(self, size: int) -> None:
        """DATA of `size` bytes waits in h2's buffer: send it (subclasses may batch)."""
        self._flush()

    async def _send_windowed(self, sid: int, data: bytes, window: asyncio.Event,
                             gone: Callable[[], bool], gone_message: str) -> None:
        """Send `data` on stream `sid`, waiting on `window` while the stream's window is shut;
        ConnectionGone once `gone()` or the connection is closed."""
        while data:
            if gone() or self.closed:
                raise ConnectionGone(gone_message)
            size = min(len(data), self.conn.local_flow_control_window(sid),
                       self.conn.max_outbound_frame_size)
            if size <= 0:
                window.clear()
                await window.wait()
                continue
            self.conn.send_data(sid, data[:size])
            data = data[size:]
            self._data_queued(size)
            await self.flow.drain()


class H2Protocol(H2DataSender, asyncio.Protocol):
    def __init__(self, handler: Handler, *, head_timeout: float = 10.0,
                 keepalive_timeout: float = 60.0, max_head: int = 65536, max_line: int = 8192,
                 limits: H2Limits | None = None,
                 on_close: Callable[["H2Protocol"], None] | None = None):
        base = limits or H2Limits()
        # the HTTP/1.1 head limit is the header list limit here too; idle timeout likewise
        self.limits = H2Limits(**{**base.__dict__, "max_header_list_size": max_head,
                                  "idle_timeout": keepalive_timeout})
        self._handler = handler
        self._head_timeout = head_timeout
        self._on_close = on_close
        self._loop = asyncio.get_event_loop()
        config = h2.config.H2Configuration(client_side=False, header_encoding=None)
        self.conn = h2.connection.H2Connection(config)
        self.streams: dict[int, _Stream] = {}
        self.transport: asyncio.Transport | None = None
        self.flow: FlowControl | None = None
        self.resets = ResetBudget(self.limits.max_resets, self.limits.reset_window)
        self.keepalive = Keepalive(self.limits.ping_interval, self.limits.ping_timeout,
                                   self.limits.idle_timeout, time.monotonic())
        self._timer: asyncio.TimerHandle | None = None
        self._flush_scheduled = False
        self._unflushed_data = 0       # DATA bytes queued in h2 since the last flush
        self._preface_seen = False
        self._draining = False
        self._last_stream_id: int | None = None   # set by the drain GOAWAY
        self.closed = False
        self.peer_cert: x509.Certificate | None = None
        self.client: tuple[str, int] = ("", 0)
        self.requests_served = 0

    # -- asyncio callbacks ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.flow = FlowControl(transport)
        self.client, self.peer_cert = transport_peer(transport)
        lim = self.limits
        self.conn.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: lim.max_concurrent_streams,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: lim.max_header_list_size,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: lim.stream_window,
            h2.settings.SettingCodes.ENABLE_PUSH: 0,
        })
        self.conn.initiate_connection()
        # enforce before the client's SETTINGS ACK too (h2 applies local settings only on ACK)
        self.conn.decoder.max_header_list_size = lim.max_header_list_size
        # response headers without Huffman coding: a third of the CPU of pure-Python hpack for
        # slightly larger header blocks (h2 has no setting for it; RFC 7541 lets either be sent)
        self.conn.encoder.encode = functools.partial(self.conn.encoder.encode, huffman=False)
        self.conn.increment_flow_control_window(lim.connection_window - 65535)
        self._flush()
        self._schedule_tick(self._head_timeout)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.keepalive.received(time.monotonic())
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            # h2 has queued GOAWAY with the error code (ENHANCE_YOUR_CALM for oversized headers)
            log.info("HTTP/2 protocol error from %s: %s", self.client[0], exc)
            self._terminate()
            return
        for event in events:
            self._dispatch(event)
            if self.closed:
                return
        self._flush()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._cancel_tick()
        if self.flow is not None:
            self.flow.connection_lost()
        for stream in self.streams.values():
            stream.response.abort()
            stream.body.set_exception(ConnectionGone("client went away"))
        if self._on_close is not None:
            self._on_close(self)

    def pause_writing(self) -> None:
        self.flow.pause_writing()

    def resume_writing(self) -> None:
        self.flow.resume_writing()

    # -- server control (drain) ------------------------------------------------------------------------
    @property
    def idle(self) -> bool:
        return not self.streams

    def shutdown(self) -> None:
        """Graceful drain: GOAWAY now, in-flight streams finish, then close."""
        if self._draining or self.closed:
            return
        self._draining = True
        self._last_stream_id = self.conn.highest_inbound_stream_id
        self._flush()
        self._write(GoAwayFrame(0, last_stream_id=self._last_stream_id,
                                error_code=ErrorCodes.NO_ERROR).serialize())
        if not self.streams:
            self._close(ErrorCodes.NO_ERROR)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # -- events ------------------------------------------------------------------------------------------
    def _dispatch(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self._request_received(event)
        elif isinstance(event, h2.events.DataReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None and not stream.body.done:
                stream.body.feed(event.data, event.flow_controlled_length)
            else:
                self._ack(event.stream_id, event.flow_controlled_length)
            if event.stream_ended and stream is not None:
                stream.body.feed_eof()
        elif isinstance(event, (h2.events.StreamEnded, h2.events.TrailersReceived)):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.body.feed_eof()
        elif isinstance(event, h2.events.StreamReset):
            self._stream_reset(event)
        elif isinstance(event, h2.events.WindowUpdated):
            self._window_opened(event.stream_id)
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            self._preface_seen = True
            self._window_opened(0)     # INITIAL_WINDOW_SIZE may have grown every stream's window
        elif isinstance(event, h2.events.PingAckReceived):
            self.keepalive.acked()
        elif isinstance(event, h2.events.ConnectionTerminated):
            # h2 sends nothing after a GOAWAY from the peer, so in-flight streams cannot finish
            self._close(None)

    def _request_received(self, event: h2.events.RequestReceived) -> None:
        sid = event.stream_id
        if self._draining and sid > (self._last_stream_id or 0):
            self._reset(sid, ErrorCodes.REFUSED_STREAM)
            return
        if len(self.streams) >= self.limits.max_concurrent_streams:
            # handlers of reset streams still being cancelled count: no unbounded work
            self._reset(sid, ErrorCodes.REFUSED_STREAM)
            self._spend_reset()
            return
        fields = event.headers
        pseudo = {name: value for name, value in fields if name.startswith(b":")}
        headers = [(name, value) for name, value in fields if not name.startswith(b":")]
        ended = event.stream_ended is not None
        length = None
        for name, value in headers:
            if name == b"content-length" and value.isdigit():
                length = int(value)
        method = pseudo.get(b":method", b"GET").decode("ascii", "replace")
        authority = pseudo.get(b":authority")
        if authority is not None and not any(name == b"host" for name, _ in headers):
            headers.insert(0, (b"host", authority))
        body = H2Body(lambda n, sid=sid: self._ack(sid, n), length, ended)
        request = Request(method=method, target=pseudo.get(b":path", b"").decode("ascii", "replace"),
                          headers=headers, body=body, client=self.client, peer_cert=self.peer_cert,
                          protocol="h2", upgrade=None, keep_alive=True, version="2")
        response = H2Response(self, sid, method)
        stream = _Stream(request, response, body)
        self.streams[sid] = stream
        self.keepalive.streams_changed(len(self.streams), time.monotonic())
        self.requests_served += 1
        refusal = self._refusal(method, pseudo)
        stream.task = self._loop.create_task(self._run(stream, refusal))

    @staticmethod
    def _refusal(method: str, pseudo: dict[bytes, bytes]) -> status.StatusError | None:
        """Requests HTTP/2 carries but the gateway does not serve (kubectl upgrades over
        separate HTTP/1.1 connections)."""
        if method == "CONNECT" or b":protocol" in pseudo:
            return status.StatusError(405, "CONNECT and upgrades are not served over HTTP/2; "
                                           "use an HTTP/1.1 connection")
        if not pseudo.get(b":path", b"").startswith(b"/"):
            return status.bad_request("the :path pseudo-header must be an absolute path")
        return None

    def _stream_reset(self, event: h2.events.StreamReset) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is not None:
            stream.response.abort()
            stream.body.set_exception(ConnectionGone("the client reset the stream"))
        if event.remote_reset:
            self._spend_reset()

    def _spend_reset(self) -> None:
        if not self.resets.spend():
            log.warning("HTTP/2 reset flood from %s: closing with ENHANCE_YOUR_CALM", self.client[0])
            self._close(ErrorCodes.ENHANCE_YOUR_CALM)

    def _window_opened(self, stream_id: int) -> None:
        if stream_id == 0:
            for stream in self.streams.values():
                stream.response.window.set()
        else:
            stream = self.streams.get(stream_id)
            if stream is not None:
                stream.response.window.set()

    # -- sending (used by H2Response) ---------------------------------------------------------------------
    def send_headers(self, stream_id: int, fields: list[tuple[bytes, bytes]]) -> None:
        self.conn.send_headers(stream_id, fields)
        self._flush_soon()       # usually leaves with the first DATA frame

    async def send_data(self, response: H2Response, data: bytes) -> None:
        await self._send_windowed(response.stream_id, data, response.window, response.aborted.is_set,
                                  "the stream or connection is gone")

    def end_stream(self, stream_id: int) -> None:
        if not self.closed:
            self.conn.end_stream(stream_id)
            self._flush_soon()

    # -- internals ------------------------------------------------------------------------------------------
    def _ack(self, stream_id: int, size: int) -> None:
        if size and not self.closed:
            self.conn.acknowledge_received_data(size, stream_id)
            self._flush()

    def _reset(self, stream_id: int, code: ErrorCodes) -> None:
        try:
            self.conn.reset_stream(stream_id, code)
        except h2.exceptions.StreamClosedError:
            pass
        self._flush()

    async def _run(self, stream: _Stream, refusal: status.StatusError | None) -> None:
        response = stream.response
        try:
            if refusal is not None:
                await response.send_status(refusal)
                await response.end()
            else:
                await self._handler(stream.request, response)
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
        finally:
            self._finish(stream)

    def _finish(self, stream: _Stream) -> None:
        sid = stream.response.stream_id
        self.streams.pop(sid, None)
        self.keepalive.streams_changed(len(self.streams), time.monotonic())
        if self.closed:
            return
        response = stream.response
        if not response.finished and not response.aborted.is_set():
            # the handler gave up mid-response (upstream failure, audit failure): the stream must
            # not look complete
            self._reset(sid, ErrorCodes.INTERNAL_ERROR)
        elif not stream.body.done:
            # answered before the request body ended (RFC 9113 §8.1): stop the upload
            self._reset(sid, ErrorCodes.NO_ERROR)
        stream.body.set_exception(ConnectionGone("the stream has ended"))
        if self._draining and not self.streams:
            self._close(ErrorCodes.NO_ERROR)

    def _schedule_tick(self, delay: float) -> None:
        self._cancel_tick()
        self._timer = self._loop.call_later(delay, self._tick)

    def _cancel_tick(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        self._timer = None
        if self.closed:
            return
        if not self._preface_seen:
            self._terminate()            # no client preface within the head timeout
            return
        verdict = self.keepalive.tick(time.monotonic(), len(self.streams))
        if verdict == Keepalive.PING:
            self.conn.ping(time.monotonic_ns().to_bytes(8, "big"))
            self._flush()
        elif verdict == Keepalive.DEAD:
            log.info("HTTP/2 client %s did not answer a PING: closing", self.client[0])
            self.abort()
            return
        elif verdict == Keepalive.IDLE:
            self._close(ErrorCodes.NO_ERROR)
            return
        lim = self.limits
        self._schedule_tick(max(0.05, min(lim.ping_interval, lim.ping_timeout, lim.idle_timeout) / 2))

    def _write(self, data: bytes) -> None:
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _flush(self) -> None:
        self._unflushed_data = 0
        self._write(self.conn.data_to_send())

    def _data_queued(self, size: int) -> None:
        """DATA leaves at the end of the loop turn with the other streams' frames, like HEADERS,
        unless DATA_FLUSH_AT bytes are waiting (or the transport is already full): so what the
        transport's buffer (the backpressure signal) does not see yet stays bounded."""
        self._unflushed_data += size
        if self._unflushed_data >= DATA_FLUSH_AT or self.flow.write_paused:
            self._flush()
        else:
            self._flush_soon()

    def _flush_soon(self) -> None:
        """Flush at the end of this turn of the event loop: the frames of every stream that
        answers in the meantime leave in one write (one TLS record, one syscall)."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        self._flush()

    def _close(self, code: ErrorCodes | None) -> None:
        """Final GOAWAY (when `code` is given), abort what is left, close."""
        if self.closed:
            return
        if code is not None:
            try:
                self.conn.close_connection(code)
            except h2.exceptions.ProtocolError:
                pass
        self._terminate()

    def _terminate(self) -> None:
        self._flush()
        self.closed = True
        self._cancel_tick()
        for stream in self.streams.values():
            stream.response.abort()
            stream.body.set_exception(ConnectionGone("the connection closed"))
        if self.transport is not None:
            self.transport.close()
