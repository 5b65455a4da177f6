"""The policy model in the store on both backends: migration 4 keeps what existing rows meant,
new fields round-trip, decisions are single transactions, and idle console sessions are ended
and revoked by the sweep (published as a signed delta at once)."""
from __future__ import annotations

from dataclasses import replace

import pytest

from controlplane.distribution import Distributor
from controlplane.errors import FailedPrecondition, PermissionDenied
from controlplane.model import (AccessRequest, Binding, BreakGlassPolicy, ClusterSelector, Conditions, MatchExpression,
                                Role, Schedule, Settings, Subject, Token)
from controlplane.sessions import SessionSweeper
from controlplane.snapshots import REVOCATION_CHANNEL, Publisher, build_snapshot, verify_revocation_delta
from controlplane.store import Store, tables
from controlplane.store.backends import backend_for
from controlplane.store.migrations import MIGRATIONS

from .planes import next_message, subscribe
from .test_store import VIEW, binding, cluster


class Clock:
    """The store's clock, moved by the test."""

    def __init__(self, now: str = "2026-11-23T08:00:00Z"):
        self.now = now

    def __call__(self) -> str:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def timed_store(store_url, clock):
    opened = Store(backend_for(store_url), clock=clock)
    opened.migrate()
    yield opened
    opened.close()


def test_migration_4_keeps_the_meaning_of_existing_rows(store_url):
    old = Store(backend_for(store_url))
    with old._transaction(old._backend.begin_write) as tx:   # a database of the previous release
        tx.run("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
               "applied_at TEXT NOT NULL)")
        for version, name, statements in MIGRATIONS[:3]:
            for statement in statements:
                tx.run(statement)
            tx.run("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                   (version, name, "2026-01-01T00:00:00Z"))
        tx.run("INSERT INTO bindings (name, role, subjects, cluster_names, cluster_labels, valid_from, valid_until, "
               "revision) VALUES ('b', 'viewer', '[[\"group\",\"devs\"]]', '[\"*\"]', '{}', '', '', 1)")
        tx.run("INSERT INTO clusters (name, endpoint, credential, ca_bundle, labels, tunnel, identity_mode, "
               "kubectl_enabled, revision) VALUES ('c', 'https://127.0.0.1:6443', "
               "'{\"kind\":\"token\",\"ref\":\"file:c\"}', '', '{}', 0, 'impersonate', 1, 1)")
    assert old.migrate() == [version for version, _, _ in MIGRATIONS[3:]]
    assert old.get(tables.BINDINGS, "b") == Binding("b", "viewer", (Subject("group", "devs"),),
                                                    ClusterSelector(names=("*",)), revision=1)
    assert old.get(tables.CLUSTERS, "c").read_only is False
    assert old.settings() == Settings()
    old.close()


def test_policy_fields_round_trip(store):
    store.register_cluster("alice", replace(cluster("c", env="prod"), read_only=True, upstream_groups=("ops",)))
    store.create_role("alice", Role("viewer", (VIEW,)))
    rich = replace(binding(), effect="deny",
                   clusters=ClusterSelector(labels={"env": "prod"}, expressions=(MatchExpression("tier", "NotIn", ("db",)),)),
                   conditions=Conditions(source_cidrs=("10.0.0.0/8",), channels=("kubectl",),
                                         schedule=Schedule(("mon",), "08:00", "18:00")))
    revision = store.create_binding("alice", rich)
    assert store.get(tables.BINDINGS, rich.name) == replace(rich, revision=revision)
    assert store.get(tables.CLUSTERS, "c").upstream_groups == ("ops",)
    settings = Settings(break_glass_enabled=False, max_watches=9, approver_group="approvers",
                        break_glass=BreakGlassPolicy("viewer", "sre", ClusterSelector(
                            labels={"env": "prod"}, expressions=(MatchExpression("region", "Exists"),)), 600))
    revision = store.update_settings("alice", settings)
    assert store.settings() == replace(settings, revision=revision)
    assert store.state().settings == replace(settings, revision=revision)


def _pending(store: Store, user: str = "ann") -> AccessRequest:
    return store.create_access_request(user, AccessRequest(id=f"ar-{user}", user=user, role="viewer", cluster="c",
                                                           duration=600, reason="why", created_at=""))


def test_a_decision_is_one_transaction_and_happens_once(timed_store, clock):
    store = timed_store
    store.register_cluster("alice", cluster("c", env="prod"))
    store.create_role("alice", Role("viewer", (VIEW,)))
    store.update_settings("alice", Settings(approver_group="approvers"))
    request = _pending(store)
    with pytest.raises(PermissionDenied):
        store.decide_access_request("user:ann", request.id, "ann", ("approvers",), True, "")
    revision = store.revision()
    clock.now = "2026-11-23T09:00:00Z"
    approved = store.decide_access_request("user:bob", request.id, "bob", ("approvers",), True, "fine")
    assert (approved.state, approved.decided_at, approved.expires_at) == (
        "approved", "2026-11-23T09:00:00Z", "2026-11-23T09:10:00Z")
    assert store.revision() == revision + 1   # the decision and its binding: one revision
    grant = store.get(tables.BINDINGS, request.id)
    assert (grant.valid_from, grant.valid_until, grant.grant.kind) == (
        "2026-11-23T09:00:00Z", "2026-11-23T09:10:00Z", "access_request")
    with pytest.raises(FailedPrecondition, match="already approved"):
        store.decide_access_request("user:carl", request.id, "carl", ("approvers",), False, "")
    # the snapshot drops the grant once its window has wholly passed
    assert [b["name"] for b in build_snapshot(store.state())["bindings"]] == [request.id]
    clock.now = "2026-11-23T09:10:00Z"
    store.register_cluster("alice", cluster("d"))
    assert build_snapshot(store.state())["bindings"] == []


def test_idle_sessions_are_ended_and_revoked_by_the_sweep(timed_store, clock, redis_client, signing_key):
    store = timed_store
    store.update_settings("alice", Settings(session_idle_timeout=60))
    idle = store.create_session("portal", "s-idle", "ann")
    busy = store.create_session("portal", "s-busy", "bob")
    clock.now = "2026-11-23T08:00:50Z"
    store.touch_session(busy.id)
    clock.now = "2026-11-23T08:01:00Z"
    assert store.idle_sessions() == [idle.id]
    with pytest.raises(FailedPrecondition, match="timed out"):
        store.touch_session(idle.id)   # too late: only the sweep ends it, and revokes it

    deltas = subscribe(redis_client, REVOCATION_CHANNEL)
    sweeper = SessionSweeper(store, Distributor(store, Publisher(redis_client, signing_key)))
    assert sweeper.sweep() == [idle.id]
    delta = verify_revocation_delta(next_message(deltas), signing_key.public_key())
    deltas.close()
    assert delta["revocations"] == {"sessions": [idle.id]}
    assert [(r.kind, r.value, r.reason) for r in store.revocations()] == [("session", idle.id, "idle timeout")]
    assert sweeper.sweep() == []
    ended = {s.id: s for s in store.sessions()}
    assert (ended[idle.id].end_reason, ended[busy.id].ended_at) == ("idle timeout", "")
    # no new credential binds to a session past its idle timeout, even before the sweep ends it
    clock.now = "2026-11-23T08:01:50Z"
    with pytest.raises(FailedPrecondition, match="timed out"):
        store.issue_token("admin", Token(id="t-1", sha256="ab" * 32, user="bob", session=busy.id))
