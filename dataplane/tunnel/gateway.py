"""The gateway side of the tunnels: the listener agents dial, the registry of live tunnels per
cluster, and the upstream selection the pipeline uses (docs/tunnels.md).

A `TunnelConnection` is an `H2UpstreamConnection` (upstream_h2.py) on a connection the agent
opened: the pipeline sees a `TunnelStream` with the calls of any upstream exchange, so authn,
policy, audit and streaming are the same code on both paths. What differs is in `start_stream`:
the Impersonate-* fields become a signed assertion, upgrades become an upgrade stream
(protocol.py), and caller fields with AccessPoint's reserved names are dropped.

Flow control: every stream has its own window (a stalled `logs -f` reader holds at most
STREAM_WINDOW of the agent's data); the connection window is the largest HTTP/2 allows, so no
number of stalled streams can starve the others. Health: PINGs also while idle (TunnelKeepalive);
no answer within --tunnel-ping-timeout and the tunnel is dropped, failing its streams.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import math
import time

import h2.exceptions

from native.httpparse import HttpParseError, parse_response_head

from .. import headers as hdrs
from ..flow import ConnectionGone, transport_peer
from ..upstream import ClusterTLS, UpstreamProtocolError, UpstreamUnavailable, parse_endpoint
from ..upstream_h2 import CONNECTION_WINDOW, H2ResponseHead, H2UpstreamConnection, H2UpstreamStream
from . import protocol
from .assertion import split_impersonation
from .identities import allowed, certificate_identities

log = logging.getLogger("accesspoint.tunnel")

MAX_WINDOW = 2 ** 31 - 1
_NOT_FORWARDED = hdrs.HOP_BY_HOP | {b"host", b"authorization"}


# -- one stream ---------------------------------------------------------------------------------------

class TunnelStream(H2UpstreamStream):
    """One exchange over a tunnel; an upgrade stream also becomes the byte pipe after a 101."""

    def __init__(self, conn: "TunnelConnection", reused: bool, upgrade: bool):
        super().__init__(conn, reused)
        self.upgrade = upgrade
        self.raw_head = b""

    def _headers(self, fields: list[tuple[bytes, bytes]]) -> None:
        switched = hdrs.header_value(fields, protocol.SWITCHED_HEADER)
        if not self.upgrade or switched is None:
            super()._headers(fields)
            return
        try:
            raw = base64.b64decode(switched, validate=True)
            parsed = parse_response_head(raw)
        except (binascii.Error, HttpParseError):
            parsed = None
        if parsed is None or parsed[0].status != 101 or parsed[1] != len(raw):
            self._fail("the agent sent a malformed switch to an upgraded protocol")
            return
        self.raw_head = raw
        self.head = H2ResponseHead(101, list(parsed[0].headers))
        if not self._head.done():
            self._head.set_result(self.head)

    async def end_body(self) -> None:
        if self.upgrade:      # the stream stays open: the upgraded bytes follow
            self.request_complete = True
            return
        await super().end_body()

    def detach(self) -> tuple["TunnelPipeReader", "TunnelPipeWriter"]:
        return TunnelPipeReader(self), TunnelPipeWriter(self)


class TunnelPipeReader:
    """The agent's side of an upgraded session; a failed stream reads as the end."""

    def __init__(self, stream: TunnelStream):
        self._stream = stream

    async def read(self, limit: int = -1) -> bytes:
        try:
            return await self._stream.read_body()
        except (UpstreamProtocolError, ConnectionError):
            return b""


class TunnelPipeWriter:
    def __init__(self, stream: TunnelStream):
        self._stream = stream

    async def write(self, data: bytes) -> None:
        await self._stream.send_body(data)

    def can_write_eof(self) -> bool:
        return True           # END_STREAM is a half-close: the other direction goes on

    def write_eof(self) -> None:
        conn = self._stream._conn
        try:
            conn.end_stream(self._stream)
        except (ConnectionGone, h2.exceptions.ProtocolError):
            pass

    def close(self) -> None:
        self._stream._conn.finish(self._stream, cancel=True)


# -- one tunnel -----------------------------------------------------------------------------------------

class TunnelConnection(H2UpstreamConnection):
    def __init__(self, registry: "TunnelRegistry", cluster: str, identities: frozenset[str], peer: str):
        super().__init__((cluster, 0), asyncio.get_running_loop(), registry)
        self.cluster = cluster
        self.identities = identities
        self.peer = peer
        self._registry = registry
        self.keepalive = protocol.TunnelKeepalive(registry.ping_interval, registry.ping_timeout, math.inf,
                                                  time.monotonic())
        self.draining = False
        self.opened_at = time.time()

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)
        self.conn.increment_flow_control_window(MAX_WINDOW - CONNECTION_WINDOW)
        self._flush()

    def open_stream(self, upgrade: bool = False) -> TunnelStream:
        stream = TunnelStream(self, reused=self.used, upgrade=upgrade)
        self.used = True
        return stream

    def start_stream(self, stream: TunnelStream, method: str, target: str,
                     headers: list[tuple[bytes, bytes]]) -> int:
        if self.closed or self.goaway:
            raise UpstreamProtocolError("the agent tunnel is closing", before_response=True)
        impersonation, rest = self._split(headers)
        assertion = self._registry.signer.sign(self.cluster, method, target, *impersonation)
        named = hdrs.connection_tokens(headers)
        fields = [(b":method", method.encode("ascii")), (b":scheme", b"https"),
                  (b":authority", hdrs.header_value(headers, b"host") or b""), (b":path", target.encode("ascii"))]
        for name, value in rest:
            if (name in _NOT_FORWARDED or name in named or name.startswith(protocol.RESERVED_PREFIXES)
                    or (stream.upgrade and name == b"content-length")):
                continue
            fields.append((name, value))
        if stream.upgrade:
            fields.append((protocol.UPGRADE_HEADER, hdrs.header_value(headers, b"upgrade") or b""))
            no_body = False
        else:
            framed = any(n in (b"content-length", b"transfer-encoding") for n, _ in headers)
            no_body = not framed or (b"content-length", b"0") in headers
        fields.append((protocol.ASSERTION_HEADER, assertion))
        sid = self.conn.get_next_available_stream_id()
        try:
            self.conn.send_headers(sid, fields, end_stream=no_body)
        except h2.exceptions.ProtocolError as exc:
            raise UpstreamProtocolError(f"cannot open a stream on the agent tunnel ({exc})",
                                        before_response=True) from None
        stream.request_complete = no_body
        self.streams[sid] = stream
        self.keepalive.streams_changed(len(self.streams), time.monotonic())
        self._flush()
        return sid

    @staticmethod
    def _split(headers):
        try:
            return split_impersonation(headers)
        except (UnicodeDecodeError, ValueError):
            raise UpstreamProtocolError("the impersonation fields cannot be asserted", before_response=True) from None

    def notify_drain(self) -> None:
        """Tell the agent to open a tunnel elsewhere now; in-flight streams go on here."""
        if self.draining or self.closed:
            return
        self.draining = True
        try:
            sid = self.conn.get_next_available_stream_id()
            self.conn.send_headers(sid, [(b":method", b"POST"), (b":scheme", b"https"),
                                         (b":authority", b"accesspoint"), (b":path", b"/"),
                                         (protocol.CONTROL_HEADER, protocol.DRAIN)], end_stream=True)
        except h2.exceptions.ProtocolError:
            return
        self._flush()
        if not self.streams:
            self.close()

    def _die(self, reason: str) -> None:
        if not self.closed:
            log.info("tunnel of cluster %s from %s closed: %s", self.cluster, self.peer, reason)
        # the base class speaks of an API server; here the other end is the agent
        super()._die(reason.replace("the API server", "the agent"))


# -- the registry -----------------------------------------------------------------------------------

class TunnelRegistry:
    """Live tunnels per cluster, and the pool interface the pipeline uses for tunnel clusters."""

    idle_timeout = math.inf      # tunnels never close for idleness

    def __init__(self, signer, *, ping_interval: float = 5.0, ping_timeout: float = 5.0):
        self.signer = signer
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self._tunnels: dict[str, list[TunnelConnection]] = {}

    def attach(self, cluster: str, identities: frozenset[str], peer: str) -> TunnelConnection:
        conn = TunnelConnection(self, cluster, identities, peer)
        self._tunnels.setdefault(cluster, []).append(conn)
        return conn

    def _forget(self, conn: TunnelConnection) -> None:
        conns = self._tunnels.get(conn.cluster)
        if conns and conn in conns:
            conns.remove(conn)
            if not conns:
                del self._tunnels[conn.cluster]

    def tunnels(self, cluster: str | None = None) -> list[TunnelConnection]:
        return [c for name, conns in self._tunnels.items() if cluster in (None, name) for c in conns]

    # the pool interface (upstream.UpstreamPool's calls)
    def cluster_tls(self, cluster, revision: int) -> ClusterTLS:
        # no TLS context or credential here: the agent holds both; Host is the agent's to set
        return ClusterTLS(context=None, token=None, endpoint=parse_endpoint(cluster.endpoint))

    async def acquire(self, cluster, revision: int, *, fresh: bool = False, upgrade: bool = False,
                      long_lived: bool = False) -> TunnelStream:
        best = None
        for conn in list(self._tunnels.get(cluster.name, ())):
            if not allowed(conn.identities, cluster.agent_identities):
                log.warning("tunnel of cluster %s from %s: its certificate is no longer allowed; closing",
                            cluster.name, conn.peer)
                conn.close()
                continue
            if conn.has_room and (best is None or (conn.draining, len(conn.streams)) < (best.draining, len(best.streams))):
                best = conn
        if best is None:
            raise UpstreamUnavailable("no agent tunnel for it is connected to this gateway")
        return best.open_stream(upgrade=upgrade)

    def release(self, stream: TunnelStream) -> None:
        self._finish(stream, cancel=stream.upgrade)

    def discard(self, stream: TunnelStream) -> None:
        self._finish(stream, cancel=True)

    def _finish(self, stream: TunnelStream, cancel: bool) -> None:
        conn = stream._conn
        conn.finish(stream, cancel=cancel)
        if conn.draining and not conn.streams:
            conn.close()

    def drain(self) -> None:
        for conn in self.tunnels():
            conn.notify_drain()

    def close(self) -> None:
        for conn in self.tunnels():
            conn.close()
        self._tunnels.clear()


class UpstreamRoutes:
    """The pipeline's upstream: a cluster with `tunnel: true` goes through the tunnel registry,
    every other cluster through the direct pool."""

    def __init__(self, direct, tunnels: TunnelRegistry):
        self.direct = direct
        self.tunnels = tunnels

    def _for(self, cluster):
        return self.tunnels if cluster.tunnel else self.direct

    def cluster_tls(self, cluster, revision: int):
        return self._for(cluster).cluster_tls(cluster, revision)

    async def acquire(self, cluster, revision: int, **kwargs):
        return await self._for(cluster).acquire(cluster, revision, **kwargs)

    def release(self, conn) -> None:
        (self.tunnels if isinstance(conn, TunnelStream) else self.direct).release(conn)

    def discard(self, conn) -> None:
        (self.tunnels if isinstance(conn, TunnelStream) else self.direct).discard(conn)


# -- the listener -----------------------------------------------------------------------------------

class _Handshake(asyncio.Protocol):
    """Until the greeting is answered: checks the agent's certificate against the cluster it
    names, then hands the connection to a TunnelConnection."""

    def __init__(self, listener: "TunnelListener"):
        self._listener = listener
        self._reader = protocol.LineReader()
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._done = False
        self._peer = ""
        self._identities: frozenset[str] = frozenset()

    def connection_made(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        client, cert = transport_peer(transport)
        self._peer = f"{client[0]}:{client[1]}"
        self._identities = certificate_identities(cert) if cert is not None else frozenset()
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None or ssl_object.selected_alpn_protocol() != protocol.ALPN:
            self._refuse(f"ALPN {protocol.ALPN} was not negotiated")
            return
        self._timer = asyncio.get_running_loop().call_later(self._listener.handshake_timeout, self._refuse,
                                                            "no greeting in time")

    def data_received(self, data: bytes) -> None:
        if self._done:
            return
        try:
            got = self._reader.feed(data)
            if got is None:
                return
            line, rest = got
            cluster = protocol.parse_greeting(line)
            self._listener.admit(cluster, self._identities)
        except protocol.HelloError as exc:
            self._refuse(exc.reason)
            return
        self._finish()
        self._transport.write(protocol.accept())
        conn = self._listener.registry.attach(cluster, self._identities, self._peer)
        log.info("tunnel of cluster %s from %s (%s) connected", cluster, self._peer,
                 ", ".join(sorted(i for i in self._identities if i.startswith("cn:"))) or "no CN")
        self._transport.set_protocol(conn)
        conn.connection_made(self._transport)
        if rest:
            conn.data_received(rest)

    def _refuse(self, reason: str) -> None:
        if self._done:
            return
        self._finish()
        log.warning("tunnel from %s refused: %s", self._peer, reason)
        self._transport.write(protocol.refuse(reason))
        self._transport.close()

    def _finish(self) -> None:
        self._done = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def connection_lost(self, exc) -> None:
        self._finish()


class TunnelListener:
    """The mTLS port agents dial (--tunnel-port)."""

    def __init__(self, registry: TunnelRegistry, holder, ssl_context, handshake_timeout: float = 10.0):
        self.registry = registry
        self.holder = holder
        self.ssl_context = ssl_context
        self.handshake_timeout = handshake_timeout
        self._server: asyncio.AbstractServer | None = None

    def admit(self, cluster_name: str, identities: frozenset[str]) -> None:
        """HelloError unless the current snapshot lets this certificate serve `cluster_name`."""
        snapshot = self.holder.current
        if snapshot is None:
            raise protocol.HelloError("the gateway has no policy snapshot loaded yet")
        cluster = snapshot.clusters.get(cluster_name)
        if cluster is None or not cluster.tunnel:
            raise protocol.HelloError(f'cluster "{cluster_name}" is not a tunnel cluster here')
        if not allowed(identities, cluster.agent_identities):
            raise protocol.HelloError(f'this certificate is not allowed to serve cluster "{cluster_name}"')

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Handshake(self), host, port, ssl=self.ssl_context,
                                                reuse_address=True, reuse_port=True,
                                                ssl_handshake_timeout=self.handshake_timeout, backlog=1024)

    @property
    def port(self) -> int:
        return self._server.sockets[0].getsockname()[1]

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
