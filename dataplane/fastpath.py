"""The HTTP/1.1 fast path: an allowed ordinary request without a body, relayed between the two
connections' protocol callbacks, with no task, no future and no queue per request.

    client data_received → http1 parses the head → Gateway.serve_fast: the task path's decision
        code (authn → route → attributes → impersonation → decide) → an idle pooled upstream
        connection → the request head written to it
    upstream data_received → UpstreamConnection parses → FastExchange (its ResponseSink) →
        the response head + body written to the client → audit event → end → the upstream
        connection back to the pool → the client connection's next request

Everything else (bodies, upgrades, watches and logs, refusals, no idle upstream connection, an
OIDC issuer's keys on their way) goes on in a handler task with the decision already taken, and
so does a pooled connection that the API server had closed (the task path dials afresh).

It keeps the task path's contract (pipeline._forward): one audit event before the response
ends, a response not ended when that fails or the API server breaks off mid-body, revocation
ends a response still being received (LiveExchange.on_revoke), a client that goes away aborts
the upstream exchange. Backpressure: while the client's transport buffer is full, reading from
the API server pauses (Response.on_writable resumes it).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import status
from .upstream import UpstreamConnection, UpstreamProtocolError


class FastExchange:
    """One request's upstream exchange, fed by the upstream connection (a `ResponseSink`)."""

    def __init__(self, gateway, ctx, response, conn: UpstreamConnection, spawn: Callable[[Any], None]):
        self._gw = gateway
        self._ctx = ctx
        self._response = response
        self._conn = conn
        self._spawn = spawn            # hands the request on to a handler task
        self._head = None
        self._early: list[bytes] = []  # body bytes received with the head, before it was handed over
        self._eof = False
        self._error: UpstreamProtocolError | None = None
        self._live = None
        self._done = False

    def start(self, target: str, headers: list[tuple[bytes, bytes]]) -> None:
        ctx = self._ctx
        try:
            self._conn.send_request(ctx.request.method, target, headers, sink=self)
        except UpstreamProtocolError:      # closed while idle: the task path dials afresh
            self._hand_on()
            return
        self._conn.request_complete = True           # no body to send
        self._response.on_abort = self._client_gone
        self._response.on_writable = self._conn.flow.resume_reading

    # -- ResponseSink (called by the upstream connection) ------------------------------------------
    def head_failed(self, exc: UpstreamProtocolError) -> None:
        if self._done:
            return
        if not (exc.before_response and self._conn.reused):
            self._ctx.refusal = self._bad_gateway(exc.reason)
        self._hand_on()

    def head_received(self, head) -> None:
        if self._done:
            return
        if head.status == 101:
            self._ctx.refusal = self._bad_gateway("101 Switching Protocols to a request without Upgrade")
            self._hand_on()
            return
        gw, ctx, response = self._gw, self._ctx, self._response
        self._head = head
        response.begin(head.status, gw._response_headers(ctx, head))
        if self._early:
            self._send(b"".join(self._early))      # leaves with the head
            self._early = []
        if self._error is not None:
            self._failed(self._error)
        elif self._eof and gw.holder.current is ctx.snapshot:
            self._complete()     # received whole: nothing left for a revocation to interrupt
        else:
            response.flush_head()
            self._live = gw._open_live(ctx, ctx.snapshot, ctx.request, "stream")
            self._live.on_revoke = self._revoked
            if self._live.revoked or self._eof:
                self._complete()

    def feed(self, data: bytes) -> None:
        if self._done:
            return
        if self._head is None:
            self._early.append(data)
        else:
            self._send(data)

    def feed_eof(self) -> None:
        if self._head is None:
            self._eof = True
        else:
            self._complete()

    def set_exception(self, exc: UpstreamProtocolError) -> None:
        if self._head is None:
            self._error = exc
        else:
            self._failed(exc)

    # -- outcomes ------------------------------------------------------------------------------------
    def _send(self, data: bytes) -> None:
        self._response.send(data)
        if self._response.writes_paused:
            self._conn.flow.pause_reading()      # resumed by on_writable

    def _revoked(self, reason: str, shown: str) -> None:
        self._complete()

    def _complete(self) -> None:
        """The response ends (or revocation ends it): audit, end, the connection to the pool."""
        if self._done:
            return
        self._done = True
        gw, ctx, response, conn = self._gw, self._ctx, self._response, self._conn
        if self._live is not None:
            gw.live.close(self._live)
            if self._live.revoked:
                # end the body here and the client connection after it; the upstream exchange
                # is cut (as pipeline._forward does)
                ctx.revoked = self._live.revoked
                response.keep_alive = False
        ctx.code = self._head.status
        gw.metrics.requests_in_flight.dec()
        if not gw._audit(ctx, response):
            # fail closed: a response whose audit event could not be written does not end cleanly
            response.keep_alive = False
            gw.upstreams.discard(conn)
        else:
            response.end_now()
            if ctx.revoked or not conn.response_complete:
                gw.upstreams.discard(conn)
            else:
                conn.flow.resume_reading()       # it may have paused on the last piece
                gw.upstreams.release(conn)
        response.exchange_done()

    def _failed(self, exc: UpstreamProtocolError) -> None:
        """The API server broke off mid-response: the client connection closes unended."""
        if self._done:
            return
        self._done = True
        gw, ctx, response = self._gw, self._ctx, self._response
        gw.metrics.upstream_errors_total.labels(cluster=ctx.cluster.name, reason="protocol").inc()
        if self._live is not None:
            gw.live.close(self._live)
        ctx.code = self._head.status
        ctx.error = exc.reason
        gw._audit(ctx, response)
        response.keep_alive = False
        gw.metrics.requests_in_flight.dec()
        gw.upstreams.discard(self._conn)
        response.exchange_done()

    def _client_gone(self) -> None:
        if self._done:
            return
        self._done = True
        gw, ctx, response = self._gw, self._ctx, self._response
        if self._live is not None:
            gw.live.close(self._live)
        gw.upstreams.discard(self._conn)
        ctx.error = ctx.error or "client went away"
        ctx.code = ctx.code or response.status or 499
        gw.metrics.requests_in_flight.dec()
        gw._audit(ctx, response)
        # the client connection is closing: there is no next request to go on with

    def _bad_gateway(self, reason: str) -> status.StatusError:
        self._gw.metrics.upstream_errors_total.labels(cluster=self._ctx.cluster.name, reason="protocol").inc()
        return status.bad_gateway(self._ctx.cluster.name, reason)

    def _hand_on(self) -> None:
        """Before any response: the task path takes the request over (with `ctx.refusal`, or to
        send it again on another connection)."""
        self._done = True
        self._gw.upstreams.discard(self._conn)
        self._response.on_abort = self._response.on_writable = None
        self._spawn(self._ctx)
