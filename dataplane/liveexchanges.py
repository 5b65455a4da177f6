"""Live long-running exchanges (streamed responses, upgrade sessions), kept by the identity that
opened them, so that revocation ends them instead of letting them run on the decision they
started with ("revocation beats every cache", DESIGN.md).

The registry follows the worker's SnapshotHolder. On every update (a new snapshot, or a revocation
delta laid over the current one) each distinct identity is authenticated again with the new
snapshot's authenticator, and each of its exchanges has its decision taken again for the same
attributes. An exchange that fails either is revoked: its task is interrupted where it waits on
the upstream (never in the middle of a write downstream, so no frame or chunk is torn) and the
pipeline then ends it cleanly. The cost is one authentication per live identity and one cached
decision per live exchange per update; nothing per byte. A snapshot that turns a cluster's
`kubectl_enabled` off (or makes it read-only) ends its exchanges the same way: the new decision
refuses them.

Decisions can also change with the clock alone (a time-bound grant or break-glass activation that
expires, a schedule that closes): while the current policy has such bindings and exchanges are
live, they are checked again every TIME_RECHECK_INTERVAL seconds, so an expired grant ends its
streams within that bound and not only at the next snapshot.

It also counts each principal's concurrent upgrade sessions and watches, for the caps of the
snapshot's settings (max_exec_sessions, max_watches).
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .identity import AuthenticationError, Identity

log = logging.getLogger("accesspoint.liveexchanges")

T = TypeVar("T")

TIME_RECHECK_INTERVAL = 1.0   # seconds; one cached decision per live exchange each time


class Revoked(Exception):
    """Raised where a revoked exchange was waiting on its upstream."""


@dataclass(eq=False)
class LiveExchange:
    identity: Identity                  # the caller, as authenticated
    effective: Identity                 # whom the request acts as (differs under impersonation)
    impersonation: Any                  # headers.ImpersonationRequest or None
    cluster: str
    info: Any                           # the request attributes the decision was taken for
    kind: str                           # watch, logs, stream, or the upgrade's subresource
    task: asyncio.Task
    source: str = ""                    # the caller's address: policy conditions may read it
    peer_cert: Any = field(default=None, repr=False)
    authorization: bytes | None = field(default=None, repr=False)   # a secret: kept, never shown
    revoked: str = ""                   # why it was revoked ("" while it may run)
    shown: str = ""                     # what the caller may be told of why (no policy internals)
    # an exchange that ends itself, telling the client why (sessionend.py), instead of being
    # interrupted: called with (revoked, shown)
    on_revoke: Callable[[str, str], None] | None = None
    _waiting: bool = False

    async def interruptible(self, awaitable: Awaitable[T]) -> T:
        """Await `awaitable` (a read from the upstream, or a whole splice) in a way that a
        revocation may cut short: it then raises Revoked."""
        if self.revoked:   # revoked before it started (see LiveExchanges.open)
            if asyncio.iscoroutine(awaitable):
                awaitable.close()
            raise Revoked(self.revoked)
        self._waiting = True
        try:
            return await awaitable
        except asyncio.CancelledError:
            # ours only when nobody else cancelled the task as well (then that one wins)
            if self.revoked and self.task.uncancel() == 0:
                raise Revoked(self.revoked) from None
            raise
        finally:
            self._waiting = False

    def _revoke(self, reason: str, shown: str) -> None:
        self.revoked = reason
        self.shown = shown
        if self.on_revoke is not None:
            self.on_revoke(reason, shown)
        elif self._waiting:
            self.task.cancel()
        # not waiting: it is writing downstream and checks `revoked` before it reads again


def _key(identity: Identity) -> tuple:
    return identity.user, identity.groups, identity.credential_id, identity.method


class LiveExchanges:
    """The live exchanges of one worker; `check` runs on every swap of `holder`."""

    def __init__(self, holder, metrics, oidc=None):
        self._holder = holder
        self._metrics = metrics
        self._oidc = oidc                 # the worker's OIDCVerifier (with --oidc-issuer-url)
        self._by_identity: dict[tuple, set[LiveExchange]] = {}
        self._slots: dict[tuple[str, str], int] = {}      # (principal, "session" | "watch") → in use
        self._recheck: asyncio.TimerHandle | None = None
        holder.subscribe(self.check)

    def open(self, snapshot, *, identity: Identity, effective: Identity, impersonation, cluster: str, info,
             kind: str, peer_cert, authorization: bytes | None, source: str = "") -> LiveExchange:
        """Register the current task's exchange, decided with `snapshot`."""
        live = LiveExchange(identity, effective, impersonation, cluster, info, kind, asyncio.current_task(),
                            source=source, peer_cert=peer_cert, authorization=authorization)
        self._by_identity.setdefault(_key(identity), set()).add(live)
        current = self._holder.current
        if current is not None and current is not snapshot:
            # the snapshot changed while this request waited for its upstream: catch up now
            self._check_identity(current, {live})
        self._schedule_recheck()
        return live

    def _schedule_recheck(self) -> None:
        current = self._holder.current
        if self._recheck is None and current is not None and current.policy.time_dependent:
            self._recheck = asyncio.get_running_loop().call_later(TIME_RECHECK_INTERVAL, self._recheck_now)

    def _recheck_now(self) -> None:
        self._recheck = None
        current = self._holder.current
        if current is None or not self._by_identity:
            return   # the next open schedules again
        self.check(current)   # which schedules the next look

    def close(self, live: LiveExchange) -> None:
        key = _key(live.identity)
        exchanges = self._by_identity.get(key)
        if exchanges is not None:
            exchanges.discard(live)
            if not exchanges:
                del self._by_identity[key]

    def take_slot(self, principal: str, kind: str, limit: int) -> tuple[str, str] | None:
        """Count one more `kind` ("session" or "watch") for `principal`; None, counting nothing,
        when `limit` (> 0) are already in use. Give the slot back with `release_slot`."""
        slot = (principal, kind)
        in_use = self._slots.get(slot, 0)
        if limit > 0 and in_use >= limit:
            return None
        self._slots[slot] = in_use + 1
        return slot

    def release_slot(self, slot: tuple[str, str]) -> None:
        left = self._slots[slot] - 1
        if left:
            self._slots[slot] = left
        else:
            del self._slots[slot]

    def __len__(self) -> int:
        return sum(len(exchanges) for exchanges in self._by_identity.values())

    def check(self, snapshot) -> None:
        for exchanges in list(self._by_identity.values()):
            self._check_identity(snapshot, exchanges)
        if self._by_identity:   # (exchanges live only on a running loop)
            self._schedule_recheck()

    def _check_identity(self, snapshot, exchanges: set[LiveExchange]) -> None:
        """Exchanges sharing one identity share its credential: authenticate once for all."""
        running = [live for live in exchanges if not live.revoked]
        if not running:
            return
        first = running[0]
        try:
            caller = snapshot.authenticator.authenticate(first.peer_cert, first.authorization, self._oidc)
        except AuthenticationError as exc:
            shown = "credentials revoked" if exc.reason == "revoked" else "credentials no longer accepted"
            for live in running:
                self._end(live, f"authentication refused: {exc.reason}", shown)
            return
        for live in running:
            refusal = _refusal(snapshot, caller, live)
            if refusal:
                self._end(live, *refusal)

    def _end(self, live: LiveExchange, reason: str, shown: str) -> None:
        log.info("ending %s of user %r on cluster %r: %s", live.kind, live.identity.user, live.cluster, reason)
        self._metrics.streams_revoked_total.labels(kind=live.kind).inc()
        live._revoke(reason, shown)


def _refusal(snapshot, caller: Identity, live: LiveExchange) -> tuple[str, str] | None:
    """Why `live` may not go on under `snapshot`, as (audited reason, what the caller may be
    told); None when it may."""
    cluster = snapshot.clusters.get(live.cluster)
    if cluster is None:
        return "cluster removed", "cluster removed"
    effective = caller
    if live.impersonation is not None:
        for resource, name, namespace in live.impersonation.checks():
            if not snapshot.policy.decide_impersonation(caller, cluster, resource, name, namespace,
                                                        source=live.source).allowed:
                return "impersonation no longer allowed", "impersonation no longer allowed"
        effective = live.effective
    decision = snapshot.policy.decide(effective, cluster, live.info, source=live.source)
    if decision.allowed:
        return None
    return f"no longer allowed: {decision.reason}", decision.reason if decision.explained else "no longer allowed"
