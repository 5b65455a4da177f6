"""Schema migrations: a numbered list applied in order, each recorded in `schema_migrations`.

Append only: a released migration never changes (replicas and databases in the field have run
it). The SQL is the common subset of SQLite and PostgreSQL; lists and maps are JSON text.
"""
from __future__ import annotations

MIGRATIONS: list[tuple[int, str, tuple[str, ...]]] = [
    (1, "initial schema", (
        # The single revision counter. Every mutation bumps it in its own transaction.
        """CREATE TABLE revision (
               id INTEGER PRIMARY KEY CHECK (id = 1),
               value BIGINT NOT NULL,
               committed_at TEXT NOT NULL)""",
        "INSERT INTO revision (id, value, committed_at) VALUES (1, 0, '1970-01-01T00:00:00Z')",
        """CREATE TABLE clusters (
               name TEXT PRIMARY KEY,
               endpoint TEXT NOT NULL,
               credential TEXT NOT NULL,
               ca_bundle TEXT NOT NULL,
               labels TEXT NOT NULL,
               tunnel INTEGER NOT NULL,
               identity_mode TEXT NOT NULL,
               kubectl_enabled INTEGER NOT NULL,
               revision BIGINT NOT NULL)""",
        """CREATE TABLE roles (
               name TEXT PRIMARY KEY,
               rules TEXT NOT NULL,
               revision BIGINT NOT NULL)""",
        """CREATE TABLE bindings (
               name TEXT PRIMARY KEY,
               role TEXT NOT NULL,
               subjects TEXT NOT NULL,
               cluster_names TEXT NOT NULL,
               cluster_labels TEXT NOT NULL,
               valid_from TEXT NOT NULL,
               valid_until TEXT NOT NULL,
               revision BIGINT NOT NULL)""",
        """CREATE TABLE service_identities (
               name TEXT PRIMARY KEY,
               groups_json TEXT NOT NULL,
               description TEXT NOT NULL,
               revision BIGINT NOT NULL)""",
        # Hashes only: the plain token is returned once at issue and never stored.
        """CREATE TABLE tokens (
               id TEXT PRIMARY KEY,
               sha256 TEXT NOT NULL UNIQUE,
               user_name TEXT NOT NULL,
               groups_json TEXT NOT NULL,
               component TEXT NOT NULL,
               description TEXT NOT NULL,
               revision BIGINT NOT NULL,
               revoked INTEGER NOT NULL)""",
        """CREATE TABLE revocations (
               kind TEXT NOT NULL,
               value TEXT NOT NULL,
               reason TEXT NOT NULL,
               revision BIGINT NOT NULL,
               PRIMARY KEY (kind, value))""",
        # One row per mutation: the revision it produced (the one before is revision - 1).
        """CREATE TABLE audit (
               revision BIGINT PRIMARY KEY,
               actor TEXT NOT NULL,
               action TEXT NOT NULL,
               target TEXT NOT NULL,
               at TEXT NOT NULL)""",
    )),
    (2, "issued client certificates", (
        # Serials of the certificates in issued kubeconfigs (the keys are never stored).
        """CREATE TABLE certificates (
               serial TEXT PRIMARY KEY,
               user_name TEXT NOT NULL,
               groups_json TEXT NOT NULL,
               cluster TEXT NOT NULL,
               expires_at TEXT NOT NULL,
               revision BIGINT NOT NULL)""",
    )),
    (3, "gateway audit events", (
        # Ingested from the gateways; the event id as key makes a replayed event a no-op.
        """CREATE TABLE audit_events (
               id TEXT PRIMARY KEY,
               time TEXT NOT NULL,
               user_name TEXT NOT NULL,
               cluster TEXT NOT NULL,
               verb TEXT NOT NULL,
               decision TEXT NOT NULL,
               code INTEGER NOT NULL,
               event TEXT NOT NULL)""",
        "CREATE INDEX audit_events_time ON audit_events (time)",
        "CREATE INDEX audit_events_user_time ON audit_events (user_name, time)",
    )),
    (4, "policy model: deny, conditions, grants, kill switches, access requests, break-glass, sessions", (
        # Defaults keep every existing row what it meant before (allow, no conditions, writable).
        "ALTER TABLE clusters ADD COLUMN read_only INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE clusters ADD COLUMN upstream_groups TEXT NOT NULL DEFAULT '[]'",
        "ALTER TABLE bindings ADD COLUMN effect TEXT NOT NULL DEFAULT 'allow'",
        "ALTER TABLE bindings ADD COLUMN cluster_expressions TEXT NOT NULL DEFAULT '[]'",
        "ALTER TABLE bindings ADD COLUMN conditions TEXT NOT NULL DEFAULT '{}'",
        # "grant" is an SQL keyword.
        "ALTER TABLE bindings ADD COLUMN grant_json TEXT NOT NULL DEFAULT '{}'",
        "ALTER TABLE tokens ADD COLUMN channel TEXT NOT NULL DEFAULT 'kubectl'",
        "ALTER TABLE tokens ADD COLUMN session TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE certificates ADD COLUMN session TEXT NOT NULL DEFAULT ''",
        # One row: the settings as JSON (absent keys take the model's defaults).
        """CREATE TABLE settings (
               id INTEGER PRIMARY KEY CHECK (id = 1),
               value TEXT NOT NULL,
               revision BIGINT NOT NULL)""",
        "INSERT INTO settings (id, value, revision) VALUES (1, '{}', 0)",
        """CREATE TABLE access_requests (
               id TEXT PRIMARY KEY,
               user_name TEXT NOT NULL,
               role TEXT NOT NULL,
               cluster TEXT NOT NULL,
               duration BIGINT NOT NULL,
               reason TEXT NOT NULL,
               created_at TEXT NOT NULL,
               state TEXT NOT NULL,
               decided_by TEXT NOT NULL,
               decided_at TEXT NOT NULL,
               decision_reason TEXT NOT NULL,
               binding TEXT NOT NULL,
               expires_at TEXT NOT NULL,
               revision BIGINT NOT NULL)""",
        """CREATE TABLE sessions (
               id TEXT PRIMARY KEY,
               user_name TEXT NOT NULL,
               created_at TEXT NOT NULL,
               last_seen_at TEXT NOT NULL,
               idle_timeout BIGINT NOT NULL,
               ended_at TEXT NOT NULL,
               end_reason TEXT NOT NULL,
               revision BIGINT NOT NULL)""",
        # The idle sweep looks for live sessions only.
        "CREATE INDEX sessions_live ON sessions (ended_at, last_seen_at)",
    )),
    (5, "agent registration: bootstrap tokens, agent certificates, refusals", (
        # Hashes only: the plain bootstrap token is shown once at issue and never stored.
        """CREATE TABLE bootstrap_tokens (
               id TEXT PRIMARY KEY,
               sha256 TEXT NOT NULL UNIQUE,
               cluster TEXT NOT NULL,
               expires_at TEXT NOT NULL,
               used_at TEXT NOT NULL,
               used_by TEXT NOT NULL,
               revision BIGINT NOT NULL)""",
        # Serials and public-key digests of agent certificates (the keys never leave the agents).
        """CREATE TABLE agent_certificates (
               serial TEXT PRIMARY KEY,
               cluster TEXT NOT NULL,
               agent_id TEXT NOT NULL,
               common_name TEXT NOT NULL,
               spki_sha256 TEXT NOT NULL,
               expires_at TEXT NOT NULL,
               enrolled_by TEXT NOT NULL,
               retired INTEGER NOT NULL,
               revision BIGINT NOT NULL)""",
        "CREATE INDEX agent_certificates_cluster ON agent_certificates (cluster, expires_at)",
        # Refused agent calls: a record, not desired state (no revision).
        """CREATE TABLE refusals (
               id TEXT PRIMARY KEY,
               at TEXT NOT NULL,
               action TEXT NOT NULL,
               cluster TEXT NOT NULL,
               subject TEXT NOT NULL,
               peer TEXT NOT NULL,
               reason TEXT NOT NULL)""",
        "CREATE INDEX refusals_at ON refusals (at)",
    )),
]
