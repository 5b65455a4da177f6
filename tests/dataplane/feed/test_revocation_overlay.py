"""Revocation deltas without Redis: verification, and the holder laying them over snapshots until
a full snapshot at their revision catches up."""
from __future__ import annotations

import pytest

from controlplane.model import Revocation
from controlplane.snapshots import build_snapshot, sign_revocation_delta
from dataplane.signing import generate_signing_key
from dataplane.snapshot import (RevocationDeltaError, SignatureError, SnapshotHolder, sign_snapshot,
                                verify_revocation_delta, verify_snapshot)

from .helpers import ISSUED_AT, bob_is_revoked, state


@pytest.fixture
def make(signing_key):
    def make(revision: int, revoked_users: tuple[str, ...] = ()):
        envelope = sign_snapshot(build_snapshot(state(revision, revoked_users)), signing_key)
        return verify_snapshot(envelope, signing_key.public_key())
    return make


def delta(signing_key, revision: int, *users: str) -> dict:
    envelope = sign_revocation_delta(revision, ISSUED_AT, [Revocation("user", u) for u in users], signing_key)
    return verify_revocation_delta(envelope, signing_key.public_key())


def test_a_derived_snapshot_shares_revision_and_policy_but_authenticates_anew(make):
    base = make(3)
    derived = base.with_revocations({"users": ["bob"]})
    assert derived.revision == 3 and derived.policy is base.policy and derived.clusters is base.clusters
    assert bob_is_revoked(derived) and not bob_is_revoked(base)
    assert derived.data["revocations"]["users"] == ["bob"] and base.data["revocations"]["users"] == []


def test_a_delta_is_enforced_at_once_and_notifies_subscribers(make, signing_key):
    holder = SnapshotHolder()
    holder.apply(make(3))
    seen = []
    holder.subscribe(seen.append)
    payload = delta(signing_key, 4, "bob")
    assert holder.apply_revocations(payload["revision"], payload["revocations"])
    assert holder.current.revision == 3 and bob_is_revoked(holder.current)
    assert seen == [holder.current]


def test_an_older_snapshot_keeps_the_pending_delta_and_a_caught_up_one_drops_it(make, signing_key):
    holder = SnapshotHolder()
    holder.apply(make(3))
    holder.apply_revocations(6, {"users": ["bob"]})
    holder.apply(make(5))           # older than the delta: bob stays revoked
    assert holder.current.revision == 5 and bob_is_revoked(holder.current)
    holder.apply(make(6, revoked_users=("bob",)))
    assert bob_is_revoked(holder.current)
    holder.apply(make(7))           # revision 7 lifted the revocation: the snapshot decides now
    assert not bob_is_revoked(holder.current)


def test_a_delta_the_snapshot_already_covers_is_superseded(make):
    holder = SnapshotHolder()
    holder.apply(make(5))
    assert not holder.apply_revocations(5, {"users": ["bob"]})
    assert not bob_is_revoked(holder.current)


def test_a_delta_before_any_snapshot_applies_to_the_first_one(make):
    holder = SnapshotHolder()
    assert holder.apply_revocations(4, {"users": ["bob"]}) and holder.current is None
    holder.apply(make(3))
    assert bob_is_revoked(holder.current)


def test_deltas_are_verified_strictly(signing_key):
    public_key = signing_key.public_key()
    with pytest.raises(SignatureError):
        verify_snapshot(sign_snapshot(build_snapshot(state(1)), generate_signing_key()), public_key)
    forged = sign_revocation_delta(4, ISSUED_AT, [Revocation("user", "bob")], generate_signing_key())
    with pytest.raises(RevocationDeltaError, match="trusted key"):
        verify_revocation_delta(forged, public_key)
    snapshot_envelope = sign_snapshot(build_snapshot(state(1)), signing_key)
    with pytest.raises(RevocationDeltaError, match="envelope format"):
        verify_revocation_delta(snapshot_envelope, public_key)
    bad_serial = sign_revocation_delta(4, ISSUED_AT, [Revocation("cert_serial", "not-hex")], signing_key)
    with pytest.raises(RevocationDeltaError, match="cert_serials"):
        verify_revocation_delta(bad_serial, public_key)
    with pytest.raises(ValueError):   # what the control plane's callers catch
        verify_revocation_delta(b"garbage", public_key)
