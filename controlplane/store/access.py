"""What people do for themselves: access requests and their decisions, break-glass activations,
console sessions. Each is one revision-bumping transaction of the Store (mixed into it), checked
against the settings read in that same transaction, so a concurrent settings change (break-glass
disabled, approver group changed) is either wholly before or wholly after.
"""
from __future__ import annotations

import datetime
import logging
from dataclasses import replace
from typing import Any

from ..errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from ..model import AccessRequest, Binding, ClusterSelector, Grant, Revocation, Session, Settings, Subject, utc_text
from . import tables
from .tables import Table

log = logging.getLogger("accesspoint.controlplane.alerts")


def _fetch(tx: Any, table: Table, key: str) -> Any:
    row = tx.one(f"SELECT {', '.join(table.columns)} FROM {table.name} WHERE {table.columns[0]} = ?", (key,))
    if row is None:
        raise NotFound(f"{table.noun} {key!r} does not exist")
    return table.from_row(row)


def _exists(tx: Any, table: Table, key: str) -> bool:
    return tx.one(f"SELECT 1 FROM {table.name} WHERE {table.columns[0]} = ?", (key,)) is not None


def _later(moment: str, seconds: int) -> str:
    return utc_text(datetime.datetime.fromisoformat(moment) + datetime.timedelta(seconds=seconds))


def _write_grant_binding(w: Any, name: str, user: str, role: str, cluster: str, seconds: int,
                         grant: Grant) -> Binding:
    """The time-bound binding an approval or activation writes: from commit time, for `seconds`."""
    if not _exists(w.tx, tables.ROLES, role):
        raise FailedPrecondition(f"role {role!r} does not exist")
    if _exists(w.tx, tables.BINDINGS, name):
        raise AlreadyExists(f"binding {name!r} already exists")
    binding = Binding(name=name, role=role, subjects=(Subject("user", user),),
                      clusters=ClusterSelector(names=(cluster,)), valid_from=w.committed_at,
                      valid_until=_later(w.committed_at, seconds), grant=grant, revision=w.revision)
    w.insert(tables.BINDINGS, binding)
    return binding


def live_session(w: Any, session_id: str, user: str) -> Session:
    """The session a new credential binds to: it must be active and the credential's user's."""
    session = _fetch(w.tx, tables.SESSIONS, session_id)
    if session.user != user:
        raise FailedPrecondition(f"session {session_id!r} belongs to another user")
    if session.ended_at:
        raise FailedPrecondition(f"session {session_id!r} has ended ({session.end_reason})")
    if session.idle_until() <= w.committed_at:
        raise FailedPrecondition(f"session {session_id!r} has timed out")
    return session


class AccessMixin:
    """Store methods (this class is only mixed into controlplane.store.Store)."""

    # -- access requests ---------------------------------------------------------------------------

    def create_access_request(self, actor: str, request: AccessRequest) -> AccessRequest:
        def work(w: Any) -> AccessRequest:
            cap = _settings(w).access_request_max_duration
            if request.duration > cap:
                raise InvalidArgument("duration", f"at most {cap} s (settings.access_request_max_duration)")
            if not _exists(w.tx, tables.ROLES, request.role):
                raise NotFound(f"role {request.role!r} does not exist")
            if not _exists(w.tx, tables.CLUSTERS, request.cluster):
                raise NotFound(f"cluster {request.cluster!r} does not exist")
            created = replace(request, created_at=w.committed_at, revision=w.revision)
            w.insert(tables.ACCESS_REQUESTS, created)
            return created
        return self._mutate(actor, "access_requests.create", f"access_request/{request.id}", work)[1]

    def decide_access_request(self, actor: str, request_id: str, approver: str, approver_groups: tuple[str, ...],
                              approve: bool, reason: str) -> AccessRequest:
        """Approve (writing the time-bound binding) or deny a pending request, as `approver`."""
        def work(w: Any) -> AccessRequest:
            group = _settings(w).approver_group
            if not group:
                raise FailedPrecondition("no approver group is set (settings.approver_group)")
            if group not in approver_groups:
                raise PermissionDenied(f"{approver!r} is not a member of the approver group {group!r}")
            request = _fetch(w.tx, tables.ACCESS_REQUESTS, request_id)
            if request.user == approver:
                raise PermissionDenied("a requester cannot decide their own access request")
            if request.state != "pending":
                raise FailedPrecondition(f"access request {request_id!r} is already {request.state}")
            decided = replace(request, state="approved" if approve else "denied", decided_by=approver,
                              decided_at=w.committed_at, decision_reason=reason, revision=w.revision)
            if approve:
                binding = _write_grant_binding(w, request.id, request.user, request.role, request.cluster,
                                               request.duration, Grant("access_request", request.id, request.reason))
                decided = replace(decided, binding=binding.name, expires_at=binding.valid_until)
            w.tx.run("DELETE FROM access_requests WHERE id = ?", (request_id,))
            w.insert(tables.ACCESS_REQUESTS, decided)
            return decided
        action = "access_requests.approve" if approve else "access_requests.deny"
        return self._mutate(actor, action, f"access_request/{request_id}", work)[1]

    def access_requests(self) -> list[AccessRequest]:
        columns = ", ".join(tables.ACCESS_REQUESTS.columns)
        with self._read() as tx:
            rows = tx.all(f"SELECT {columns} FROM access_requests ORDER BY revision")
        return [tables.ACCESS_REQUESTS.from_row(row) for row in rows]

    # -- break-glass -------------------------------------------------------------------------------

    def activate_break_glass(self, actor: str, activation_id: str, user: str, groups: tuple[str, ...],
                             cluster: str, duration: int | None, reason: str) -> Binding:
        """Write the break-glass binding for `user` on `cluster`, within the policy's cap; an alert
        (the audit row and a WARNING log line) says who, where and why."""
        def work(w: Any) -> Binding:
            settings = _settings(w)
            policy = settings.break_glass
            if not settings.break_glass_enabled:
                raise FailedPrecondition("break-glass is disabled fleet-wide (settings.break_glass_enabled)")
            if not policy.role:
                raise FailedPrecondition("no break-glass policy is set (settings.break_glass.role)")
            if not policy.group or policy.group not in groups:
                raise PermissionDenied(f"break-glass needs membership of the group {policy.group!r}")
            seconds = policy.max_duration if duration is None else duration
            if seconds > policy.max_duration:
                raise InvalidArgument("duration", f"at most {policy.max_duration} s (settings.break_glass.max_duration)")
            target = _fetch(w.tx, tables.CLUSTERS, cluster)
            if not policy.clusters.selects(target):
                raise PermissionDenied(f"cluster {cluster!r} is not one the break-glass policy covers")
            return _write_grant_binding(w, activation_id, user, policy.role, cluster, seconds,
                                        Grant("break_glass", activation_id, reason))
        revision, binding = self._mutate(actor, "break_glass.activate", f"binding/{activation_id}", work)
        log.warning("BREAK-GLASS activated: %s by %r on cluster %r with role %r until %s (revision %d): %r",
                    activation_id, user, cluster, binding.role, binding.valid_until, revision, reason)
        return binding

    # -- console sessions --------------------------------------------------------------------------

    def create_session(self, actor: str, session_id: str, user: str) -> Session:
        def work(w: Any) -> Session:
            session = Session(id=session_id, user=user, created_at=w.committed_at, last_seen_at=w.committed_at,
                              idle_timeout=_settings(w).session_idle_timeout, revision=w.revision)
            w.insert(tables.SESSIONS, session)
            return session
        return self._mutate(actor, "sessions.create", f"session/{session_id}", work)[1]

    def touch_session(self, session_id: str) -> Session:
        """Record activity: not desired state, so no revision (a console touches often)."""
        with self._transaction(self._backend.begin_write) as tx:
            now = self._clock()
            session = _fetch(tx, tables.SESSIONS, session_id)
            if session.ended_at:
                raise FailedPrecondition(f"session {session_id!r} has ended ({session.end_reason})")
            if session.idle_until() <= now:
                raise FailedPrecondition(f"session {session_id!r} has timed out")
            tx.run("UPDATE sessions SET last_seen_at = ? WHERE id = ? AND last_seen_at < ?", (now, session_id, now))
        return replace(session, last_seen_at=max(now, session.last_seen_at))

    def end_session(self, actor: str, session_id: str, reason: str) -> tuple[int, Revocation]:
        """End a live session and revoke it (every credential bound to it stops working)."""
        def work(w: Any) -> Revocation:
            session = _fetch(w.tx, tables.SESSIONS, session_id)
            if session.ended_at:
                raise FailedPrecondition(f"session {session_id!r} has already ended ({session.end_reason})")
            if reason == "idle timeout" and session.idle_until() > w.committed_at:
                raise FailedPrecondition(f"session {session_id!r} was used since")  # a touch won the race
            w.tx.run("UPDATE sessions SET ended_at = ?, end_reason = ?, revision = ? WHERE id = ?",
                     (w.committed_at, reason, w.revision, session_id))
            revocation = Revocation("session", session_id, reason, w.revision)
            # An operator may have revoked the session directly already: one row is enough.
            w.tx.run("INSERT INTO revocations (kind, value, reason, revision) VALUES (?, ?, ?, ?) "
                     "ON CONFLICT (kind, value) DO NOTHING", ("session", session_id, reason, w.revision))
            return revocation
        return self._mutate(actor, "sessions.end", f"session/{session_id}", work)

    def sessions(self) -> list[Session]:
        columns = ", ".join(tables.SESSIONS.columns)
        with self._read() as tx:
            rows = tx.all(f"SELECT {columns} FROM sessions ORDER BY created_at, id")
        return [tables.SESSIONS.from_row(row) for row in rows]

    def idle_sessions(self) -> list[str]:
        """Ids of live sessions whose idle timeout has passed (the sweep ends them)."""
        now = self._clock()
        with self._read() as tx:
            rows = tx.all(f"SELECT {', '.join(tables.SESSIONS.columns)} FROM sessions WHERE ended_at = ''")
        return [s.id for s in map(tables.SESSIONS.from_row, rows) if s.idle_until() <= now]


def read_settings(tx: Any) -> Settings:
    value, revision = tx.one("SELECT value, revision FROM settings WHERE id = 1")
    return tables.settings_from_json(value, revision)


def _settings(w: Any) -> Settings:
    return read_settings(w.tx)
