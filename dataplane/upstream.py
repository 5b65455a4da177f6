"""Upstream HTTP/1.1 client to the clusters' API servers, with a connection pool per cluster.

- TLS with the cluster's CA pinned (`cadata` from the snapshot's ca_bundle only, no system
  roots), hostname verification on, ALPN http/1.1, TLS 1.2 minimum; client-certificate
  credentials via load_cert_chain. Contexts and resolved credentials are cached per cluster and
  snapshot revision (a new revision builds new ones; connections dialled under an older revision
  are not reused).
- Every dial has a timeout and runs inside the request's task, so it dies with its client.
  Failures become `UpstreamUnavailable` with a short reason that never carries a secret.
- Responses are parsed by native.httpparse (head + ChunkedDecoder) and streamed: the body waits
  in a bounded `ByteQueue`; when nobody takes it (the client is slow) reading from the API
  server pauses. Or, for the HTTP/1.1 fast path (fastpath.py), head and body go to a
  `ResponseSink` from this protocol's callbacks, with nothing buffered here.
- A connection returns to the pool only when its response was read to the end, the request was
  sent completely and both sides agreed on keep-alive. The pool keeps at most `max_idle`
  idle connections per cluster, each for about `idle_timeout` seconds (one sweep timer per pool).
"""
from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections import deque
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from native.httpparse import ChunkedDecoder, HttpParseError, parse_response_head

from .flow import ByteQueue, ConnectionGone, FlowControl, PipeReader

log = logging.getLogger("accesspoint.upstream")


class UpstreamUnavailable(Exception):
    """The API server could not be reached. `reason` is safe to show to the caller."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class UpstreamProtocolError(Exception):
    """The API server broke HTTP (malformed head, connection closed mid-response)."""

    def __init__(self, reason: str, before_response: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.before_response = before_response   # nothing of a response was received


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    base_path: str       # path prefix of the endpoint ("" for most clusters)

    @property
    def host_header(self) -> bytes:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return (host if self.port == 443 else f"{host}:{self.port}").encode("ascii")


def parse_endpoint(url: str) -> Endpoint:
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise UpstreamUnavailable("the cluster endpoint is not an https:// URL")
    return Endpoint(parts.hostname, parts.port or 443, parts.path.rstrip("/"))


# -- one connection ------------------------------------------------------------------------------

class ResponseSink(Protocol):
    """Takes a response as it is parsed, instead of the head future and the body queue. The body
    comes first when it was received with the head (`feed`, `feed_eof`), then `head_received`."""

    def head_received(self, head) -> None: ...
    def head_failed(self, exc: UpstreamProtocolError) -> None: ...
    def feed(self, data: bytes) -> None: ...
    def feed_eof(self) -> None: ...
    def set_exception(self, exc: BaseException) -> None: ...


class UpstreamConnection(asyncio.Protocol):
    def __init__(self, key: tuple, loop: asyncio.AbstractEventLoop):
        self.key = key
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self.flow: FlowControl | None = None
        self._buffer = bytearray()
        self._head_future: asyncio.Future | None = None   # the current exchange's response head
        self._awaiting_head = False
        self._sink: ResponseSink | None = None              # takes the response instead of the two
        self._body: ByteQueue | ResponseSink | None = None
        self._decoder = None
        self._remaining: int | None = None      # Content-Length bytes still to come
        self._until_close = False
        self._pipe: ByteQueue | None = None
        self._method = "GET"
        self.head = None
        self.raw_head = b""
        self.response_complete = False
        self.request_complete = False
        self._chunked_request = False
        self.closed = False
        self.reused = False
        self.bytes_received = 0
        self.idle_since = 0.0                   # loop time of its return to the pool

    # asyncio callbacks
    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.flow = FlowControl(transport)

    def data_received(self, data: bytes) -> None:
        self.bytes_received += len(data)
        if self._pipe is not None:
            self._pipe.feed(data)
            return
        if not self._awaiting_head and self._body is None:
            # bytes while idle: the connection is out of step; never reuse it
            self.close()
            return
        if (self._body is not None and not self._buffer and self._decoder is None
                and not self._until_close and not self.response_complete):
            self._feed_length_delimited(data)    # the body's bytes as received: no copy
            return
        self._buffer += data
        if self._body is None:
            self._parse_head()
        else:
            self._feed_body()

    def _feed_length_delimited(self, data: bytes) -> None:
        take = min(self._remaining, len(data))
        self._body.feed(data if take == len(data) else data[:take])
        self._remaining -= take
        if self._remaining == 0:
            self._buffer += data[take:]
            self._finish_body()

    def eof_received(self) -> bool:
        if self._pipe is not None:
            self._pipe.feed_eof()
        elif self._body is not None and not self.response_complete:
            if self._until_close:
                self._feed_body()
                self.response_complete = True
                self._body.feed_eof()
            else:
                self._body.set_exception(UpstreamProtocolError("the API server closed the connection mid-response"))
        self._fail_head(UpstreamProtocolError("the API server closed the connection",
                                              before_response=True))
        self.closed = True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.flow is not None:
            self.flow.connection_lost()
        self._fail_head(UpstreamProtocolError("the connection to the API server was lost",
                                              before_response=True))
        if self._body is not None and not self.response_complete:
            self._body.set_exception(UpstreamProtocolError("the connection to the API server was lost"))
        if self._pipe is not None:
            self._pipe.feed_eof()

    def pause_writing(self) -> None:
        self.flow.pause_writing()

    def resume_writing(self) -> None:
        self.flow.resume_writing()

    # request side
    def begin(self, method: str, head: bytes, sink: ResponseSink | None = None) -> None:
        """Send a request head and expect a response (into `sink` when given)."""
        if self.closed or self.transport.is_closing():
            raise UpstreamProtocolError("the connection to the API server is closed", before_response=True)
        self._method = method
        self.head = None
        self.raw_head = b""
        self._body = None
        self._decoder = None
        self.response_complete = False
        self.request_complete = False
        self._sink = sink
        self._head_future = self._loop.create_future() if sink is None else None
        self._awaiting_head = True
        self.transport.write(head)

    async def write(self, data: bytes) -> None:
        if self.closed or self.transport.is_closing():
            raise ConnectionGone("the connection to the API server is closed")
        self.transport.write(data)
        await self.flow.drain()

    # the request as the pipeline sends it (the same calls on an HTTP/2 stream, upstream_h2.py)
    def send_request(self, method: str, target: str, headers: list[tuple[bytes, bytes]],
                     sink: ResponseSink | None = None) -> None:
        lines = [f"{method} {target} HTTP/1.1".encode("ascii")]
        lines += [name + b": " + value for name, value in headers]
        self._chunked_request = (b"transfer-encoding", b"chunked") in headers
        self.begin(method, b"\r\n".join(lines) + b"\r\n\r\n", sink)

    async def send_body(self, data: bytes) -> None:
        await self.write(b"%x\r\n" % len(data) + data + b"\r\n" if self._chunked_request else data)

    async def end_body(self) -> None:
        if self._chunked_request:
            await self.write(b"0\r\n\r\n")
        self.request_complete = True

    async def read_head(self):
        """The final response head (1xx other than 101 are skipped)."""
        return await self._head_future

    async def read_body(self) -> bytes:
        """The next piece of the response body, b"" at its end."""
        return await self._body.read()

    @property
    def reusable(self) -> bool:
        return (not self.closed and self.transport is not None and not self.transport.is_closing()
                and self.response_complete and self.request_complete and self.head is not None
                and self.head.keep_alive and self._pipe is None and not self._buffer)

    def detach(self) -> tuple[PipeReader, "UpstreamPipeWriter"]:
        """After a 101: a raw byte pipe; bytes already received after the head come first."""
        self._pipe = ByteQueue(self.flow)
        if self._buffer:
            self._pipe.feed(bytes(self._buffer))
            self._buffer.clear()
        if self.closed:
            self._pipe.feed_eof()
        self.flow.resume_reading()
        return PipeReader(self._pipe), UpstreamPipeWriter(self)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    # response parsing
    def _fail_head(self, exc: Exception) -> None:
        awaiting, self._awaiting_head = self._awaiting_head, False
        if self._sink is not None:
            if awaiting:
                self._sink.head_failed(exc)
            return
        future = self._head_future
        if future is not None and not future.done():
            future.set_exception(exc)
            future.exception()   # mark retrieved: the caller may be gone already

    def _parse_head(self) -> None:
        while True:
            try:
                parsed = parse_response_head(self._buffer)
            except HttpParseError as exc:
                self._fail_head(UpstreamProtocolError(f"malformed response head ({exc.reason})"))
                self.abort()
                return
            if parsed is None:
                return
            head, consumed = parsed
            raw = bytes(self._buffer[:consumed])
            del self._buffer[:consumed]
            if 100 <= head.status < 200 and head.status != 101:
                continue                  # 100 Continue, 103 Early Hints: not forwarded
            break
        self.head = head
        self.raw_head = raw
        sink = self._sink
        self._body = sink if sink is not None else ByteQueue(self.flow)
        no_body = (self._method == "HEAD" or head.status in (204, 304) or head.status == 101)
        if no_body:
            self._remaining = 0
        elif head.chunked:
            self._decoder = ChunkedDecoder()
        elif head.content_length is not None:
            self._remaining = head.content_length
        else:
            self._until_close = True
        future = self._head_future
        self._awaiting_head = False
        if head.status == 101:
            self.response_complete = True
            self._body.feed_eof()
        elif self._remaining == 0 and self._decoder is None and not self._until_close:
            self.response_complete = True
            self._body.feed_eof()
        elif self._buffer:
            self._feed_body()
        if sink is not None:
            sink.head_received(head)
        elif future is not None and not future.done():
            future.set_result(head)

    def _feed_body(self) -> None:
        if self.response_complete or not self._buffer:
            return
        if self._decoder is not None:
            data = bytes(self._buffer)
            self._buffer.clear()
            try:
                pieces = self._decoder.feed(data)
            except HttpParseError as exc:
                self._body.set_exception(UpstreamProtocolError(f"malformed chunked body ({exc.reason})"))
                self.abort()
                return
            for piece in pieces:
                self._body.feed(piece)
            if self._decoder.done:
                self._buffer += self._decoder.unconsumed()
                self._finish_body()
        elif self._until_close:
            self._body.feed(bytes(self._buffer))
            self._buffer.clear()
        else:
            take = min(self._remaining, len(self._buffer))
            self._body.feed(bytes(self._buffer[:take]))
            del self._buffer[:take]
            self._remaining -= take
            if self._remaining == 0:
                self._finish_body()

    def _finish_body(self) -> None:
        self.response_complete = True
        self._body.feed_eof()
        if self._buffer:     # bytes after the response: the server is out of step
            self.close()


class UpstreamPipeWriter:
    def __init__(self, conn: UpstreamConnection):
        self._conn = conn

    async def write(self, data: bytes) -> None:
        await self._conn.write(data)

    def can_write_eof(self) -> bool:
        t = self._conn.transport
        return t is not None and t.can_write_eof()

    def write_eof(self) -> None:
        t = self._conn.transport
        if t is None or t.is_closing():
            return
        if t.can_write_eof():
            t.write_eof()
        else:
            t.close()        # TLS cannot half-close: flush and close

    def close(self) -> None:
        self._conn.close()


# -- the pool ------------------------------------------------------------------------------------

@dataclass
class ClusterTLS:
    context: ssl.SSLContext            # ALPN http/1.1 only: upgrades and HTTP/1.1-only clusters
    token: str | None
    endpoint: Endpoint
    h2_context: ssl.SSLContext | None = None   # ALPN h2, http/1.1: ordinary requests


def _safe_reason(exc: BaseException, dial_timeout: float) -> str:
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return f"dial timed out after {dial_timeout:g}s"
    if isinstance(exc, ssl.SSLCertVerificationError):
        text = getattr(exc, "verify_message", "") or "certificate verify failed"
        return f"TLS certificate verification failed ({text})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed ({exc.reason or 'ssl error'})"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return "the API server's host name does not resolve"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by the API server"
    if isinstance(exc, OSError):
        return (exc.strerror or "network error").lower()
    return "connection failed"


def _client_context(ca_bundle: str, alpn: list[str]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.load_verify_locations(cadata=ca_bundle)
    except (ssl.SSLError, ValueError):
        raise UpstreamUnavailable("the cluster's CA bundle is not valid PEM") from None
    ctx.set_alpn_protocols(alpn)
    return ctx


class UpstreamPool:
    def __init__(self, *, secrets_dir: str | None, dial_timeout: float = 5.0, max_idle: int = 128,
                 idle_timeout: float = 60.0, resolve_credential=None):
        self.secrets_dir = secrets_dir
        self.dial_timeout = dial_timeout
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self._resolve_credential = resolve_credential
        self._tls: dict[tuple[str, int], ClusterTLS] = {}
        self._idle: dict[tuple[str, int], deque[UpstreamConnection]] = {}
        self._open: set[UpstreamConnection] = set()
        self._latest_revision = 0
        self._sweeper: asyncio.TimerHandle | None = None

    def _forget_before(self, revision: int) -> None:
        """A new snapshot revision: what was cached for older ones goes (connections in use
        finish their exchange first and are not pooled again)."""
        for old in [k for k in self._tls if k[1] < revision]:
            del self._tls[old]
        for old in [k for k in self._idle if k[1] < revision]:
            for conn in self._idle.pop(old):
                conn.close()

    # TLS contexts and credentials, cached per (cluster, revision)
    def cluster_tls(self, cluster, revision: int) -> ClusterTLS:
        key = (cluster.name, revision)
        cached = self._tls.get(key)
        if cached is not None:
            return cached
        if revision > self._latest_revision:
            self._latest_revision = revision
            self._forget_before(revision)
        endpoint = parse_endpoint(getattr(cluster, "endpoint", "") or "")
        ca_bundle = getattr(cluster, "ca_bundle", "") or ""
        if not ca_bundle.strip():
            raise UpstreamUnavailable("no CA bundle is configured for the cluster")
        ctx, h2_ctx = (_client_context(ca_bundle, alpn) for alpn in (["http/1.1"], ["h2", "http/1.1"]))
        token = None
        credential = getattr(cluster, "credential", None)
        if credential and self._resolve_credential is not None:
            try:
                resolved = self._resolve_credential(credential, self.secrets_dir)
            except Exception:
                log.warning("cluster %s: its credential could not be resolved", cluster.name)
                raise UpstreamUnavailable("the gateway's credential for the cluster is unavailable") from None
            token = getattr(resolved, "token", None) or None
            cert_file = getattr(resolved, "cert_file", None)
            key_file = getattr(resolved, "key_file", None)
            if cert_file:
                try:
                    ctx.load_cert_chain(cert_file, key_file)
                    h2_ctx.load_cert_chain(cert_file, key_file)
                except (OSError, ssl.SSLError):
                    raise UpstreamUnavailable("the gateway's client certificate for the cluster is unusable") from None
        tls = ClusterTLS(ctx, token, endpoint, h2_ctx)
        self._tls[key] = tls
        return tls

    async def acquire(self, cluster, revision: int, *, fresh: bool = False, upgrade: bool = False,
                      long_lived: bool = False) -> UpstreamConnection:
        """An HTTP/1.1 connection (`upgrade` and `long_lived` matter to upstream_h2's pool only)."""
        tls = self.cluster_tls(cluster, revision)
        key = (cluster.name, revision)
        conn = None if fresh else self._pop_idle(key)
        return conn if conn is not None else await self._dial(key, tls)

    def take_idle(self, cluster, revision: int) -> UpstreamConnection | None:
        """An idle pooled HTTP/1.1 connection for an ordinary request, or None (then `acquire`)."""
        return self._pop_idle((cluster.name, revision))

    def _pop_idle(self, key: tuple) -> UpstreamConnection | None:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()                # the most recently used: the oldest expire on the left
            if not conn.closed and not conn.transport.is_closing():
                conn.reused = True
                return conn
        return None

    async def _dial(self, key, tls: ClusterTLS) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        ep = tls.endpoint
        conn = UpstreamConnection(key, loop)
        try:
            async with asyncio.timeout(self.dial_timeout):
                await loop.create_connection(lambda: conn, ep.host, ep.port, ssl=tls.context,
                                             server_hostname=ep.host,
                                             ssl_handshake_timeout=self.dial_timeout)
        except asyncio.CancelledError:
            conn.abort()
            raise
        except Exception as exc:
            conn.abort()
            raise UpstreamUnavailable(_safe_reason(exc, self.dial_timeout)) from None
        self._open.add(conn)
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        """Return a connection after its exchange: pooled when clean, closed otherwise."""
        if not conn.reusable or conn.key[1] < self._latest_revision:
            conn.close()
            self._open.discard(conn)
            return
        idle = self._idle.setdefault(conn.key, deque())
        if len(idle) >= self.max_idle:
            conn.close()
            self._open.discard(conn)
            return
        loop = asyncio.get_running_loop()
        conn.idle_since = loop.time()
        conn._head_future = None
        conn._awaiting_head = False
        conn._body = conn._sink = None
        idle.append(conn)
        if self._sweeper is None:
            self._sweeper = loop.call_later(self._sweep_period, self._sweep)

    def discard(self, conn: UpstreamConnection) -> None:
        conn.abort()
        self._open.discard(conn)

    @property
    def _sweep_period(self) -> float:
        return max(0.05, self.idle_timeout / 4)

    def _sweep(self) -> None:
        """Close the connections idle for `idle_timeout` (one timer per pool, not one per
        release: a connection goes within 1.25 × idle_timeout)."""
        self._sweeper = None
        loop = asyncio.get_running_loop()
        oldest_allowed = loop.time() - self.idle_timeout
        for idle in self._idle.values():
            while idle and idle[0].idle_since <= oldest_allowed:
                conn = idle.popleft()
                conn.close()
                self._open.discard(conn)
        if any(self._idle.values()):
            self._sweeper = loop.call_later(self._sweep_period, self._sweep)

    def idle_count(self, cluster_name: str | None = None) -> int:
        return sum(len(v) for k, v in self._idle.items() if cluster_name in (None, k[0]))

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
        for conn in list(self._open):
            conn.close()
        self._open.clear()
