"""The request pipeline, protocol-independent (HTTP/1.1 today, HTTP/2 later):

    authenticate → route → attributes → impersonation → decide → forward | upgrade → audit

Each step either hands its result to the next or raises a `StatusError` that becomes the answer.
A request reads the snapshot once, at its start, and uses that one throughout. Exactly one audit
event is written per request, allowed or denied, before the response completes (before the
last chunk / `end()`; for upgrades, when the session ends, before the client connection closes).
"""
from __future__ import annotations

import asyncio
import datetime
import functools
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from native.requestinfo import parse_request_info

from . import headers as hdrs
from . import routing, sessionend, status
from .fastpath import FastExchange
from .flow import ConnectionGone
from .identity import AuthenticationError, Identity
from .liveexchanges import LiveExchanges, Revoked
from .oidc import KeysPending, OIDCVerifier
from .policy import Decision, forbidden_message
from .splice import SpliceStats, splice
from .status import StatusError
from .upstream import UpstreamPool, UpstreamProtocolError, UpstreamUnavailable

log = logging.getLogger("accesspoint.pipeline")

REQUEST_ID_HEADER = b"x-accesspoint-request-id"
COMPONENT = "gateway"


@dataclass
class Request:
    """Built by the protocol layer (docs/architecture.md, "Request pipeline")."""
    method: str
    target: str
    headers: list[tuple[bytes, bytes]]
    body: Any                               # BodyReader: async read() -> bytes, b"" at the end
    client: tuple[str, int]
    peer_cert: Any = None                   # verified x509.Certificate or None
    protocol: str = "http/1.1"
    upgrade: bytes | None = None
    keep_alive: bool = True
    version: str = "1.1"


@dataclass(frozen=True)
class _ImpersonationAttributes:
    """Request attributes of an impersonation check, for policy.forbidden_message."""
    verb: str
    api_group: str
    resource: str
    subresource: str
    name: str
    namespace: str
    path: str = ""
    is_resource_request: bool = True


@dataclass
class _Context:
    id: str
    started: float
    wall: float
    request: Request
    identity: Identity | None = None
    effective: Identity | None = None
    impersonation: hdrs.ImpersonationRequest | None = None
    cluster: Any = None
    route: routing.Route | None = None
    info: Any = None
    decision: Decision | None = None
    code: int = 0
    error: str = ""
    authn_failure: str = ""
    audited: bool = False
    session: SpliceStats | None = None
    bytes_out: int = 0
    revoked: str = ""          # why a revocation ended the stream or session
    upstream_groups: tuple[str, ...] = ()   # the caller's groups after group compaction
    snapshot: Any = None       # the one snapshot the request reads, from its start
    slot: Any = None           # a per-principal watch/session slot to give back (_take_slot)
    decided: bool = False      # the fast path took the decision already: `refusal` or go on
    refusal: StatusError | None = None


class _RandomPool:
    """os.urandom bytes fetched 4 KiB at a time: one getrandom syscall per 256 request ids instead
    of one each (6 % of a small request's CPU). Emptied in a forked child, so that workers never
    share the bytes their parent had fetched."""

    def __init__(self) -> None:
        self._hex = ""
        self._used = 0
        os.register_at_fork(after_in_child=self.clear)

    def clear(self) -> None:
        self._hex, self._used = "", 0

    def hex32(self) -> str:
        """16 random bytes as 32 hex digits, never handed out twice."""
        if self._used >= len(self._hex):
            self._hex, self._used = os.urandom(4096).hex(), 0
        start = self._used
        self._used += 32
        return self._hex[start:self._used]


_RANDOM = _RandomPool()


def _request_id() -> str:
    """A random (version 4) UUID as text, as str(uuid.uuid4()) but without building a UUID object."""
    h = _RANDOM.hex32()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_UUID_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


_UUID_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


@functools.lru_cache(maxsize=4)
def _iso_second(second: int) -> str:
    return datetime.datetime.fromtimestamp(second, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def _iso(ts: float) -> str:
    """UTC with milliseconds ("2026-11-23T09:40:00.123Z"); the date part is formatted once a second."""
    second = int(ts)
    micro = round((ts - second) * 1_000_000)    # as datetime.fromtimestamp rounds, then truncate
    if micro >= 1_000_000:
        second, micro = second + 1, micro - 1_000_000
    return f"{_iso_second(second)}.{micro // 1000:03d}Z"


class _Received:
    """Stands in for a LiveExchange when the whole response had arrived before it started (and
    the snapshot had not changed since the decision): no wait on the upstream is left for a
    revocation to interrupt, so registering it would be pure cost."""

    revoked = ""

    @staticmethod
    def interruptible(awaitable):
        return awaitable


_RECEIVED = _Received()


class Gateway:
    def __init__(self, holder, config, audit, metrics, upstreams: UpstreamPool):
        self.holder = holder
        self.config = config
        self.audit = audit
        self.metrics = metrics
        self.upstreams = upstreams
        self.oidc = OIDCVerifier.from_config(config)
        self.live = LiveExchanges(holder, metrics, self.oidc)

    # -- the chain ----------------------------------------------------------------------------------
    async def handle(self, request: Request, response, prepared: _Context | None = None) -> None:
        """Serve one request in the current task; `prepared`: the context the HTTP/1.1 fast path
        (serve_fast) started and hands on."""
        ctx = prepared
        if ctx is None:
            ctx = self._new_context(request)
            self.metrics.requests_in_flight.inc()
        try:
            # the protocol cancels this task when the client goes away (connection lost, stream
            # reset), which ends the upstream side with it
            response.cancel_on_abort(asyncio.current_task())
            await self._serve(ctx, request, response)
        except (asyncio.CancelledError, ConnectionError):
            if response.aborted.is_set():
                ctx.error = ctx.error or "client went away"
            raise
        finally:
            self.metrics.requests_in_flight.dec()
            if not ctx.audited:
                if not ctx.code:
                    ctx.code = response.status or 499
                self._audit(ctx, response)

    @staticmethod
    def _new_context(request: Request) -> _Context:
        return _Context(id=_request_id(), started=time.monotonic(), wall=time.time(), request=request)

    async def _serve(self, ctx: _Context, request: Request, response) -> None:
        try:
            if not ctx.decided:
                try:
                    self._decide_request(ctx, request)
                except KeysPending as pending:     # an OIDC issuer's keys are on their way
                    await pending.wait()
                    self._decide_request(ctx, request, may_wait=False)
            elif ctx.refusal is not None:
                raise ctx.refusal
            try:
                await self._forward(ctx, ctx.snapshot, request, response)
            finally:
                if ctx.slot is not None:
                    self.live.release_slot(ctx.slot)
        except StatusError as err:
            await self._answer_status(ctx, response, err)

    def _decide_request(self, ctx: _Context, request: Request, may_wait: bool = True) -> None:
        """authenticate → route → attributes → impersonation → decide → slot, on the snapshot of
        the request's start: returns when the request may go upstream, else raises StatusError
        (or KeysPending from authentication, before anything was counted)."""
        if ctx.snapshot is None:
            ctx.snapshot = self.holder.current
            if ctx.snapshot is None:
                raise status.unavailable("the gateway has no policy snapshot loaded yet", retry_after=5)
        snapshot = ctx.snapshot
        identity = self._authenticate(ctx, snapshot, request, may_wait)
        route, cluster = self._route(ctx, snapshot, request)
        info = self._attributes(ctx, request, route)
        effective = self._impersonation(ctx, snapshot, identity, cluster, request)
        self._decide(ctx, snapshot, effective, cluster, info)
        ctx.slot = self._take_slot(ctx, snapshot, request, info)

    def serve_fast(self, request: Request, response, spawn) -> None:
        """The HTTP/1.1 fast path for a request without a body or upgrade (http1.FastHandler):
        decide now; an allowed ordinary request (no watch or logs) that finds an idle pooled
        upstream connection is relayed from the two connections' callbacks (fastpath.py), with
        no task. Anything else goes on in a handler task, `spawn(ctx)`, the decision kept."""
        if request.upgrade is not None or not request.body.empty:
            return spawn(None)             # not for this path: the task path from the start
        ctx = self._new_context(request)
        self.metrics.requests_in_flight.inc()
        ctx.decided = True
        try:
            self._decide_request(ctx, request)
        except KeysPending:
            ctx.decided = False            # the task waits for the keys and decides again
            return spawn(ctx)
        except StatusError as err:
            ctx.refusal = err
            return spawn(ctx)
        if ctx.slot is not None or self._stream_kind(ctx.info):
            return spawn(ctx)              # long-lived: the task path's revocation and metrics
        try:
            tls = self.upstreams.cluster_tls(ctx.cluster, ctx.snapshot.revision)
        except UpstreamUnavailable:
            return spawn(ctx)              # the task path answers it
        conn = self.upstreams.take_idle(ctx.cluster, ctx.snapshot.revision)
        if conn is None:
            return spawn(ctx)              # dialling (or a tunnel stream) needs a task
        FastExchange(self, ctx, response, conn, spawn).start(*self._upstream_request(ctx, request, tls, tls.token))

    def _authenticate(self, ctx: _Context, snapshot, request: Request, may_wait: bool) -> Identity:
        values = hdrs.header_values(request.headers, b"authorization")
        if len(values) > 1:
            raise status.bad_request("more than one Authorization header")
        try:
            identity = snapshot.authenticator.authenticate(request.peer_cert, values[0] if values else None,
                                                           self.oidc)
        except AuthenticationError as exc:
            if may_wait and isinstance(exc, KeysPending):
                raise
            ctx.authn_failure = exc.reason
            self.metrics.authn_failures_total.labels(reason=exc.reason).inc()
            raise status.unauthorized() from None
        ctx.identity = ctx.effective = identity
        return identity

    def _route(self, ctx: _Context, snapshot, request: Request):
        route = routing.route(request.target)
        ctx.route = route
        cluster = snapshot.clusters.get(route.cluster)
        if cluster is None:
            raise status.cluster_not_found(route.cluster)
        ctx.cluster = cluster
        return route, cluster

    def _attributes(self, ctx: _Context, request: Request, route: routing.Route):
        try:
            info = parse_request_info(request.method, route.path, route.query)
        except ValueError as exc:
            raise status.bad_request(f"cannot derive request attributes: {exc}") from None
        ctx.info = info
        return info

    def _impersonation(self, ctx: _Context, snapshot, identity: Identity, cluster, request: Request) -> Identity:
        wanted = hdrs.requested_impersonation(request.headers)
        if wanted is None:
            return identity
        for resource, name, namespace in wanted.checks():
            decision = snapshot.policy.decide_impersonation(identity, cluster, resource, name, namespace,
                                                            source=request.client[0])
            if not decision.allowed:
                ctx.decision = decision
                self.metrics.decisions_total.labels(result="deny").inc()
                base, _, sub = resource.partition("/")
                group = "" if base in ("users", "groups", "serviceaccounts") else "authentication.k8s.io"
                attrs = _ImpersonationAttributes("impersonate", group, base, sub, name, namespace)
                raise status.forbidden(forbidden_message(identity, attrs, decision.reason if decision.explained else ""),
                                       details={"name": name, "group": group, "kind": base})
        ctx.impersonation = wanted
        effective = Identity(user=wanted.user, groups=wanted.effective_groups(), uid=wanted.uid,
                             method=identity.method, component="",
                             credential_id=identity.credential_id, channel=identity.channel,
                             session=identity.session)
        ctx.effective = effective
        return effective

    def _decide(self, ctx: _Context, snapshot, effective: Identity, cluster, info) -> None:
        decision = snapshot.policy.decide(effective, cluster, info, source=ctx.request.client[0])
        ctx.decision = decision
        ctx.upstream_groups = snapshot.policy.upstream_groups(ctx.identity.groups, cluster)
        self.metrics.decisions_total.labels(result="allow" if decision.allowed else "deny").inc()
        if not decision.allowed:
            details: dict[str, Any] = {"kind": info.resource} if info.is_resource_request else {}
            if info.is_resource_request:
                if info.name:
                    details["name"] = info.name
                details["group"] = info.api_group
            raise status.forbidden(forbidden_message(effective, info, decision.reason if decision.explained else ""),
                                   details=details or None)

    def _take_slot(self, ctx: _Context, snapshot, request: Request, info):
        """Per-principal caps of the snapshot's settings: 429 beyond max_exec_sessions upgrade
        sessions or max_watches watches at once on this worker."""
        if request.upgrade is not None:
            kind, limit, what = "session", snapshot.policy.max_exec_sessions, "exec/attach/port-forward sessions"
        elif info.verb == "watch":
            kind, limit, what = "watch", snapshot.policy.max_watches, "watches"
        else:
            return None
        slot = self.live.take_slot(ctx.identity.user, kind, limit)
        if slot is None:
            raise status.too_many_requests(f"user {ctx.identity.user!r} already has {limit} concurrent {what} "
                                           "through this gateway")
        return slot

    # -- forwarding -----------------------------------------------------------------------------------
    def _upstream_request(self, ctx: _Context, request: Request, tls, token):
        """(target, headers) of the upstream request; the connection frames them (HTTP/1.1 or h2)."""
        wanted = ctx.impersonation
        identity = ctx.identity
        if wanted is not None:
            imp = hdrs.Impersonate(wanted.user, wanted.groups, wanted.uid, wanted.extra)
        else:
            imp = hdrs.Impersonate(identity.user, tuple(ctx.upstream_groups), identity.uid)
        body = request.body
        if body.chunked:
            framing = (b"transfer-encoding", b"chunked")
        elif body.length is not None:
            framing = (b"content-length", str(body.length).encode())
        else:
            framing = None
        upgrade = None
        if request.upgrade is not None:   # the caller's own spelling (the parser lower-cases it)
            upgrade = hdrs.header_value(request.headers, b"upgrade") or request.upgrade
        headers = hdrs.upstream_request_headers(
            request.headers, host=tls.endpoint.host_header, token=token, impersonate=imp,
            request_id=ctx.id, client_ip=request.client[0], upgrade=upgrade,
            body_framing=framing, grant_id=ctx.decision.grant_id)
        return tls.endpoint.base_path + ctx.route.upstream_target, headers

    async def _pump_body(self, request: Request, conn) -> None:
        body = request.body
        while True:
            data = await body.read()
            if not data:
                break
            await conn.send_body(data)
        await conn.end_body()

    async def _exchange(self, ctx: _Context, snapshot, request: Request):
        """Send the request upstream and return (conn, response head, body pump task or None
        when there is no body: then nothing runs beside the wait for the head)."""
        cluster = ctx.cluster
        for attempt in (0, 1):
            try:
                tls = self.upstreams.cluster_tls(cluster, snapshot.revision)
                conn = await self.upstreams.acquire(cluster, snapshot.revision, fresh=attempt > 0,
                                                    upgrade=request.upgrade is not None,
                                                    long_lived=bool(self._stream_kind(ctx.info)))
            except UpstreamUnavailable as exc:
                self.metrics.upstream_errors_total.labels(cluster=cluster.name, reason="unreachable").inc()
                raise status.cluster_unreachable(cluster.name, exc.reason) from None
            pump = head_wait = None
            try:
                conn.send_request(request.method, *self._upstream_request(ctx, request, tls, tls.token))
                if request.body.empty:
                    await conn.end_body()
                    return conn, await conn.read_head(), None
                pump = asyncio.ensure_future(self._pump_body(request, conn))
                head_wait = asyncio.ensure_future(conn.read_head())
                done, _ = await asyncio.wait({pump, head_wait}, return_when=asyncio.FIRST_COMPLETED)
                if pump in done and pump.exception() is not None and head_wait not in done:
                    head_wait.cancel()
                    raise pump.exception()
                head = await head_wait
                return conn, head, pump
            except UpstreamProtocolError as exc:
                if pump is not None:
                    pump.cancel()
                self.upstreams.discard(conn)
                if exc.before_response and conn.reused and request.body.empty and attempt == 0:
                    continue           # a pooled connection the server had closed: dial afresh
                self.metrics.upstream_errors_total.labels(cluster=cluster.name, reason="protocol").inc()
                raise status.bad_gateway(cluster.name, exc.reason) from None
            except BaseException:
                for task in (pump, head_wait):   # cancelled mid-exchange: nothing left dangling
                    if task is not None:
                        task.cancel()
                self.upstreams.discard(conn)
                raise
        raise AssertionError("unreachable")

    async def _forward(self, ctx: _Context, snapshot, request: Request, response) -> None:
        conn, head, pump = await self._exchange(ctx, snapshot, request)
        clean = False
        stream_kind = self._stream_kind(ctx.info)
        try:
            if head.status == 101:
                if request.upgrade is None:
                    self.metrics.upstream_errors_total.labels(cluster=ctx.cluster.name, reason="protocol").inc()
                    raise status.bad_gateway(ctx.cluster.name, "101 Switching Protocols to a request without Upgrade")
                await self._splice(ctx, snapshot, request, response, conn)
                return
            await response.start(head.status, self._response_headers(ctx, head))
            if stream_kind:
                self.metrics.active_streams.labels(kind=stream_kind).inc()
            if conn.response_complete and self.holder.current is snapshot:
                live = _RECEIVED    # nothing left to wait for upstream: nothing to interrupt
            else:
                live = self._open_live(ctx, snapshot, request, stream_kind or "stream")
            try:
                while not live.revoked:
                    try:
                        data = await live.interruptible(conn.read_body())
                    except Revoked:
                        break
                    except UpstreamProtocolError as exc:
                        self.metrics.upstream_errors_total.labels(cluster=ctx.cluster.name, reason="protocol").inc()
                        ctx.code = head.status
                        ctx.error = exc.reason
                        if stream_kind == "watch":
                            # a watch ends cleanly (as on a server timeout): client-go then
                            # resumes from its last resourceVersion instead of seeing an error
                            break
                        self._audit(ctx, response)
                        response.keep_alive = False
                        raise ConnectionGone("upstream failed mid-response") from None
                    if not data:
                        break
                    await response.write(data)
            finally:
                if live is not _RECEIVED:
                    self.live.close(live)
                if stream_kind:
                    self.metrics.active_streams.labels(kind=stream_kind).dec()
            if live.revoked:
                # end the body here (HTTP/1.1: the last chunk) and the connection after it;
                # the finally below aborts the upstream request
                ctx.revoked = live.revoked
                response.keep_alive = False
            ctx.code = head.status
            if not self._audit(ctx, response):
                # fail closed: a response whose audit event could not be written does not end
                # cleanly (a chunked body stays unterminated, so the client sees an error)
                response.keep_alive = False
                raise ConnectionGone("audit spool failed")
            await response.end()
            if ctx.revoked:
                return
            if pump is not None and not pump.done():
                pump.cancel()    # the response ended before the request body: do not reuse
            clean = True
        finally:
            if pump is not None and not pump.done():
                pump.cancel()
            if clean and (pump is None or (pump.done() and not pump.cancelled() and pump.exception() is None)):
                self.upstreams.release(conn)
            else:
                self.upstreams.discard(conn)

    @staticmethod
    def _response_headers(ctx: _Context, head) -> list[tuple[bytes, bytes]]:
        out_headers = hdrs.downstream_response_headers(head.headers)
        out_headers.append((REQUEST_ID_HEADER, ctx.id.encode()))
        return out_headers

    def _open_live(self, ctx: _Context, snapshot, request: Request, kind: str):
        """Register the exchange so that revocation can end it (liveexchanges.py)."""
        authorization = hdrs.header_values(request.headers, b"authorization")
        return self.live.open(snapshot, identity=ctx.identity, effective=ctx.effective,
                              impersonation=ctx.impersonation, cluster=ctx.cluster.name, info=ctx.info,
                              kind=kind, peer_cert=request.peer_cert, source=request.client[0],
                              authorization=authorization[0] if authorization else None)

    async def _splice(self, ctx: _Context, snapshot, request: Request, response, conn) -> None:
        kind = (ctx.info.subresource if ctx.info is not None and ctx.info.subresource else "upgrade")
        client_reader, client_writer = await response.upgrade(conn.raw_head)
        upstream_reader, upstream_writer = conn.detach()
        stats = SpliceStats()
        ctx.session = stats
        ctx.code = 101
        self.metrics.active_upgrades.labels(kind=kind).inc()
        live = self._open_live(ctx, snapshot, request, kind)
        ending = sessionend.for_upgrade(request.upgrade, conn.raw_head)
        try:
            if ending is None:
                # revocation cancels the splice, which closes the upstream side; the client side
                # closes when this handler returns, after the audit event is written
                await live.interruptible(splice(client_reader, client_writer, upstream_reader, upstream_writer, stats))
            else:
                # revocation ends the session at a frame boundary, telling the client why
                live.on_revoke = ending.end
                if live.revoked:          # revoked while it was being registered
                    ending.end(live.revoked, live.shown)
                await splice(client_reader, client_writer, upstream_reader, upstream_writer, stats, ending)
        except Revoked:
            pass
        finally:
            if live.revoked:      # also when the client hung up (cancelling us) after being told
                stats.ended_by = "revoked"
                ctx.revoked = live.revoked
            self.live.close(live)
            self.metrics.active_upgrades.labels(kind=kind).dec()
            if not stats.session_end:
                stats.session_end = time.time()
            self._audit(ctx, response)

    @staticmethod
    def _stream_kind(info) -> str:
        if info is None:
            return ""
        if info.verb == "watch":
            return "watch"
        if info.subresource == "log":
            return "logs"
        return ""

    # -- answers the gateway gives itself -------------------------------------------------------------
    async def _answer_status(self, ctx: _Context, response, err: StatusError) -> None:
        ctx.code = err.code
        ctx.error = err.message
        if response.started:        # too late for a Status: end the connection instead
            self._audit(ctx, response)
            raise ConnectionGone("error after the response started")
        self._audit(ctx, response)
        await response.send_status(err, extra=[(REQUEST_ID_HEADER, ctx.id.encode())])
        await response.end()

    # -- audit and metrics ------------------------------------------------------------------------------
    def _audit(self, ctx: _Context, response) -> bool:
        """Append the request's one audit event; False when the spool failed."""
        if ctx.audited:
            return True
        ctx.audited = True
        request = ctx.request
        identity = ctx.identity
        info = ctx.info
        decision = ctx.decision
        if decision is not None:
            verdict = "allow" if decision.allowed else "deny"
        elif ctx.code in (401, 403):
            verdict = "deny"
        else:
            verdict = "error"
        event: dict[str, Any] = {
            "time": _iso(ctx.wall),
            "id": ctx.id,
            "user": identity.user if identity else "",
            "groups": list(identity.groups) if identity else [],
            "component": identity.component if identity else "",
            "method": identity.method if identity else "",
            "credential_id": identity.credential_id if identity else "",
            "client": request.client[0],
            "protocol": request.protocol,
            "http_method": request.method,
            "cluster": ctx.route.cluster if ctx.route else "",
            "verb": info.verb if info else "",
            "api_group": info.api_group if info else "",
            "api_version": info.api_version if info else "",
            "resource": info.resource if info else "",
            "subresource": info.subresource if info else "",
            "namespace": info.namespace if info else "",
            "name": info.name if info else "",
            "path": ctx.route.path if ctx.route else request.target.partition("?")[0][:1024],
            "decision": verdict,
            "reason": decision.reason if decision else (ctx.error or ""),
            "binding": decision.binding if decision else "",
            "role": decision.role if decision else "",
            "decision_by": decision.decided_by() if decision else {},
            "break_glass": decision.break_glass if decision else False,
            "code": ctx.code,
            "duration_ms": round((time.monotonic() - ctx.started) * 1000, 3),
            "bytes_in": getattr(request.body, "bytes_read", 0),
            "bytes_out": getattr(response, "bytes_out", 0),
            "user_agent": (hdrs.header_value(request.headers, b"user-agent") or b"").decode("utf-8", "replace")[:512],
        }
        if ctx.impersonation is not None:
            event["impersonated_user"] = ctx.impersonation.user
            event["impersonated_groups"] = list(ctx.impersonation.groups)
            if ctx.impersonation.uid:
                event["impersonated_uid"] = ctx.impersonation.uid
        if ctx.authn_failure:
            event["authn_failure"] = ctx.authn_failure
        if ctx.error and decision is not None:
            event["error"] = ctx.error
        if request.upgrade is not None:
            event["upgrade"] = request.upgrade.decode("latin-1")
        if ctx.session is not None:
            event["session_start"] = _iso(ctx.session.session_start)
            event["session_end"] = _iso(ctx.session.session_end or time.time())
            event["bytes_in"] = ctx.session.bytes_in
            event["bytes_out"] = ctx.session.bytes_out
            event["session_ended_by"] = ctx.session.ended_by
        if ctx.revoked:   # a stream or session that revocation ended (upgrades: fields as above)
            event.setdefault("session_end", _iso(time.time()))
            event["session_ended_by"] = "revoked"
            event["revocation"] = ctx.revoked
        self._observe(ctx)
        try:
            self.audit.append(event)
        except Exception:     # the spool failing must be loud
            log.exception("audit spool append failed for request %s", ctx.id)
            return False
        return True

    def _observe(self, ctx: _Context) -> None:
        """Request metrics, recorded with the audit event (before the response completes)."""
        cluster = ctx.cluster.name if ctx.cluster is not None else ""
        verb = ctx.info.verb if ctx.info is not None else ""
        code = str(ctx.code or 0)
        self.metrics.observe_request(cluster, verb, code, time.monotonic() - ctx.started)
