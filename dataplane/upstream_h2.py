"""Upstream HTTP/2: the gateway's requests multiplexed over a few h2 connections per cluster.

`NegotiatingPool` (an `UpstreamPool`) offers ALPN `h2, http/1.1` when it dials a cluster for a
request that may use HTTP/2, and remembers the answer per (cluster, snapshot revision): `h2` →
requests become streams on a shared `H2UpstreamConnection` (a new connection is dialled only when
every open one is at the server's SETTINGS_MAX_CONCURRENT_STREAMS); `http/1.1` → the inherited
HTTP/1.1 pool. Which requests may use HTTP/2 (`--upstream-http2`): `streams` (the default) only
long-lived responses (watches, logs), which need the health PINGs below to end cleanly when the
path to the API server dies; every other request goes over the pooled HTTP/1.1 keep-alive
connections, because HTTP/2 through the pure-Python h2/hpack stack costs 1.3-2.6x the CPU per
request (docs/benchmarks.md). `always`: every request; `never`: none. Upgrades always dial
HTTP/1.1 with ALPN `http/1.1` only (HTTP/2 has no 101).

An `H2UpstreamStream` offers the pipeline the calls of an HTTP/1.1 exchange (`send_request`,
`send_body`, `end_body`, `read_head`, `read_body`). Flow control: request bodies wait for the
server's window; response DATA is acknowledged only when the pipeline comes back for more, i.e.
after the client took the previous piece (a slow client back-pressures the API server's stream,
not the connection).

Health: while streams are open and the connection has been silent for `ping_interval`, PING;
no ACK within `ping_timeout` → the connection is dead: it is aborted and every stream fails with
`UpstreamProtocolError` (the pipeline ends a watch cleanly so client-go resumes; other responses
are cut). A connection without streams closes after the pool's idle timeout.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes

from . import headers as hdrs
from .flow import ChunkBuffer, ConnectionGone, FlowControl
from .http2 import H2DataSender, Keepalive
from .upstream import (ClusterTLS, UpstreamConnection, UpstreamPool, UpstreamProtocolError,
                       UpstreamUnavailable, _safe_reason)

log = logging.getLogger("accesspoint.upstream_h2")

STREAM_WINDOW = 1024 * 1024            # per response: what may wait for a slow client
CONNECTION_WINDOW = 8 * 1024 * 1024
_EXACT_COUNT_BELOW_LIMIT = 16         # has_room counts h2's open streams exactly this close to the limit
# header fields HTTP/2 forbids or carries as pseudo-headers (RFC 9113 §8.2.2, §8.3.1)
_NOT_FORWARDED = hdrs.HOP_BY_HOP | {b"host"}


@dataclass
class H2ResponseHead:
    status: int
    headers: list[tuple[bytes, bytes]]


class H2UpstreamStream(ChunkBuffer):
    """One request/response exchange on an HTTP/2 connection."""

    raw_head = b""                      # only HTTP/1.1 upgrades use it

    def __init__(self, conn: "H2UpstreamConnection", reused: bool):
        super().__init__()               # chunks: (data, flow-controlled bytes)
        self._conn = conn
        self.key = conn.key
        self.reused = reused
        self.stream_id = 0
        self.head: H2ResponseHead | None = None
        self._head: asyncio.Future = conn.loop.create_future()
        self._unacked = 0                # flow-controlled bytes handed out but not yet acknowledged
        self.window = asyncio.Event()
        self.request_complete = False
        self.response_complete = False
        self.ended = False               # finished or reset: nothing more will happen

    # request side -----------------------------------------------------------------------------------
    def send_request(self, method: str, target: str, headers: list[tuple[bytes, bytes]]) -> None:
        self.stream_id = self._conn.start_stream(self, method, target, headers)

    async def send_body(self, data: bytes) -> None:
        await self._conn.send_data(self, data)

    async def end_body(self) -> None:
        if not self.request_complete:
            self._conn.end_stream(self)
            self.request_complete = True

    # response side ----------------------------------------------------------------------------------
    async def read_head(self) -> H2ResponseHead:
        return await self._head

    async def read_body(self) -> bytes:
        # the previous piece has been taken downstream: hand its window back now
        self._conn.acknowledge(self, self._unacked)
        self._unacked = 0
        if not await self._wait_readable():
            return b""
        data, flow_controlled = self._chunks.popleft()
        self._unacked = flow_controlled
        return data

    # fed by the connection ----------------------------------------------------------------------------
    def _headers(self, fields: list[tuple[bytes, bytes]]) -> None:
        status = int(dict(fields).get(b":status", b"0"))
        self.head = H2ResponseHead(status, [(k, v) for k, v in fields if not k.startswith(b":")])
        if not self._head.done():
            self._head.set_result(self.head)

    def _data(self, data: bytes, flow_controlled: int) -> None:
        self._chunks.append((data, flow_controlled))
        self._wake()

    def _end(self) -> None:
        self.response_complete = True
        self._eof = True
        self._wake()

    def _fail(self, reason: str) -> None:
        self.ended = True
        self.window.set()
        if not self._head.done():
            self._head.set_exception(UpstreamProtocolError(reason, before_response=True))
            self._head.exception()       # retrieved: the caller may be gone already
        elif not self._eof and self._exc is None:
            self._exc = UpstreamProtocolError(reason)
        self._wake()

    def buffered(self) -> int:
        return sum(n for _, n in self._chunks) + self._unacked


class _Negotiating(asyncio.Protocol):
    """Picks the protocol object by the ALPN the handshake settled, before any byte is read."""

    def __init__(self, key: tuple, pool: "NegotiatingPool", loop):
        self._key, self._pool, self._loop = key, pool, loop
        self.chosen: asyncio.Protocol | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2":
            self.chosen = H2UpstreamConnection(self._key, self._loop, self._pool)
        else:
            self.chosen = UpstreamConnection(self._key, self._loop)
        transport.set_protocol(self.chosen)
        self.chosen.connection_made(transport)

    def connection_lost(self, exc) -> None:
        pass

    def abort(self) -> None:
        transport = getattr(self.chosen, "transport", None)
        if transport is not None:
            transport.abort()


class H2UpstreamConnection(H2DataSender, asyncio.Protocol):
    def __init__(self, key: tuple, loop: asyncio.AbstractEventLoop, pool: "NegotiatingPool"):
        self.key = key
        self.loop = loop
        self._pool = pool
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.streams: dict[int, H2UpstreamStream] = {}
        self.transport: asyncio.Transport | None = None
        self.flow: FlowControl | None = None
        self.keepalive = Keepalive(pool.ping_interval, pool.ping_timeout, pool.idle_timeout, time.monotonic())
        self._timer: asyncio.TimerHandle | None = None
        self.closed = False
        self.goaway = False
        self.used = False

    # asyncio callbacks ------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.flow = FlowControl(transport)
        self.conn.local_settings = h2.settings.Settings(client=True, initial_values={
            h2.settings.SettingCodes.ENABLE_PUSH: 0,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
        })
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        self._flush()
        self._schedule_tick()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.keepalive.received(time.monotonic())
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self._die(f"the API server broke HTTP/2 ({exc})")
            return
        for event in events:
            self._dispatch(event)
        self._flush()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._die("the HTTP/2 connection to the API server was lost")
        if self.flow is not None:
            self.flow.connection_lost()

    def pause_writing(self) -> None:
        self.flow.pause_writing()

    def resume_writing(self) -> None:
        self.flow.resume_writing()

    # pool interface -----------------------------------------------------------------------------------
    @property
    def has_room(self) -> bool:
        """Room for one more stream under the server's SETTINGS_MAX_CONCURRENT_STREAMS. O(1) but
        near the limit: h2's `open_outbound_streams` walks every stream of the connection, and the
        pool asks every connection of a cluster for each new stream (with 10,000 watches open that
        walk was half the worker's CPU). `self.streams` holds every stream the pipeline has not
        finished, a superset of those h2 counts as open, except the few streams a subclass may
        open outside it (tunnel control requests): hence the exact count in the last stretch."""
        if self.closed or self.goaway:
            return False
        limit = self.conn.remote_settings.max_concurrent_streams
        tracked = len(self.streams)
        if tracked >= limit:
            return False
        if tracked < limit - _EXACT_COUNT_BELOW_LIMIT:
            return True
        return self.conn.open_outbound_streams < limit

    def open_stream(self) -> H2UpstreamStream:
        stream = H2UpstreamStream(self, reused=self.used)
        self.used = True
        return stream

    def close(self) -> None:
        if not self.closed:
            try:
                self.conn.close_connection()
            except h2.exceptions.ProtocolError:
                pass
            self._flush()
        self._die("the connection to the API server was closed")
        if self.transport is not None:
            self.transport.close()

    # used by H2UpstreamStream -------------------------------------------------------------------------
    def start_stream(self, stream: H2UpstreamStream, method: str, target: str,
                     headers: list[tuple[bytes, bytes]]) -> int:
        if self.closed or self.goaway:
            raise UpstreamProtocolError("the HTTP/2 connection to the API server is closing",
                                        before_response=True)
        authority = hdrs.header_value(headers, b"host") or b""
        named = hdrs.connection_tokens(headers)
        fields = [(b":method", method.encode("ascii")), (b":scheme", b"https"),
                  (b":authority", authority), (b":path", target.encode("ascii"))]
        fields += [(n, v) for n, v in headers if n not in _NOT_FORWARDED and n not in named]
        framed = any(n in (b"content-length", b"transfer-encoding") for n, _ in headers)
        no_body = not framed or (b"content-length", b"0") in headers
        sid = self.conn.get_next_available_stream_id()
        try:
            self.conn.send_headers(sid, fields, end_stream=no_body)
        except h2.exceptions.ProtocolError as exc:     # too many streams, closed connection
            raise UpstreamProtocolError(f"cannot open an HTTP/2 stream ({exc})", before_response=True) from None
        stream.request_complete = no_body
        self.streams[sid] = stream
        self.keepalive.streams_changed(len(self.streams), time.monotonic())
        self._flush()
        return sid

    async def send_data(self, stream: H2UpstreamStream, data: bytes) -> None:
        await self._send_windowed(stream.stream_id, data, stream.window, lambda: stream.ended,
                                  "the HTTP/2 stream to the API server is gone")

    def end_stream(self, stream: H2UpstreamStream) -> None:
        if stream.ended or self.closed:
            raise ConnectionGone("the HTTP/2 stream to the API server is gone")
        self.conn.end_stream(stream.stream_id)
        self._flush()

    def acknowledge(self, stream: H2UpstreamStream, size: int) -> None:
        if size and not self.closed:
            self.conn.acknowledge_received_data(size, stream.stream_id)
            self._flush()

    def finish(self, stream: H2UpstreamStream, cancel: bool) -> None:
        """The pipeline is done with the stream: reset it unless both sides completed, and give
        back the window of whatever it left unread."""
        sid = stream.stream_id
        if not sid or self.streams.get(sid) is not stream:
            return
        del self.streams[sid]
        self.keepalive.streams_changed(len(self.streams), time.monotonic())
        if self.closed:
            return
        leftover = stream.buffered()
        stream._chunks.clear()
        stream._unacked = 0
        if leftover:
            self.conn.acknowledge_received_data(leftover, sid)
        if cancel or not (stream.response_complete and stream.request_complete):
            try:
                self.conn.reset_stream(sid, ErrorCodes.CANCEL)
            except h2.exceptions.StreamClosedError:
                pass
        stream.ended = True
        self._flush()
        if self.goaway and not self.streams:
            self.close()

    # internals ------------------------------------------------------------------------------------------
    def _dispatch(self, event: h2.events.Event) -> None:
        sid = getattr(event, "stream_id", 0)
        stream = self.streams.get(sid) if sid else None
        if isinstance(event, h2.events.ResponseReceived):
            if stream is not None:
                stream._headers(event.headers)
        elif isinstance(event, h2.events.DataReceived):
            if stream is not None:
                stream._data(event.data, event.flow_controlled_length)
            else:   # a stream we gave up on: the connection window must not leak
                self.conn.acknowledge_received_data(event.flow_controlled_length, sid)
            if event.stream_ended and stream is not None:
                stream._end()
        elif isinstance(event, h2.events.StreamEnded):
            if stream is not None:
                stream._end()
        elif isinstance(event, h2.events.StreamReset):
            if stream is not None:
                try:
                    code = ErrorCodes(event.error_code).name
                except ValueError:
                    code = str(event.error_code)
                stream._fail(f"the API server reset the stream ({code})")
        elif isinstance(event, h2.events.WindowUpdated):
            targets = [stream] if sid else list(self.streams.values())
            for s in targets:
                if s is not None:
                    s.window.set()
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            for s in self.streams.values():
                s.window.set()
        elif isinstance(event, h2.events.PingAckReceived):
            self.keepalive.acked()
        elif isinstance(event, h2.events.ConnectionTerminated):
            # h2 neither sends nor receives after a GOAWAY: streams the server did not process
            # can be retried, the others are cut
            self.goaway = True
            last = event.last_stream_id if event.last_stream_id is not None else 0
            for s_id, s in list(self.streams.items()):
                if s_id > last:
                    s._fail("the API server refused the stream (GOAWAY)")
            self._die("the API server closed the HTTP/2 connection (GOAWAY)")
            if self.transport is not None:
                self.transport.close()

    def _die(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for stream in list(self.streams.values()):
            stream._fail(reason)
        self._pool._forget(self)

    def _schedule_tick(self) -> None:
        period = max(0.02, min(self.keepalive.interval, self.keepalive.timeout, self.keepalive.idle_timeout) / 2)
        self._timer = self.loop.call_later(period, self._tick)

    def _tick(self) -> None:
        self._timer = None
        if self.closed:
            return
        verdict = self.keepalive.tick(time.monotonic(), len(self.streams))
        if verdict == Keepalive.PING:
            self.conn.ping(time.monotonic_ns().to_bytes(8, "big"))
            self._flush()
        elif verdict == Keepalive.DEAD:
            log.warning("cluster %s: HTTP/2 connection did not answer a PING within %gs: dropping it",
                        self.key[0], self.keepalive.timeout)
            self._die(f"the API server did not answer an HTTP/2 PING within {self.keepalive.timeout:g}s")
            if self.transport is not None:
                self.transport.abort()
            return
        elif verdict == Keepalive.IDLE:
            self.close()
            return
        self._schedule_tick()

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


class NegotiatingPool(UpstreamPool):
    """HTTP/2 where the API server offers it, the HTTP/1.1 pool otherwise (see the module doc)."""

    def __init__(self, *, ping_interval: float = 10.0, ping_timeout: float = 5.0, http2: str = "streams",
                 **kwargs):
        super().__init__(**kwargs)
        self.http2 = http2
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.protocols: dict[tuple, str] = {}                  # (cluster, revision) → ALPN result
        self._h2: dict[tuple, list[H2UpstreamConnection]] = {}
        self._dialing: dict[tuple, asyncio.Lock] = {}

    def _may_use_h2(self, upgrade: bool, long_lived: bool) -> bool:
        if upgrade or self.http2 == "never":
            return False
        return long_lived or self.http2 == "always"

    async def acquire(self, cluster, revision: int, *, fresh: bool = False, upgrade: bool = False,
                      long_lived: bool = False):
        key = (cluster.name, revision)
        if not self._may_use_h2(upgrade, long_lived) or self.protocols.get(key) == "http/1.1":
            return await super().acquire(cluster, revision, fresh=fresh)
        tls = self.cluster_tls(cluster, revision)
        lock = self._dialing.setdefault(key, asyncio.Lock())
        async with lock:     # concurrent first requests share one new connection
            conn = None if fresh else self._with_room(key)
            if conn is not None:
                return conn.open_stream()
            chosen = await self._dial_negotiated(key, tls)
        if isinstance(chosen, H2UpstreamConnection):
            self.protocols[key] = "h2"
            self._h2.setdefault(key, []).append(chosen)
            return chosen.open_stream()
        self.protocols[key] = "http/1.1"
        self._open.add(chosen)
        return chosen

    def take_idle(self, cluster, revision: int):
        """An idle HTTP/1.1 connection for an ordinary request, unless that request goes over h2."""
        key = (cluster.name, revision)
        if self._may_use_h2(False, False) and self.protocols.get(key) != "http/1.1":
            return None
        return super().take_idle(cluster, revision)

    def _with_room(self, key) -> H2UpstreamConnection | None:
        for conn in self._h2.get(key, ()):
            if conn.has_room:
                return conn
        return None

    async def _dial_negotiated(self, key, tls: ClusterTLS):
        loop = asyncio.get_running_loop()
        ep = tls.endpoint
        negotiating = _Negotiating(key, self, loop)
        try:
            async with asyncio.timeout(self.dial_timeout):
                await loop.create_connection(lambda: negotiating, ep.host, ep.port, ssl=tls.h2_context,
                                             server_hostname=ep.host, ssl_handshake_timeout=self.dial_timeout)
        except asyncio.CancelledError:     # the dial dies with its client
            negotiating.abort()
            raise
        except Exception as exc:
            negotiating.abort()
            raise UpstreamUnavailable(_safe_reason(exc, self.dial_timeout)) from None
        return negotiating.chosen

    def _forget_before(self, revision: int) -> None:
        super()._forget_before(revision)
        for table in (self.protocols, self._dialing):
            for key in [k for k in table if k[1] < revision]:
                del table[key]
        for key in [k for k in self._h2 if k[1] < revision]:
            for conn in list(self._h2[key]):
                self._retire(conn)     # idle ones close now, busy ones after their last stream
            if not self._h2.get(key):
                self._h2.pop(key, None)

    def _forget(self, conn: H2UpstreamConnection) -> None:
        conns = self._h2.get(conn.key)
        if conns and conn in conns:
            conns.remove(conn)
            if not conns and conn.key[1] < self._latest_revision:
                del self._h2[conn.key]   # nothing of that revision is left

    def release(self, conn) -> None:
        if isinstance(conn, H2UpstreamStream):
            conn._conn.finish(conn, cancel=False)
            self._retire(conn._conn)
        else:
            super().release(conn)

    def discard(self, conn) -> None:
        if isinstance(conn, H2UpstreamStream):
            conn._conn.finish(conn, cancel=True)
            self._retire(conn._conn)
        else:
            super().discard(conn)

    def _retire(self, conn: H2UpstreamConnection) -> None:
        """A connection of an older snapshot revision closes once its last stream is done."""
        if conn.key[1] < self._latest_revision and not conn.streams:
            conn.close()

    def h2_connections(self, cluster_name: str | None = None) -> list[H2UpstreamConnection]:
        return [c for k, conns in self._h2.items() if cluster_name in (None, k[0]) for c in conns]

    def close(self) -> None:
        super().close()
        for conn in self.h2_connections():
            conn.close()
        self._h2.clear()
