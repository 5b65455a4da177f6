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

High availability (membership.py): the `OK` line names this replica and worker, so that an agent
keeps one tunnel per worker; every tunnel is sent the gateway fleet's member list when it opens
and whenever the list changes. Accepts and refusals are audited (the audit spool) and counted.

Revocation: on every snapshot swap (a full snapshot or a revocation delta) the listener closes
the tunnels whose certificate the new snapshot no longer allows for their cluster (dropped from
`agent_identities`, its serial revoked, the cluster gone), and audits each closure.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import math
import os
import socket
import time
import uuid

import h2.events
import h2.exceptions

from native.httpparse import HttpParseError, parse_response_head

from .. import headers as hdrs
from ..flow import ConnectionGone, transport_peer
from ..heartbeat import rfc3339
from ..identity import normalise_serial
from ..upstream import ClusterTLS, UpstreamProtocolError, UpstreamUnavailable, parse_endpoint
from ..upstream_h2 import CONNECTION_WINDOW, H2ResponseHead, H2UpstreamConnection, H2UpstreamStream
from . import membership, protocol
from .assertion import split_impersonation
from .identities import CN_PREFIX, allowed, certificate_identities

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
    def __init__(self, registry: "TunnelRegistry", cluster: str, identities: frozenset[str], peer: str,
                 serial: str = ""):
        super().__init__((cluster, 0), asyncio.get_running_loop(), registry)
        self.cluster = cluster
        self.identities = identities
        self.peer = peer
        self.serial = serial          # the agent certificate's (hex), what a revocation names
        self._registry = registry
        self.keepalive = protocol.TunnelKeepalive(registry.ping_interval, registry.ping_timeout, math.inf,
                                                  time.monotonic(), on_rtt=registry.rtt_observer(cluster))
        self.draining = False
        self.opened_at = time.time()
        # usable once the agent's SETTINGS arrived: an agent that finds it already holds a tunnel
        # to this worker closes the new one before speaking HTTP/2, so no request is ever sent on
        # a duplicate that is about to go
        self.ready = False

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)
        self.conn.increment_flow_control_window(MAX_WINDOW - CONNECTION_WINDOW)
        self._flush()
        self.send_members(self._registry.members)

    def _dispatch(self, event) -> None:
        if not self.ready and isinstance(event, h2.events.RemoteSettingsChanged):
            self.ready = True
            self._registry.tunnel_ready(self)
        super()._dispatch(event)

    def open_stream(self, upgrade: bool = False) -> TunnelStream:
        stream = TunnelStream(self, reused=self.used, upgrade=upgrade)
        self.used = True
        self._registry.stream_opened(self.cluster)
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

    def _control(self, command: bytes, fields: list[tuple[bytes, bytes]] = ()) -> bool:
        """A control stream to the agent (its answer is ignored); False when it cannot be sent."""
        if self.closed or self.goaway:
            return False
        try:
            sid = self.conn.get_next_available_stream_id()
            self.conn.send_headers(sid, [(b":method", b"POST"), (b":scheme", b"https"),
                                         (b":authority", b"accesspoint"), (b":path", b"/"),
                                         (protocol.CONTROL_HEADER, command), *fields], end_stream=True)
        except h2.exceptions.ProtocolError:
            return False
        self._flush()
        return True

    def send_members(self, members: list[membership.Member] | None) -> None:
        """Tell the agent which gateway replicas exist (so it dials the ones it lacks)."""
        if members is not None and not self.draining:
            self._control(protocol.MEMBERS, [(protocol.MEMBERS_HEADER, membership.encode(members))])

    def notify_drain(self) -> None:
        """Tell the agent to open a tunnel elsewhere now; in-flight streams go on here."""
        if self.draining or self.closed:
            return
        self.draining = True
        if not self._control(protocol.DRAIN):
            return
        if not self.streams:
            self.close()

    def _die(self, reason: str) -> None:
        # the base class speaks of an API server; here the other end is the agent
        reason = reason.replace("the API server", "the agent")
        if not self.closed:
            log.info("tunnel of cluster %s from %s closed: %s", self.cluster, self.peer, reason)
        super()._die(reason)


# -- the registry -----------------------------------------------------------------------------------

class TunnelRegistry:
    """Live tunnels per cluster, and the pool interface the pipeline uses for tunnel clusters."""

    idle_timeout = math.inf      # tunnels never close for idleness

    def __init__(self, signer, *, ping_interval: float = 5.0, ping_timeout: float = 5.0, metrics=None):
        self.signer = signer
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.metrics = metrics            # GatewayTunnelMetrics, or None
        # the fleet agents are told of; None without Redis: this gateway knows only itself, and
        # agents learn replicas through the addresses they were given
        self.members: list[membership.Member] | None = None
        self._tunnels: dict[str, list[TunnelConnection]] = {}
        self._seen: set[str] = set()
        # live tunnels per cluster, rebuilt whole on every change: the heartbeat thread reads it
        self.counts: dict[str, int] = {}
        self.lost_at: dict[str, str] = {}

    def attach(self, cluster: str, identities: frozenset[str], peer: str, serial: str = "") -> TunnelConnection:
        conn = TunnelConnection(self, cluster, identities, peer, serial)
        self._tunnels.setdefault(cluster, []).append(conn)
        if self.metrics is not None:
            if cluster not in self._seen:
                self._seen.add(cluster)
                self.metrics.cluster_seen(cluster)
            self.metrics.accepted_total.labels(cluster=cluster).inc()
        return conn

    def tunnel_ready(self, conn: TunnelConnection) -> None:
        self._count()

    def _forget(self, conn: TunnelConnection) -> None:
        conns = self._tunnels.get(conn.cluster)
        if conns and conn in conns:
            conns.remove(conn)
            if not conns:
                del self._tunnels[conn.cluster]
            self._count()
            if self.metrics is not None and conn.ready:
                self.metrics.closed_total.labels(cluster=conn.cluster).inc()

    def _count(self) -> None:
        counts = {name: sum(c.ready for c in conns) for name, conns in self._tunnels.items()}
        counts = {name: n for name, n in counts.items() if n}
        now = _iso_now()
        # when this worker last held a tunnel of each cluster it no longer holds one of (for
        # `apctl get clusters`' LAST SEEN); rebuilt whole, like `counts`, for the heartbeat thread
        lost = {name: at for name, at in self.lost_at.items() if name not in counts}
        lost.update((name, now) for name in self.counts if name not in counts)
        self.counts, self.lost_at = counts, lost

    def set_members(self, members: list[membership.Member]) -> None:
        """The fleet changed: every tunnel's agent is told."""
        self.members = list(members)
        for conn in self._all():
            conn.send_members(self.members)

    def rtt_observer(self, cluster: str):
        if self.metrics is None:
            return None
        return self.metrics.rtt_seconds.labels(cluster=cluster).observe

    def stream_opened(self, cluster: str) -> None:
        if self.metrics is not None:
            self.metrics.streams_total.labels(cluster=cluster).inc()

    def close_disallowed(self, refused, on_closed) -> None:
        """Close every tunnel for which `refused(conn)` gives a HelloError; `on_closed(conn, it)` first."""
        for conn in self._all():
            problem = refused(conn)
            if problem is not None and not conn.closed:
                log.warning("tunnel of cluster %s from %s closed: %s", conn.cluster, conn.peer, problem.reason)
                on_closed(conn, problem)
                conn.close()

    def tunnels(self, cluster: str | None = None) -> list[TunnelConnection]:
        """The usable tunnels (of `cluster`)."""
        return [c for name, conns in self._tunnels.items() if cluster in (None, name) for c in conns if c.ready]

    def _all(self) -> list[TunnelConnection]:
        return [c for conns in self._tunnels.values() for c in conns]

    # the pool interface (upstream.UpstreamPool's calls)
    def cluster_tls(self, cluster, revision: int) -> ClusterTLS:
        # no TLS context or credential here: the agent holds both; Host is the agent's to set
        return ClusterTLS(context=None, token=None, endpoint=parse_endpoint(cluster.endpoint))

    async def acquire(self, cluster, revision: int, *, fresh: bool = False, upgrade: bool = False,
                      long_lived: bool = False) -> TunnelStream:
        best = None
        for conn in list(self._tunnels.get(cluster.name, ())):
            if not conn.ready:
                continue
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
        for conn in self._all():
            conn.notify_drain()

    def close(self) -> None:
        for conn in self._all():
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

    def take_idle(self, cluster, revision: int):
        """The fast path's idle pooled connection: tunnel streams are opened on the task path."""
        return None if cluster.tunnel else self.direct.take_idle(cluster, revision)

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
        self._serial = ""

    def connection_made(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        client, cert = transport_peer(transport)
        self._peer = f"{client[0]}:{client[1]}"
        self._identities = certificate_identities(cert) if cert is not None else frozenset()
        self._serial = format(cert.serial_number, "x") if cert is not None else ""
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None or ssl_object.selected_alpn_protocol() != protocol.ALPN:
            self._refuse(protocol.HelloError(f"ALPN {protocol.ALPN} was not negotiated", "alpn"))
            return
        self._timer = asyncio.get_running_loop().call_later(
            self._listener.handshake_timeout, self._refuse, protocol.HelloError("no greeting in time", "timeout"))

    def data_received(self, data: bytes) -> None:
        if self._done:
            return
        cluster = ""
        try:
            got = self._reader.feed(data)
            if got is None:
                return
            line, rest = got
            cluster = protocol.parse_greeting(line)
            self._listener.admit(cluster, self._identities, self._serial)
        except protocol.HelloError as exc:
            self._refuse(exc, cluster)
            return
        self._finish()
        listener = self._listener
        self._transport.write(protocol.accept(listener.gateway_id, listener.worker, listener.workers))
        conn = listener.registry.attach(cluster, self._identities, self._peer, self._serial)
        log.info("tunnel of cluster %s from %s (%s) connected", cluster, self._peer,
                 ", ".join(sorted(i for i in self._identities if i.startswith(CN_PREFIX))) or "no CN")
        listener.audit_hello(self._peer, self._identities, cluster, None)
        self._transport.set_protocol(conn)
        conn.connection_made(self._transport)
        if rest:
            conn.data_received(rest)

    def _refuse(self, exc: protocol.HelloError, cluster: str = "") -> None:
        if self._done:
            return
        self._finish()
        log.warning("tunnel from %s refused: %s", self._peer, exc.reason)
        self._listener.audit_hello(self._peer, self._identities, cluster, exc)
        self._transport.write(protocol.refuse(exc.reason))
        self._transport.close()

    def _finish(self) -> None:
        self._done = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def connection_lost(self, exc) -> None:
        self._finish()


class TunnelListener:
    """The mTLS port agents dial (--tunnel-port). `gateway_id`, `worker` and `workers` are what
    the `OK` line tells agents; `audit` appends an event to the spool (or is None)."""

    def __init__(self, registry: TunnelRegistry, holder, ssl_context, handshake_timeout: float = 10.0, *,
                 gateway_id: str = "gateway", worker: int = 0, workers: int = 1, audit=None):
        self.registry = registry
        self.holder = holder
        self.ssl_context = ssl_context
        self.handshake_timeout = handshake_timeout
        self.gateway_id = gateway_id
        self.worker = worker
        self.workers = workers
        self._audit = audit
        self._server: asyncio.AbstractServer | None = None
        self._revoked: tuple[object, frozenset[str]] = (None, frozenset())

    def admit(self, cluster_name: str, identities: frozenset[str], serial: str = "") -> None:
        """HelloError unless the current snapshot lets this certificate serve `cluster_name`."""
        problem = self._refusal(self.holder.current, cluster_name, identities, serial)
        if problem is not None:
            raise problem

    def enforce(self, snapshot) -> None:
        """On every snapshot swap: close (and audit) the tunnels it no longer allows."""
        self.registry.close_disallowed(
            lambda conn: self._refusal(snapshot, conn.cluster, conn.identities, conn.serial),
            lambda conn, problem: self.audit_hello(conn.peer, conn.identities, conn.cluster, problem, closed=True))

    def _refusal(self, snapshot, cluster_name: str, identities: frozenset[str],
                 serial: str) -> protocol.HelloError | None:
        """Why `snapshot` does not let this certificate serve `cluster_name`, or None when it does."""
        if snapshot is None:
            return protocol.HelloError("the gateway has no policy snapshot loaded yet", "no_snapshot")
        cluster = snapshot.clusters.get(cluster_name)
        if cluster is None or not cluster.tunnel:
            return protocol.HelloError(f'cluster "{cluster_name}" is not a tunnel cluster here',
                                       "not_tunnel_cluster")
        # a revocation delta names the serial before the next full snapshot drops the key
        if serial and serial in self._revoked_serials(snapshot):
            return protocol.HelloError(f"this certificate (serial {serial}) has been revoked", "revoked")
        if not allowed(identities, cluster.agent_identities):
            return protocol.HelloError(f'this certificate is not allowed to serve cluster "{cluster_name}"',
                                       "not_allowed")
        return None

    def _revoked_serials(self, snapshot) -> frozenset[str]:
        """The snapshot's revoked certificate serials, normalised; computed once per snapshot."""
        if self._revoked[0] is not snapshot:
            serials = snapshot.data.get("revocations", {}).get("cert_serials", ())
            self._revoked = (snapshot, frozenset(normalise_serial(s) for s in serials))
        return self._revoked[1]

    def audit_hello(self, peer: str, identities: frozenset[str], cluster: str,
                    refused: protocol.HelloError | None, closed: bool = False) -> None:
        """One audit event per tunnel accepted, refused or closed by policy (refusals counted)."""
        metrics = self.registry.metrics
        if refused is not None and metrics is not None and not closed:
            metrics.refused_total.labels(reason=refused.code).inc()
        if self._audit is None:
            return
        cns = sorted(i[len(CN_PREFIX):] for i in identities if i.startswith(CN_PREFIX))
        reason = "the agent may serve the cluster" if refused is None else \
            f"open tunnel closed: {refused.reason}" if closed else refused.reason
        event = {"time": _iso_now(), "id": "tunnel-" + uuid.uuid4().hex, "kind": "tunnel", "verb": "tunnel",
                 "user": cns[0] if cns else "", "groups": [], "component": "agent", "method": "certificate",
                 "client": peer.rpartition(":")[0], "cluster": cluster,
                 "decision": "deny" if refused is not None else "allow", "reason": reason,
                 "refusal": refused.code if refused is not None else "", "closed": closed,
                 "agent_identities": sorted(identities), "gateway": self.gateway_id, "worker": self.worker}
        try:
            self._audit(event)
        except Exception:        # the spool failing must be loud, and must not break the listener
            log.exception("audit spool append failed for a tunnel event")

    async def start(self, host: str, port: int) -> None:
        self.holder.subscribe(self.enforce)
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


def replica_id(config) -> str:
    """This gateway replica's id in `OK` lines and the member list: --gateway-id, else
    HOSTNAME-PID of the replica's first process (the supervisor when there are workers)."""
    if config.gateway_id:
        return config.gateway_id
    return f"{socket.gethostname()}-{os.getppid() if config.workers > 1 else os.getpid()}"


def follow_fleet(heartbeat, registry: TunnelRegistry, me: membership.Member, worker: int, client,
                 interval: float = membership.REFRESH_INTERVAL):
    """Report this worker's tunnels in its heartbeat, and keep the registry's member list (what
    agents are told) in step with the fleet; returns the started FleetWatcher."""
    heartbeat.extra = lambda: {"tunnel": {**me.to_json(), "worker": worker, "clusters": registry.counts,
                                          "lost_at": registry.lost_at}}
    watcher = membership.FleetWatcher(client, me, registry.set_members, interval)
    registry.members = watcher.members
    watcher.start()
    return watcher


def _iso_now() -> str:
    return rfc3339(time.time())
