"""Snapshot building (deterministic, schema-valid), signing, and publishing to a real Redis."""
from __future__ import annotations

import threading

import pytest

from controlplane.model import Binding, ClusterSelector, Revocation, Role, State, Subject, Token
from controlplane.snapshots import (REVOCATION_CHANNEL, SNAPSHOT_CHANNEL, SNAPSHOT_KEY, Publisher, build_snapshot,
                                    sign_revocation_delta, verify_revocation_delta)
from controlplane.store import Store
from controlplane.store.backends import backend_for
from dataplane.signing import generate_signing_key
from dataplane.snapshot import SnapshotError, canonical_json, sign_snapshot, validate, verify_snapshot

from .planes import next_message, subscribe
from .test_store import VIEW, binding, cluster

FIXED_CLOCK = "2026-11-23T08:00:00Z"


def populate(store: Store, reverse: bool = False) -> None:
    steps = [
        lambda: store.register_cluster("alice", cluster("b-prod", env="prod")),
        lambda: store.register_cluster("alice", cluster("a_dev", env="dev")),
        lambda: store.register_cluster("alice", cluster("a-dev", env="dev")),
        lambda: store.create_role("alice", Role("viewer", (VIEW,))),
        lambda: store.issue_token("alice", Token(id="t-2", sha256="cd" * 32, user="bob", groups=("devs",))),
        lambda: store.revoke("alice", Revocation("cert_serial", "1f")),
    ]
    for step in reversed(steps) if reverse else steps:
        step()
    store.create_binding("alice", binding())


def test_same_state_gives_byte_identical_payload_on_either_backend(tmp_path, postgres_fresh, signing_key):
    payloads = []
    for url, reverse in [(f"sqlite:///{tmp_path / 'a.db'}", False), (postgres_fresh, True)]:
        store = Store(backend_for(url), clock=lambda: FIXED_CLOCK)
        store.migrate()
        populate(store, reverse)
        first, second = build_snapshot(store.state()), build_snapshot(store.state())
        assert canonical_json(first) == canonical_json(second)
        payloads.append(canonical_json(first))
        store.close()
    assert payloads[0] == payloads[1]
    snapshot = verify_snapshot(sign_snapshot(build_snapshot(_state()), signing_key), signing_key.public_key())
    assert snapshot.revision == 3


def _state(**overrides) -> State:
    fields = dict(revision=3, committed_at=FIXED_CLOCK, clusters=(cluster("sandbox", env="dev"),),
                  roles=(Role("viewer", (VIEW,)),), bindings=(binding(),), tokens=(), revocations=())
    return State(**{**fields, **overrides})


def test_snapshot_content(store):
    populate(store)
    data = build_snapshot(store.state())
    validate(data)
    assert [c["name"] for c in data["clusters"]] == ["a-dev", "a_dev", "b-prod"]
    assert data["clusters"][0]["credential"] == {"kind": "token", "ref": "file:a-dev.token"}
    assert data["tokens"] == [{"id": "t-2", "sha256": "cd" * 32, "user": "bob", "groups": ["devs"],
                               "component": None}]
    assert data["revocations"]["cert_serials"] == ["1f"]
    assert data["bindings"][0]["clusters"] == {"names": [], "selector": {"env": "dev"}}


def test_revoked_tokens_leave_and_windows_travel_until_they_have_passed(store):
    store.create_role("alice", Role("viewer", (VIEW,)))
    store.issue_token("alice", Token(id="t-1", sha256="ab" * 32, user="bob"))
    store.revoke("alice", Revocation("token", "t-1"))
    window = Binding("later", "viewer", (Subject("user", "bob"),), ClusterSelector(names=("*",)),
                     valid_from="2999-01-01T00:00:00Z", valid_until="2999-01-02T00:00:00Z")
    store.create_binding("alice", window)
    data = build_snapshot(store.state())
    assert data["tokens"] == [] and data["revocations"]["token_ids"] == ["t-1"]
    # the gateway evaluates the window at request time: it travels before it opens
    assert [(b["valid_from"], b["valid_until"]) for b in data["bindings"]] == [
        ("2999-01-01T00:00:00Z", "2999-01-02T00:00:00Z")]
    assert build_snapshot(_state(bindings=(window,), committed_at="2999-01-01T23:59:59Z"))["bindings"]
    # once wholly passed it can never apply again, and is left out
    assert build_snapshot(_state(bindings=(window,), committed_at="2999-01-02T00:00:00Z"))["bindings"] == []


def test_publish_writes_a_verifiable_snapshot_and_announces_it(redis_client, signing_key):
    notices = subscribe(redis_client, SNAPSHOT_CHANNEL)
    publisher = Publisher(redis_client, signing_key)
    assert publisher.publish(_state(revision=5))
    snapshot = verify_snapshot(redis_client.get(SNAPSHOT_KEY), signing_key.public_key())
    assert snapshot.revision == 5 and set(snapshot.clusters) == {"sandbox"}
    assert next_message(notices) == b"5"
    # the same revision again: nothing written, nothing announced
    assert not publisher.publish(_state(revision=5))
    assert notices.get_message(timeout=0.2) is None  # bounded wait for an absence
    notices.close()


def test_an_older_revision_never_overwrites_a_newer_one(redis_client, signing_key):
    publisher = Publisher(redis_client, signing_key)
    assert publisher.publish(_state(revision=9))
    assert not publisher.publish(_state(revision=4))
    assert verify_snapshot(redis_client.get(SNAPSHOT_KEY), signing_key.public_key()).revision == 9

    # replicas racing with interleaved revisions: the key ends at the highest, whatever the order
    publishers = [Publisher(redis_client, signing_key) for _ in range(4)]
    barrier = threading.Barrier(len(publishers))

    def race(index: int) -> None:
        barrier.wait()
        for revision in range(10 + index, 60, len(publishers)):
            publishers[index].publish(_state(revision=revision))

    threads = [threading.Thread(target=race, args=(index,)) for index in range(len(publishers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert publisher.published_revision() == 59
    assert verify_snapshot(redis_client.get(SNAPSHOT_KEY), signing_key.public_key()).revision == 59


def test_revocation_deltas_are_signed_and_never_pass_as_snapshots(redis_client, signing_key):
    deltas = subscribe(redis_client, REVOCATION_CHANNEL)
    Publisher(redis_client, signing_key).publish_revocations(
        12, FIXED_CLOCK, [Revocation("user", "mallory"), Revocation("cert_serial", "1f")])
    envelope = next_message(deltas)
    assert verify_revocation_delta(envelope, signing_key.public_key()) == {
        "format": "accesspoint.revocations/v1", "revision": 12, "issued_at": FIXED_CLOCK,
        "revocations": {"users": ["mallory"], "cert_serials": ["1f"]}}
    with pytest.raises(SnapshotError):
        verify_snapshot(envelope, signing_key.public_key())
    other_key = generate_signing_key()
    with pytest.raises(ValueError):
        verify_revocation_delta(sign_revocation_delta(1, FIXED_CLOCK, [], other_key), signing_key.public_key())
    deltas.close()
