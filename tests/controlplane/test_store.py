"""The store on both backends: migrations, mutations as single revision-bumping transactions,
preconditions that change nothing, and (PostgreSQL) two replicas writing concurrently."""
from __future__ import annotations

import threading
from dataclasses import replace

import pytest

from controlplane.errors import AlreadyExists, FailedPrecondition, NotFound
from controlplane.model import (Binding, Cluster, ClusterSelector, Credential, Revocation, Role, Rule,
                                ServiceIdentity, Subject, Token)
from controlplane.store import Store, open_store, tables
from controlplane.store.backends import backend_for
from controlplane.store.migrations import MIGRATIONS

VIEW = Rule(verbs=("get", "list"), api_groups=("*",), resources=("*",))


def cluster(name: str, **labels: str) -> Cluster:
    return Cluster(name=name, endpoint="https://127.0.0.1:6443",
                   credential=Credential(kind="token", ref=f"file:{name}.token"), labels=labels)


def binding(name: str = "devs-view", role: str = "viewer") -> Binding:
    return Binding(name=name, role=role, subjects=(Subject("group", "devs"),),
                   clusters=ClusterSelector(labels={"env": "dev"}))


def test_migrations_are_recorded_and_applied_once(store_url):
    first = open_store(store_url)
    assert first.schema_versions() == [version for version, _, _ in MIGRATIONS]
    assert first.revision() == 0
    first.close()
    again = Store(backend_for(store_url))
    assert again.migrate() == []
    again.close()


def test_a_database_from_a_newer_control_plane_is_refused(store):
    with store._transaction(store._backend.begin_write) as tx:
        tx.run("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
               (999, "from the future", "2030-01-01T00:00:00Z"))
    with pytest.raises(RuntimeError, match="schema version 999"):
        store.migrate()


def test_every_mutation_bumps_the_revision_once_and_is_audited(store):
    assert store.register_cluster("alice", cluster("sandbox", env="dev")) == 1
    assert store.create_role("alice", Role("viewer", (VIEW,))) == 2
    assert store.create_binding("bob", binding()) == 3
    assert store.deregister_cluster("bob", "sandbox") == 4
    assert store.revision() == 4
    assert [(a.revision, a.actor, a.action, a.target) for a in store.audit()] == [
        (1, "alice", "clusters.create", "cluster/sandbox"),
        (2, "alice", "roles.create", "role/viewer"),
        (3, "bob", "bindings.create", "binding/devs-view"),
        (4, "bob", "clusters.delete", "cluster/sandbox"),
    ]
    assert store.get(tables.BINDINGS, "devs-view") == replace(binding(), revision=3)


def test_failed_preconditions_roll_back_the_revision_too(store):
    store.register_cluster("alice", cluster("sandbox"))
    with pytest.raises(AlreadyExists, match="cluster 'sandbox' already exists"):
        store.register_cluster("alice", cluster("sandbox"))
    with pytest.raises(FailedPrecondition, match="role 'viewer' does not exist"):
        store.create_binding("alice", binding())
    with pytest.raises(NotFound, match="cluster 'nope' does not exist"):
        store.deregister_cluster("alice", "nope")
    assert store.revision() == 1
    assert len(store.audit()) == 1
    assert store.list(tables.BINDINGS) == []
    # and the next successful write takes the next number: no gaps
    assert store.create_role("alice", Role("viewer", (VIEW,))) == 2


def test_stale_expected_revision_is_refused(store):
    first = store.register_cluster("alice", cluster("sandbox"))
    second = store.update_cluster("alice", cluster("sandbox", env="dev"), expected_revision=first)
    with pytest.raises(FailedPrecondition, match=f"changed at revision {second}, not {first}"):
        store.update_cluster("alice", cluster("sandbox", env="prod"), expected_revision=first)
    assert store.get(tables.CLUSTERS, "sandbox").labels == {"env": "dev"}


def test_a_bound_role_cannot_be_deleted(store):
    store.create_role("alice", Role("viewer", (VIEW,)))
    store.create_binding("alice", binding())
    with pytest.raises(FailedPrecondition, match="used by binding"):
        store.delete_role("alice", "viewer")
    store.delete_binding("alice", "devs-view")
    store.delete_role("alice", "viewer")


def test_tokens_and_revocations(store):
    store.create_service_identity("alice", ServiceIdentity("argocd", groups=("cd",)))
    issued = store.issue_token("alice", Token(id="t-1", sha256="ab" * 32, user="", component="argocd"))
    assert (issued.user, issued.groups, issued.revision) == ("service:argocd", ("cd",), 2)
    with pytest.raises(FailedPrecondition, match="unrevoked tokens"):
        store.delete_service_identity("alice", "argocd")
    store.revoke("alice", Revocation("token", "t-1", "left"))
    assert store.get(tables.TOKENS, "t-1").revoked
    with pytest.raises(AlreadyExists):
        store.revoke("alice", Revocation("token", "t-1"))
    with pytest.raises(NotFound):
        store.revoke("alice", Revocation("token", "t-unknown"))
    store.revoke("alice", Revocation("user", "mallory"))
    assert [(r.kind, r.value, r.revision) for r in store.revocations()] == [("token", "t-1", 3), ("user", "mallory", 4)]
    state = store.state()
    assert state.revision == 4 and len(state.tokens) == 1 and len(state.revocations) == 2


def test_two_replicas_never_lose_an_update_on_postgresql(postgres_fresh):
    """Two store instances (replicas), three threads each, appending to one role with
    read-modify-write under expected_revision: every append lands, revisions stay gap-free."""
    replicas = [open_store(postgres_fresh), open_store(postgres_fresh)]
    replicas[0].create_role("setup", Role("shared", (VIEW,)))
    appends_per_thread, threads_per_replica = 5, 3
    revisions: list[list[int]] = []
    errors: list[BaseException] = []

    def writer(store: Store, worker: str) -> None:
        mine: list[int] = []
        try:
            for step in range(appends_per_thread):
                while True:
                    role = store.get(tables.ROLES, "shared")
                    rule = Rule(verbs=("get",), api_groups=("",), resources=(f"{worker}-{step}",))
                    try:
                        mine.append(store.update_role(worker, Role("shared", role.rules + (rule,)),
                                                      expected_revision=role.revision))
                        break
                    except FailedPrecondition:
                        continue  # someone else wrote first: read again
                mine.append(store.register_cluster(worker, cluster(f"{worker}-{step}")))
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)
        revisions.append(mine)

    threads = [threading.Thread(target=writer, args=(store, f"r{index}w{worker}"))
               for index, store in enumerate(replicas) for worker in range(threads_per_replica)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    writes = 2 * appends_per_thread * threads_per_replica * len(replicas)
    for mine in revisions:
        assert mine == sorted(mine) and len(set(mine)) == len(mine)
    assert sorted(r for mine in revisions for r in mine) == list(range(2, writes + 2))
    role = replicas[1].get(tables.ROLES, "shared")
    assert len(role.rules) == 1 + writes // 2
    assert len(replicas[1].list(tables.CLUSTERS)) == writes // 2
    assert [a.revision for a in replicas[1].audit()] == list(range(1, writes + 2))
    for store in replicas:
        store.close()
