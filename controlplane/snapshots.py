"""Snapshots: built from the store, signed, and published to Redis for the gateways.

Redis layout (the gateways' side of the contract):
- `accesspoint:snapshot`           the signed snapshot envelope (JSON bytes, docs/architecture.md)
- `accesspoint:snapshot:revision`  its revision as decimal text (what the compare-and-set reads)
- channel `accesspoint:snapshots`  the revision (decimal text) after each new snapshot is written
- channel `accesspoint:revocations` signed revocation deltas, sent before the full snapshot

Publishing is idempotent and monotonic rather than single-publisher: any replica may publish any
revision, and one Lua script writes the key, its revision and the notice only when the revision
is higher than the one stored. So two replicas racing can never move the key backwards, a retry
or the periodic re-publish is harmless, and no leader election is needed.
"""
from __future__ import annotations

import base64
import logging
from typing import Any

import redis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dataplane.signing import key_id
# verify_revocation_delta is re-exported: the gateways' check is the one reference for both sides.
from dataplane.snapshot import (DELTA_ENVELOPE_FORMAT, DELTA_PAYLOAD_FORMAT, PAYLOAD_FORMAT, canonical_json,
                                sign_snapshot, verify_revocation_delta)
from dataplane.snapshotfeed import REVOCATION_CHANNEL, SNAPSHOT_CHANNEL, SNAPSHOT_KEY
from dataplane.tunnel.identities import SPKI_PREFIX

from .model import SNAPSHOT_REVOCATION_LISTS, Cluster, Revocation, State

log = logging.getLogger(__name__)

SNAPSHOT_REVISION_KEY = "accesspoint:snapshot:revision"

# KEYS: snapshot, revision; ARGV: revision, envelope, channel. Returns 1 if written, else 0.
_PUBLISH_IF_NEWER = """
local stored = tonumber(redis.call('GET', KEYS[2]) or '-1')
local revision = tonumber(ARGV[1])
if revision <= stored then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[3], ARGV[1])
return 1
"""


def build_snapshot(state: State) -> dict[str, Any]:
    """The snapshot of `state`: a pure function of it, so equal states give equal bytes.

    Lists are sorted here, not by the database (PostgreSQL's collation may differ from SQLite's).
    Validity windows travel in the snapshot and the gateways evaluate them at request time, so
    time-bound access starts and ends with no action; a binding whose window had wholly passed at
    the revision's commit time can never apply again and is left out.
    """
    revocations: dict[str, list[str]] = {name: [] for name in SNAPSHOT_REVOCATION_LISTS.values()}
    agents: dict[str, set[str]] = {}
    for certificate in state.agent_certificates:
        if certificate.live_at(state.committed_at):
            agents.setdefault(certificate.cluster, set()).add(SPKI_PREFIX + certificate.spki_sha256)
    for revocation in state.revocations:
        revocations[SNAPSHOT_REVOCATION_LISTS[revocation.kind]].append(revocation.value)
    return {
        "format": PAYLOAD_FORMAT,
        "revision": state.revision,
        "issued_at": state.committed_at,
        "clusters": [_cluster_entry(c, agents.get(c.name, set()))
                     for c in sorted(state.clusters, key=lambda c: c.name)],
        "roles": [r.to_snapshot() for r in sorted(state.roles, key=lambda r: r.name)],
        "bindings": [b.to_snapshot() for b in sorted(state.bindings, key=lambda b: b.name)
                     if not b.expired_at(state.committed_at)],
        "tokens": [t.to_snapshot() for t in sorted(state.tokens, key=lambda t: t.id) if not t.revoked],
        "revocations": {name: sorted(values) for name, values in revocations.items()},
        "settings": state.settings.to_snapshot(),
    }


def _cluster_entry(cluster: Cluster, agent_identities: set[str]) -> dict[str, Any]:
    """A tunnel cluster lists the keys of its live agent certificates: renewal adds the new key
    while the old certificate still serves; revocation, expiry and deregistration drop one."""
    entry = cluster.to_snapshot()
    if cluster.tunnel:
        entry["agent_identities"] = sorted(agent_identities)
    return entry


def sign_revocation_delta(revision: int, issued_at: str, revocations: list[Revocation],
                          private_key: Ed25519PrivateKey) -> bytes:
    """A small signed message naming new revocations; its payload format keeps it from ever
    passing as a snapshot (and the envelope format says which one it is)."""
    lists: dict[str, list[str]] = {}
    for revocation in revocations:
        lists.setdefault(SNAPSHOT_REVOCATION_LISTS[revocation.kind], []).append(revocation.value)
    payload = canonical_json({"format": DELTA_PAYLOAD_FORMAT, "revision": revision, "issued_at": issued_at,
                              "revocations": {name: sorted(values) for name, values in lists.items()}})
    return canonical_json({
        "format": DELTA_ENVELOPE_FORMAT,
        "key_id": key_id(private_key.public_key()),
        "payload": base64.b64encode(payload).decode("ascii"),
        "signature": base64.b64encode(private_key.sign(payload)).decode("ascii"),
    })


class Publisher:
    """Signs and publishes snapshots (and revocation deltas) to one Redis."""

    def __init__(self, client: redis.Redis, private_key: Ed25519PrivateKey):
        self._client = client
        self._key = private_key
        self._publish_if_newer = client.register_script(_PUBLISH_IF_NEWER)

    def publish(self, state: State) -> bool:
        """Publish the snapshot of `state`; False when Redis already holds this or a newer one."""
        envelope = sign_snapshot(build_snapshot(state), self._key)
        written = self._publish_if_newer(keys=[SNAPSHOT_KEY, SNAPSHOT_REVISION_KEY],
                                         args=[state.revision, envelope, SNAPSHOT_CHANNEL])
        if written:
            log.info("published snapshot revision %d", state.revision)
        return bool(written)

    def publish_revocations(self, revision: int, issued_at: str, revocations: list[Revocation]) -> None:
        """Announce revocations at once; the full snapshot with them follows."""
        self._client.publish(REVOCATION_CHANNEL, sign_revocation_delta(revision, issued_at, revocations, self._key))

    def published_revision(self) -> int:
        value = self._client.get(SNAPSHOT_REVISION_KEY)
        return int(value) if value is not None else -1
