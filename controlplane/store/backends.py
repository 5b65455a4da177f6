"""The two databases behind one interface: connections, transaction starts, SQL dialect.

Everything else in the store is shared SQL. The differences kept here:
- placeholders: the store writes `?`; PostgreSQL (psycopg) wants `%s`;
- a write transaction: SQLite `BEGIN IMMEDIATE` takes the database's write lock up front;
  PostgreSQL's first statement, the revision bump, row-locks the counter, which serialises
  writers from every replica until commit;
- a read transaction: one consistent view of all tables (SQLite WAL read transaction;
  PostgreSQL REPEATABLE READ);
- migrations: PostgreSQL replicas starting together serialise on an advisory lock.
Connections are per thread (the gRPC server calls the store from a thread pool).
"""
from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any, Protocol

_MIGRATION_LOCK_ID = 0x61636370  # "accp": any fixed 64-bit number, shared by all replicas


class Cursor(Protocol):
    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> Any: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


class Backend:
    begin_write = "BEGIN"
    begin_read = "BEGIN"

    def __init__(self) -> None:
        self._local = threading.local()
        self._connections: list[Any] = []
        self._lock = threading.Lock()

    def connection(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def sql(self, text: str) -> str:
        return text

    def lock_migrations(self, tx: Any) -> None:
        """Called first inside the migration transaction (`tx.run(sql)`)."""

    def rollback(self, conn: Any) -> None:
        """Roll back; a connection that cannot even do that is dropped (the next call reconnects)."""
        try:
            conn.execute("ROLLBACK")
        except Exception:
            self._local.conn = None
            with self._lock:
                self._connections.remove(conn)
            conn.close()

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()

    def _connect(self) -> Any:
        raise NotImplementedError


class SQLiteBackend(Backend):
    begin_write = "BEGIN IMMEDIATE"

    def __init__(self, path: str):
        super().__init__()
        if not path or path == ":memory:":
            # Each thread has its own connection: an in-memory database would differ per thread.
            raise ValueError("SQLite needs a file path (an in-memory database cannot be shared)")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = path

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions; the store issues BEGIN/COMMIT itself.
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=30, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
        conn.execute("PRAGMA synchronous=FULL")  # a committed revision survives a power cut
        return conn


class PostgresBackend(Backend):
    begin_read = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"

    def __init__(self, dsn: str):
        super().__init__()
        import psycopg  # imported here: the embedded SQLite default does not need it

        self._psycopg = psycopg
        self.dsn = dsn

    def _connect(self) -> Any:
        # autocommit: the store issues BEGIN/COMMIT itself, the same way as on SQLite.
        return self._psycopg.connect(self.dsn, autocommit=True)

    def sql(self, text: str) -> str:
        return text.replace("?", "%s")

    def lock_migrations(self, tx: Any) -> None:
        tx.run(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK_ID})")


def backend_for(url: str) -> Backend:
    """`sqlite:///abs/path.db`, `sqlite:relative.db`, or a `postgresql://…` DSN."""
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresBackend(url)
    if url.startswith("sqlite:"):
        path = url[len("sqlite:"):]
        return SQLiteBackend(path[2:] if path.startswith("//") else path)
    raise ValueError("store URL must start with sqlite: or postgresql://")
