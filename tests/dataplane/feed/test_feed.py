"""The snapshot feed against a private redis-server, fed by the real control-plane Publisher (or,
for what an attacker or an outage does, by writing the documented keys and channels directly)."""
from __future__ import annotations

import base64
import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from controlplane.model import Revocation
from controlplane.snapshots import (REVOCATION_CHANNEL, SNAPSHOT_CHANNEL, SNAPSHOT_KEY, Publisher, build_snapshot,
                                    sign_revocation_delta)
from dataplane.metrics import GatewayMetrics
from dataplane.signing import generate_signing_key
from dataplane.snapshot import SnapshotHolder, sign_snapshot, verify_snapshot
from dataplane.snapshotfeed import SnapshotFeed

from .helpers import ISSUED_AT, Seen, bob_is_revoked, feed_log, run, state


@pytest.fixture
def client(redis_server):
    opened = redis.Redis.from_url(redis_server.url)
    yield opened
    opened.close()


@pytest.fixture
def publisher(client, signing_key):
    return Publisher(client, signing_key)


@pytest.fixture
def cache_path(tmp_path) -> Path:
    return tmp_path / "snapshot.json"


@dataclass
class Running:
    feed: SnapshotFeed
    holder: SnapshotHolder
    metrics: GatewayMetrics
    swaps: Seen        # every snapshot the holder swapped in
    applied: Seen      # every snapshot reported through on_applied

    def refused(self, source: str, reason: str) -> float:
        return self.metrics.snapshot_refused_total.labels(source=source, reason=reason).value

    def connected(self) -> float:
        return self.metrics.snapshot_feed_connected.labels().value


@contextlib.asynccontextmanager
async def running_feed(redis_url: str, signing_key, cache_path: Path, **options):
    holder, metrics, swaps, applied = SnapshotHolder(), GatewayMetrics(), Seen(), Seen()
    holder.subscribe(swaps)
    feed = SnapshotFeed(redis_url, holder, signing_key.public_key(), cache_path, metrics=metrics,
                        on_applied=applied, **options)
    await feed.start()
    try:
        yield Running(feed, holder, metrics, swaps, applied)
    finally:
        await feed.stop()


def signed(revision: int, key, **state_options) -> bytes:
    return sign_snapshot(build_snapshot(state(revision, **state_options)), key)


def test_loads_at_start_follows_published_revisions_and_caches_them(redis_server, publisher, client, signing_key,
                                                                     cache_path):
    async def scenario():
        publisher.publish(state(1))
        async with running_feed(redis_server.url, signing_key, cache_path) as gw:
            assert gw.holder.current.revision == 1 and gw.connected() == 1
            publisher.publish(state(2))
            await gw.applied.revision(2)
            assert cache_path.read_bytes() == client.get(SNAPSHOT_KEY)

            publisher.publish(state(5))    # notices for 3 and 4 never came: counted, nothing lost
            await gw.applied.revision(5)
            assert gw.metrics.snapshot_notices_missed_total.labels(how="gap").value == 2
            assert gw.swaps.revisions() == gw.applied.revisions() == [1, 2, 5]
    run(scenario)


def test_bad_signature_garbage_and_older_revisions_are_refused_and_reported(redis_server, publisher, client,
                                                                            signing_key, cache_path):
    async def scenario():
        publisher.publish(state(3))
        with feed_log() as logs:
            async with running_feed(redis_server.url, signing_key, cache_path) as gw:
                running = gw.holder.current
                attacks = [(signed(4, generate_signing_key()), "signature"),
                           (b"\x00 not a snapshot", "format"),
                           (signed(2, signing_key), "older_revision")]
                for index, (value, reason) in enumerate(attacks, start=1):
                    client.set(SNAPSHOT_KEY, value)
                    client.publish(SNAPSHOT_CHANNEL, str(10 + index))
                    record = await logs.wait_for(logging.WARNING, "snapshot from redis refused", count=index)
                    assert f"({reason})" in record.getMessage() and "keeping revision 3" in record.getMessage()
                    assert gw.refused("redis", reason) == 1
                    assert gw.holder.current is running

                forged = sign_revocation_delta(4, ISSUED_AT, [Revocation("user", "bob")], generate_signing_key())
                client.publish(REVOCATION_CHANNEL, forged)
                await logs.wait_for(logging.WARNING, "revocation delta refused")
                assert gw.metrics.revocation_deltas_total.labels(result="refused").value == 1
                assert gw.holder.current is running and not bob_is_revoked(running)

                publisher.publish(state(4))   # the control plane's next snapshot still applies
                await gw.applied.revision(4)
                assert gw.swaps.revisions() == [3, 4]
                assert verify_snapshot(cache_path.read_bytes(), signing_key.public_key()).revision == 4
    run(scenario)


def test_a_lost_notice_is_caught_by_the_periodic_resync(redis_server, publisher, client, signing_key, cache_path):
    async def scenario():
        publisher.publish(state(1))
        async with running_feed(redis_server.url, signing_key, cache_path, resync_interval=0.2) as gw:
            client.set(SNAPSHOT_KEY, signed(2, signing_key))    # written, never announced
            await gw.applied.revision(2)
            assert gw.metrics.snapshot_notices_missed_total.labels(how="resync").value == 1
    run(scenario)


def test_keeps_serving_through_a_redis_outage_and_applies_the_next_snapshot_after(redis_server, signing_key,
                                                                                 cache_path):
    async def scenario():
        with redis.Redis.from_url(redis_server.url) as before:
            Publisher(before, signing_key).publish(state(1))
        with feed_log() as logs:
            async with running_feed(redis_server.url, signing_key, cache_path) as gw:
                redis_server.stop()
                await logs.wait_for(logging.WARNING, "Redis unreachable")
                assert gw.connected() == 0
                assert gw.holder.current.revision == 1 and not bob_is_revoked(gw.holder.current)

                redis_server.start()    # empty: the control plane publishes again
                with redis.Redis.from_url(redis_server.url) as after:
                    Publisher(after, signing_key).publish(state(2))
                await gw.applied.revision(2)
                await logs.wait_for(logging.INFO, "following Redis", count=2)
                assert gw.connected() == 1
                assert len(logs.matching(logging.WARNING, "Redis unreachable")) == 1   # once per outage
    run(scenario)


def test_a_restart_while_redis_is_down_starts_from_the_disk_cache(redis_server, publisher, signing_key, cache_path):
    async def scenario():
        publisher.publish(state(2))
        async with running_feed(redis_server.url, signing_key, cache_path) as gw:
            await gw.applied.revision(2)
        redis_server.stop()

        async with running_feed(redis_server.url, signing_key, cache_path) as restarted:
            assert restarted.holder.current.revision == 2
            assert restarted.applied.revisions() == [2]    # the heartbeat learns it too
            assert restarted.connected() == 0
    run(scenario)


def test_a_tampered_cache_is_refused_and_redis_supplies_the_snapshot(redis_server, publisher, client, signing_key,
                                                                     cache_path):
    envelope = json.loads(signed(7, signing_key))
    payload = json.loads(base64.b64decode(envelope["payload"]))
    payload["revision"] = 99
    envelope["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    cache_path.write_text(json.dumps(envelope))

    async def scenario():
        publisher.publish(state(3))
        with feed_log() as logs:
            async with running_feed(redis_server.url, signing_key, cache_path) as gw:
                assert gw.refused("cache", "signature") == 1
                assert logs.matching(logging.WARNING, "snapshot from cache refused (signature)")
                assert gw.holder.current.revision == 3 and gw.applied.revisions() == [3]
                assert cache_path.read_bytes() == client.get(SNAPSHOT_KEY)   # replaced by a good one
    run(scenario)


def test_at_start_the_newer_of_cache_and_redis_wins(redis_server, publisher, signing_key, cache_path):
    async def scenario():
        cache_path.write_bytes(signed(5, signing_key))
        publisher.publish(state(3))
        async with running_feed(redis_server.url, signing_key, cache_path) as gw:
            assert gw.holder.current.revision == 5
            assert gw.refused("redis", "older_revision") == 1
            publisher.publish(state(6))
            await gw.applied.revision(6)
    run(scenario)


def test_a_revocation_delta_applies_before_the_snapshot_and_survives_an_older_one(redis_server, publisher,
                                                                                 signing_key, cache_path):
    async def scenario():
        publisher.publish(state(1))
        with feed_log() as logs:
            async with running_feed(redis_server.url, signing_key, cache_path) as gw:
                assert not bob_is_revoked(gw.holder.current)
                publisher.publish_revocations(3, ISSUED_AT, [Revocation("user", "bob")])
                revoked = await gw.swaps.until(bob_is_revoked)
                assert revoked.revision == 1 and gw.holder.current is revoked
                assert gw.metrics.revocation_deltas_total.labels(result="applied").value == 1

                publisher.publish(state(2))                        # older than the delta
                assert bob_is_revoked(await gw.swaps.revision(2))
                publisher.publish(state(3, revoked_users=("bob",)))
                assert bob_is_revoked(await gw.swaps.revision(3))
                publisher.publish(state(4))                        # revision 4 lifted it again
                assert not bob_is_revoked(await gw.swaps.revision(4))

                publisher.publish_revocations(3, ISSUED_AT, [Revocation("user", "bob")])   # a replay
                await logs.wait_for(logging.INFO, "revocation delta of revision 3 superseded")
                assert gw.metrics.revocation_deltas_total.labels(result="superseded").value == 1
                assert not bob_is_revoked(gw.holder.current)
    run(scenario)


def test_the_event_loop_keeps_serving_while_a_snapshot_is_verified(redis_server, publisher, signing_key, cache_path,
                                                                    monkeypatch):
    """Verifying and compiling a large snapshot takes seconds of CPU; it must not stall the worker."""
    import asyncio
    import threading

    import dataplane.snapshotfeed as snapshotfeed

    release = threading.Event()
    verifying = threading.Event()

    def held_verify(envelope, public_key):
        snapshot = verify_snapshot(envelope, public_key)
        if snapshot.revision == 2:
            verifying.set()
            assert release.wait(20), "the test never released the verification"
        return snapshot

    monkeypatch.setattr(snapshotfeed, "verify_snapshot", held_verify)

    async def scenario():
        publisher.publish(state(1))
        async with running_feed(redis_server.url, signing_key, cache_path) as gw:
            publisher.publish(state(2))
            async with asyncio.timeout(20):
                while not verifying.is_set():      # the loop turns while the verification is held
                    await asyncio.sleep(0.01)
            assert gw.holder.current.revision == 1  # the old snapshot serves until the new one is ready
            release.set()
            await gw.applied.revision(2)

    run(scenario)


def test_a_revocation_delta_applies_while_a_snapshot_is_still_being_verified(redis_server, publisher, signing_key,
                                                                            cache_path, monkeypatch):
    """Revocation must not wait seconds behind the verification of a large snapshot."""
    import asyncio
    import threading

    import dataplane.snapshotfeed as snapshotfeed

    release, verifying = threading.Event(), threading.Event()

    def held_verify(envelope, public_key):
        snapshot = verify_snapshot(envelope, public_key)
        if snapshot.revision == 2:
            verifying.set()
            assert release.wait(20), "the test never released the verification"
        return snapshot

    monkeypatch.setattr(snapshotfeed, "verify_snapshot", held_verify)

    async def scenario():
        publisher.publish(state(1))
        async with running_feed(redis_server.url, signing_key, cache_path) as gw:
            publisher.publish(state(2))
            async with asyncio.timeout(20):
                while not verifying.is_set():
                    await asyncio.sleep(0.01)
            publisher.publish_revocations(3, ISSUED_AT, [Revocation("user", "bob")])
            revoked = await gw.swaps.until(bob_is_revoked)
            assert revoked.revision == 1 and not release.is_set()   # applied with revision 2 still held
            release.set()
            assert bob_is_revoked(await gw.swaps.revision(2))          # and it stays over the new snapshot

    run(scenario)
