"""The store: desired state and the revision counter, one code path for SQLite and PostgreSQL.

Every mutation is one transaction: bump the revision first (on PostgreSQL that row lock queues
writers from every replica, and each later statement in READ COMMITTED sees what the previous
writer committed), check preconditions, write, record the audit row, commit. A failed check
rolls back, the bump included, so revisions are strictly increasing and gap-free.
"""
from __future__ import annotations

import datetime
import json
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Callable, Iterator, TypeVar

from ..errors import AlreadyExists, FailedPrecondition, NotFound
from ..model import (AuditEntry, Binding, Certificate, Cluster, EventQuery, GatewayEvent, Revocation, Role,
                     ServiceIdentity, Settings, State, Token, utc_text)
from . import tables
from .access import AccessMixin, live_session
from .agents import AgentMixin, live_agent_certificates
from .access import read_settings as _settings
from .backends import Backend, Cursor, backend_for
from .migrations import MIGRATIONS
from .tables import Table

T = TypeVar("T")


def _now() -> str:
    return utc_text(datetime.datetime.now(datetime.timezone.utc))


class Transaction:
    """A cursor that speaks the store's `?` SQL on either backend."""

    def __init__(self, cursor: Cursor, backend: Backend):
        self._cursor = cursor
        self._backend = backend

    def run(self, sql: str, params: tuple[Any, ...] = ()) -> Cursor:
        self._cursor.execute(self._backend.sql(sql), params)
        return self._cursor

    def one(self, sql: str, params: tuple[Any, ...] = ()) -> tuple | None:
        row = self.run(sql, params).fetchone()
        return tuple(row) if row is not None else None

    def all(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple]:
        return [tuple(row) for row in self.run(sql, params).fetchall()]


class Store(AccessMixin, AgentMixin):
    def __init__(self, backend: Backend, clock: Callable[[], str] = _now):
        self._backend = backend
        self._clock = clock

    # -- transactions -----------------------------------------------------------------------------

    @contextmanager
    def _transaction(self, begin: str) -> Iterator[Transaction]:
        conn = self._backend.connection()
        cursor = conn.cursor()
        cursor.execute(begin)
        try:
            yield Transaction(cursor, self._backend)
        except BaseException:
            self._backend.rollback(conn)
            raise
        cursor.execute("COMMIT")

    def _read(self) -> Any:
        return self._transaction(self._backend.begin_read)

    def _mutate(self, actor: str, action: str, target: str, work: Callable[[Transaction], T]) -> tuple[int, T]:
        """Run `work` in one write transaction that bumps the revision and audits the change."""
        with self._transaction(self._backend.begin_write) as tx:
            # Never step the commit time backwards, even if this replica's clock is behind.
            now = self._clock()
            revision, committed_at = tx.one(
                "UPDATE revision SET value = value + 1, "
                "committed_at = CASE WHEN committed_at > ? THEN committed_at ELSE ? END "
                "WHERE id = 1 RETURNING value, committed_at", (now, now))
            result = work(_Writer(tx, revision, committed_at))
            tx.run("INSERT INTO audit (revision, actor, action, target, at) VALUES (?, ?, ?, ?, ?)",
                   (revision, actor, action, target, committed_at))
        return revision, result

    # -- schema -----------------------------------------------------------------------------------

    def migrate(self) -> list[int]:
        """Apply the migrations this database lacks, in order; returns the versions applied."""
        applied: list[int] = []
        with self._transaction(self._backend.begin_write) as tx:
            self._backend.lock_migrations(tx)
            tx.run("CREATE TABLE IF NOT EXISTS schema_migrations ("
                   "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)")
            done = {row[0] for row in tx.all("SELECT version FROM schema_migrations")}
            known = {version for version, _, _ in MIGRATIONS}
            if done - known:
                raise RuntimeError(f"the database has schema version {max(done)}, newer than this "
                                   f"control plane knows ({max(known)}): upgrade the control plane")
            for version, name, statements in MIGRATIONS:
                if version in done:
                    continue
                for statement in statements:
                    tx.run(statement)
                tx.run("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                       (version, name, self._clock()))
                applied.append(version)
        return applied

    def schema_versions(self) -> list[int]:
        with self._read() as tx:
            return [row[0] for row in tx.all("SELECT version FROM schema_migrations ORDER BY version")]

    def close(self) -> None:
        self._backend.close()

    # -- reads ------------------------------------------------------------------------------------

    def revision(self) -> int:
        with self._read() as tx:
            return tx.one("SELECT value FROM revision WHERE id = 1")[0]

    def state(self) -> State:
        """All of the desired state at one revision, in name order (the snapshot's input)."""
        with self._read() as tx:
            revision, committed_at = tx.one("SELECT value, committed_at FROM revision WHERE id = 1")
            return State(
                revision=revision, committed_at=committed_at,
                clusters=tuple(_list(tx, tables.CLUSTERS)), roles=tuple(_list(tx, tables.ROLES)),
                bindings=tuple(_list(tx, tables.BINDINGS)), tokens=tuple(_list(tx, tables.TOKENS)),
                revocations=tuple(_revocations(tx)), settings=_settings(tx),
                agent_certificates=tuple(live_agent_certificates(tx, committed_at)))

    def get(self, table: Table, name: str) -> Any:
        with self._read() as tx:
            return _get(tx, table, name)

    def list(self, table: Table) -> list[Any]:
        with self._read() as tx:
            return _list(tx, table)

    def person_for_token(self, sha256: str) -> tuple[str, tuple[str, ...]] | None:
        """(user, groups) of a person's gateway token while neither it nor its user, groups or
        session is revoked; None for anything else (service tokens included)."""
        with self._read() as tx:
            row = tx.one("SELECT user_name, groups_json, session FROM tokens "
                         "WHERE sha256 = ? AND revoked = 0 AND component = ''", (sha256,))
            if row is None:
                return None
            user, groups, session = row[0], tuple(json.loads(row[1])), row[2]
            names = [("user", user), ("session", session), *(("group", group) for group in groups)]
            clause = " OR ".join("(kind = ? AND value = ?)" for _ in names)
            if tx.one(f"SELECT 1 FROM revocations WHERE {clause}", tuple(v for pair in names for v in pair)):
                return None
        return user, groups

    def settings(self) -> Settings:
        with self._read() as tx:
            return _settings(tx)

    def revocations(self) -> list[Revocation]:
        with self._read() as tx:
            return _revocations(tx)

    def audit(self, since_revision: int = 0) -> list[AuditEntry]:
        with self._read() as tx:
            rows = tx.all("SELECT revision, actor, action, target, at FROM audit WHERE revision > ? "
                          "ORDER BY revision", (since_revision,))
        return [AuditEntry(*row) for row in rows]

    # -- mutations: clusters, roles, bindings, service identities ------------------------------------

    def create(self, actor: str, table: Table, obj: Any, check: Callable[["_Writer"], None] | None = None) -> int:
        def work(w: _Writer) -> None:
            if _get(w.tx, table, obj.name, missing_ok=True) is not None:
                raise AlreadyExists(f"{table.noun} {obj.name!r} already exists")
            if check:
                check(w)
            w.insert(table, obj)
        return self._mutate(actor, f"{table.name}.create", f"{table.noun}/{obj.name}", work)[0]

    def update(self, actor: str, table: Table, obj: Any, expected_revision: int = 0,
               check: Callable[["_Writer"], None] | None = None) -> int:
        def work(w: _Writer) -> None:
            _check_expected(table, _get(w.tx, table, obj.name), expected_revision)
            if check:
                check(w)
            w.tx.run(f"DELETE FROM {table.name} WHERE {table.columns[0]} = ?", (obj.name,))
            w.insert(table, obj)
        return self._mutate(actor, f"{table.name}.update", f"{table.noun}/{obj.name}", work)[0]

    def delete(self, actor: str, table: Table, name: str, expected_revision: int = 0,
               check: Callable[["_Writer"], None] | None = None) -> int:
        def work(w: _Writer) -> None:
            _check_expected(table, _get(w.tx, table, name), expected_revision)
            if check:
                check(w)
            w.tx.run(f"DELETE FROM {table.name} WHERE {table.columns[0]} = ?", (name,))
        return self._mutate(actor, f"{table.name}.delete", f"{table.noun}/{name}", work)[0]

    def register_cluster(self, actor: str, cluster: Cluster) -> int:
        return self.create(actor, tables.CLUSTERS, cluster)

    def update_cluster(self, actor: str, cluster: Cluster, expected_revision: int = 0) -> int:
        return self.update(actor, tables.CLUSTERS, cluster, expected_revision)

    def deregister_cluster(self, actor: str, name: str, expected_revision: int = 0) -> int:
        return self.delete(actor, tables.CLUSTERS, name, expected_revision, lambda w: self.retire_agents(w, name))

    def create_role(self, actor: str, role: Role) -> int:
        return self.create(actor, tables.ROLES, role)

    def update_role(self, actor: str, role: Role, expected_revision: int = 0) -> int:
        return self.update(actor, tables.ROLES, role, expected_revision)

    def delete_role(self, actor: str, name: str, expected_revision: int = 0) -> int:
        def not_bound(w: _Writer) -> None:
            users = [row[0] for row in w.tx.all("SELECT name FROM bindings WHERE role = ? ORDER BY name", (name,))]
            if users:
                raise FailedPrecondition(f"role {name!r} is used by binding(s) {', '.join(users)}")
        return self.delete(actor, tables.ROLES, name, expected_revision, not_bound)

    def create_binding(self, actor: str, binding: Binding) -> int:
        return self.create(actor, tables.BINDINGS, binding, _role_exists(binding))

    def update_binding(self, actor: str, binding: Binding, expected_revision: int = 0) -> int:
        def checks(w: _Writer) -> None:
            current = _get(w.tx, tables.BINDINGS, binding.name)
            if current.grant.kind != "binding":
                # Its window and subject are what an approver or the break-glass policy allowed.
                raise FailedPrecondition(f"binding {binding.name!r} was written by {current.grant.kind} "
                                         f"{current.grant.id!r}: it cannot be changed, only deleted")
            _role_exists(binding)(w)
        return self.update(actor, tables.BINDINGS, binding, expected_revision, checks)

    def delete_binding(self, actor: str, name: str, expected_revision: int = 0) -> int:
        return self.delete(actor, tables.BINDINGS, name, expected_revision)

    def create_service_identity(self, actor: str, service: ServiceIdentity) -> int:
        return self.create(actor, tables.SERVICE_IDENTITIES, service)

    def delete_service_identity(self, actor: str, name: str) -> int:
        def no_live_tokens(w: _Writer) -> None:
            if w.tx.one("SELECT id FROM tokens WHERE component = ? AND revoked = 0", (name,)):
                raise FailedPrecondition(f"service identity {name!r} has unrevoked tokens: revoke them first")
        return self.delete(actor, tables.SERVICE_IDENTITIES, name, 0, no_live_tokens)

    def update_settings(self, actor: str, settings: Settings, expected_revision: int = 0) -> int:
        def work(w: _Writer) -> None:
            current = _settings(w.tx)
            if expected_revision and current.revision != expected_revision:
                raise FailedPrecondition(f"settings were changed at revision {current.revision}, "
                                         f"not {expected_revision}: read them again")
            w.tx.run("UPDATE settings SET value = ?, revision = ? WHERE id = 1",
                     (tables.settings_to_json(settings), w.revision))
        return self._mutate(actor, "settings.update", "settings", work)[0]

    # -- mutations: tokens and revocations ---------------------------------------------------------------

    def issue_token(self, actor: str, token: Token) -> Token:
        """Store a token (its hash); for a service token, user and groups come from the identity.
        Returns the token as stored."""
        def work(w: _Writer) -> Token:
            issued = token
            if token.component:
                service = _get(w.tx, tables.SERVICE_IDENTITIES, token.component, missing_ok=True)
                if service is None:
                    raise FailedPrecondition(f"service identity {token.component!r} does not exist")
                issued = Token(id=token.id, sha256=token.sha256, user=service.user, groups=service.groups,
                               component=service.name, description=token.description, channel=token.channel)
            if token.session:
                live_session(w, token.session, issued.user)
            issued = replace(issued, revision=w.revision)
            w.insert(tables.TOKENS, issued)
            return issued
        return self._mutate(actor, "tokens.issue", f"token/{token.id}", work)[1]

    def revoke(self, actor: str, revocation: Revocation) -> int:
        """Record a revocation; revoking a token also marks it revoked (it leaves the snapshot)."""
        def work(w: _Writer) -> None:
            if w.tx.one("SELECT 1 FROM revocations WHERE kind = ? AND value = ?",
                        (revocation.kind, revocation.value)):
                raise AlreadyExists(f"{revocation.kind} {revocation.value!r} is already revoked")
            if revocation.kind == "token":
                if _get(w.tx, tables.TOKENS, revocation.value, missing_ok=True) is None:
                    raise NotFound(f"token {revocation.value!r} does not exist")
                w.tx.run("UPDATE tokens SET revoked = 1 WHERE id = ?", (revocation.value,))
            w.tx.run("INSERT INTO revocations (kind, value, reason, revision) VALUES (?, ?, ?, ?)",
                     (revocation.kind, revocation.value, revocation.reason, w.revision))
        return self._mutate(actor, "revocations.revoke", f"{revocation.kind}/{revocation.value}", work)[0]

    # -- issued client certificates ------------------------------------------------------------------

    def record_certificate(self, actor: str, certificate: Certificate) -> int:
        """Record an issued certificate; NotFound if its cluster is not registered."""
        def work(w: _Writer) -> None:
            if _get(w.tx, tables.CLUSTERS, certificate.cluster, missing_ok=True) is None:
                raise NotFound(f"cluster {certificate.cluster!r} does not exist")
            if certificate.session:
                live_session(w, certificate.session, certificate.user)
            w.insert(tables.CERTIFICATES, certificate)
        return self._mutate(actor, "certificates.issue", f"certificate/{certificate.serial}", work)[0]

    def certificates(self) -> list[Certificate]:
        """Every recorded certificate, oldest first, marked revoked where a revocation names it."""
        columns = ", ".join(f"c.{column}" for column in tables.CERTIFICATES.columns)
        with self._read() as tx:
            rows = tx.all(f"SELECT {columns}, r.value FROM certificates c LEFT JOIN revocations r "
                          "ON r.kind = 'cert_serial' AND r.value = c.serial ORDER BY c.revision")
        return [replace(tables.CERTIFICATES.from_row(row[:-1]), revoked=row[-1] is not None) for row in rows]

    # -- gateway audit events: a record of what happened, not desired state (no revision) ---------------

    def ingest_audit_events(self, events: list[GatewayEvent]) -> int:
        """Insert in one transaction, skipping ids already stored; returns how many were new."""
        inserted = 0
        with self._transaction(self._backend.begin_write) as tx:
            for e in events:
                cursor = tx.run("INSERT INTO audit_events (id, time, user_name, cluster, verb, decision, code, event) "
                                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                                (e.id, e.time, e.user, e.cluster, e.verb, e.decision, e.code, e.event))
                inserted += cursor.rowcount
        return inserted

    def audit_events(self, query: EventQuery) -> list[GatewayEvent]:
        """Events matching every filter of `query`, newest first."""
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (("user_name", query.user), ("cluster", query.cluster), ("verb", query.verb),
                              ("decision", query.decision)):
            if value:
                clauses.append(f"{column} = ?")
                params.append(value)
        if query.since:
            clauses.append("time >= ?")
            params.append(query.since)
        if query.until:
            clauses.append("time < ?")
            params.append(query.until)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._read() as tx:
            rows = tx.all("SELECT id, time, user_name, cluster, verb, decision, code, event FROM audit_events"
                          f"{where} ORDER BY time DESC, id DESC LIMIT ?", (*params, query.limit))
        return [GatewayEvent(*row) for row in rows]


class _Writer:
    """What a mutation's work sees: the transaction and the revision it is producing."""

    def __init__(self, tx: Transaction, revision: int, committed_at: str):
        self.tx = tx
        self.revision = revision
        self.committed_at = committed_at

    def insert(self, table: Table, obj: Any) -> None:
        marks = ", ".join("?" for _ in table.columns)
        self.tx.run(f"INSERT INTO {table.name} ({', '.join(table.columns)}) VALUES ({marks})",
                    table.row(obj, self.revision))


def _get(tx: Transaction, table: Table, name: str, missing_ok: bool = False) -> Any:
    row = tx.one(f"SELECT {', '.join(table.columns)} FROM {table.name} WHERE {table.columns[0]} = ?", (name,))
    if row is None:
        if missing_ok:
            return None
        raise NotFound(f"{table.noun} {name!r} does not exist")
    return table.from_row(row)


def _list(tx: Transaction, table: Table) -> list[Any]:
    rows = tx.all(f"SELECT {', '.join(table.columns)} FROM {table.name} ORDER BY {table.columns[0]}")
    return [table.from_row(row) for row in rows]


def _revocations(tx: Transaction) -> list[Revocation]:
    rows = tx.all("SELECT kind, value, reason, revision FROM revocations ORDER BY kind, value")
    return [Revocation(*row) for row in rows]


def _check_expected(table: Table, current: Any, expected_revision: int) -> None:
    # expected_revision (0 = unconditional) is the revision that last changed this object, as the
    # caller read it: a different one means someone changed it since (optimistic concurrency).
    if expected_revision and current.revision != expected_revision:
        raise FailedPrecondition(f"{table.noun} {current.name!r} was changed at revision {current.revision}, "
                                 f"not {expected_revision}: read it again")


def _role_exists(binding: Binding) -> Callable[[_Writer], None]:
    def check(w: _Writer) -> None:
        if _get(w.tx, tables.ROLES, binding.role, missing_ok=True) is None:
            raise FailedPrecondition(f"binding.role: role {binding.role!r} does not exist")
    return check


def open_store(url: str, clock: Callable[[], str] = _now) -> Store:
    """Open the store at `url` and bring its schema up to date."""
    store = Store(backend_for(url), clock)
    store.migrate()
    return store
