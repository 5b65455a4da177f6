"""Audit events from the gateways' spool to the control plane's store, each exactly once: the
shipper (dataplane/auditship.py) and the ingester (controlplane/auditingest.py) over real Redis,
through replays, a dead consumer and a Redis outage; and the query API."""
from __future__ import annotations

import datetime
import threading
import time
from pathlib import Path

import grpc
import pytest
import redis
from google.protobuf.timestamp_pb2 import Timestamp

from controlplane.api.v1 import audit_pb2, audit_pb2_grpc
from controlplane.auditingest import GROUP, AuditIngester, parse_event
from controlplane.model import EventQuery
from controlplane.store import open_store
from dataplane.audit import AuditSpool
from dataplane.auditship import AUDIT_STREAM, AuditShipper

from .planes import READER
from ..conftest import RedisServer

T0 = datetime.datetime(2026, 11, 23, 8, 0, tzinfo=datetime.timezone.utc)
USERS = ("alice", "bob", "carol")


def spool_events(path: Path, start: int, count: int) -> set[str]:
    """`count` events in the real spool format; returns their ids."""
    spool = AuditSpool(path)
    ids = set()
    for number in range(start, start + count):
        event_id = f"req-{number:05d}"
        spool.append({"id": event_id, "time": (T0 + datetime.timedelta(seconds=number)).isoformat(),
                      "user": USERS[number % 3], "cluster": "sandbox", "verb": "get" if number % 2 else "list",
                      "decision": "deny" if number % 5 == 0 else "allow", "code": 403 if number % 5 == 0 else 200,
                      "resource": "pods", "namespace": "default"})
        ids.add(event_id)
    spool.close()
    return ids


def stored_ids(store) -> set[str]:
    return {e.id for e in store.audit_events(EventQuery(limit=1_000_000))}


def eventually(condition, timeout: float = 20) -> None:
    """Poll a condition (the threads under test decide when it holds) within a bounded time."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def drain(shipper: AuditShipper, ingester: AuditIngester) -> None:
    while shipper.ship_once():
        pass
    while ingester.step():
        pass


def test_parse_event_keeps_the_line_and_normalises_the_time():
    event = parse_event(b'{"id":"r1","time":"2026-11-23T09:00:00.5+01:00","user":"ann","code":200}')
    assert (event.id, event.time, event.user, event.cluster, event.code) == ("r1", "2026-11-23T08:00:00.500Z",
                                                                              "ann", "", 200)
    assert event.event == '{"id":"r1","time":"2026-11-23T09:00:00.5+01:00","user":"ann","code":200}'
    for bad in (b'{"time":"2026-11-23T08:00:00Z"}', b'{"id":"r1","time":"yesterday"}', b'[1]', b'{"id":'):
        with pytest.raises(ValueError):
            parse_event(bad)


def test_shipped_events_are_stored_exactly_once_even_when_replayed(tmp_path, store, redis_client):
    spool = tmp_path / "spool.jsonl"
    ids = spool_events(spool, 0, 120)
    with open(spool, "a", encoding="utf-8") as torn:   # a torn line (short write) is skipped, not shipped
        torn.write('{"id":"req-torn","ti\n')
    ids |= spool_events(spool, 120, 5)
    shipper = AuditShipper(spool, redis_client, batch=50)
    ingester = AuditIngester(redis_client, store, "replica-1", block=0.01, trim_interval=0)
    assert [shipper.ship_once() for _ in range(4)] == [50, 50, 25, 0]
    while ingester.step():
        pass
    assert stored_ids(store) == ids

    shipper.offset_path.unlink()   # as if the gateway crashed before saving its offset: all of it again
    drain(shipper, ingester)
    assert stored_ids(store) == ids and len(store.audit_events(EventQuery(limit=1000))) == 125
    assert redis_client.xpending(AUDIT_STREAM, GROUP)["pending"] == 0
    assert redis_client.xlen(AUDIT_STREAM) <= 1   # acknowledged entries are trimmed

    ids |= spool_events(spool, 125, 3)   # and shipping goes on from the saved offset
    assert shipper.ship_once() == 3


class _CrashingStore:
    """A replica that dies between reading entries and storing them."""

    def ingest_audit_events(self, events):
        raise RuntimeError("replica died")


def test_entries_left_pending_by_a_dead_replica_are_claimed(tmp_path, store, redis_client):
    spool = tmp_path / "spool.jsonl"
    ids = spool_events(spool, 0, 30)
    while AuditShipper(spool, redis_client).ship_once():
        pass
    dead = AuditIngester(redis_client, _CrashingStore(), "replica-dead")
    with pytest.raises(RuntimeError):
        dead.step()
    assert redis_client.xpending(AUDIT_STREAM, GROUP)["consumers"] == [{"name": b"replica-dead", "pending": 30}]

    # Entries younger than claim_idle may be a live replica's work in flight: they stay where they are.
    patient = AuditIngester(redis_client, store, "replica-patient", block=0.01, claim_idle=3600)
    assert patient.step() == 0
    assert redis_client.xpending(AUDIT_STREAM, GROUP)["consumers"] == [{"name": b"replica-dead", "pending": 30}]

    # Idle for at least claim_idle (0 here, so that Redis's millisecond idle clock cannot race the test).
    survivor = AuditIngester(redis_client, store, "replica-live", block=0.01, claim_idle=0)
    while survivor.step():
        pass
    assert stored_ids(store) == ids
    assert redis_client.xpending(AUDIT_STREAM, GROUP)["pending"] == 0


def test_a_redis_outage_loses_and_duplicates_nothing(tmp_path, caplog):
    server = RedisServer(tmp_path)
    server.start()
    store = open_store(f"sqlite:///{tmp_path / 'cp.db'}")
    ship_client = redis.Redis.from_url(server.url)
    ingest_client = redis.Redis.from_url(server.url, single_connection_client=True)
    spool = tmp_path / "spool.jsonl"
    shipper = AuditShipper(spool, ship_client, batch=25, interval=0.02, max_backoff=0.1)
    ingester = AuditIngester(ingest_client, store, "replica-1", block=0.05)
    stop = threading.Event()
    ingesting = threading.Thread(target=ingester.run, args=(stop,))
    shipper.start()
    ingesting.start()
    try:
        ids = spool_events(spool, 0, 60)
        eventually(lambda: stored_ids(store) == ids)
        server.stop()
        ids |= spool_events(spool, 60, 60)   # the gateway goes on spooling while Redis is away
        server.start()                      # empty: the stream and its group are gone too
        eventually(lambda: stored_ids(store) == ids)
        assert len(store.audit_events(EventQuery(limit=1000))) == 120
        assert "audit consumer group vanished" in caplog.text   # the restart really emptied Redis
    finally:
        stop.set()
        shipper.stop()
        ingesting.join()
        ship_client.close()
        ingest_client.close()
        store.close()
        server.stop()


def _at(seconds: int) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(T0 + datetime.timedelta(seconds=seconds))
    return stamp


def test_query_audit_api(channel, plane, tmp_path, redis_client):
    spool = tmp_path / "spool.jsonl"
    spool_events(spool, 0, 30)
    while AuditShipper(spool, redis_client).ship_once():
        pass
    eventually(lambda: len(plane.store.audit_events(EventQuery(limit=100))) == 30)   # the plane's own ingester
    audit = audit_pb2_grpc.AuditServiceStub(channel)

    def query(**filters) -> list[audit_pb2.AuditEvent]:
        return list(audit.QueryAudit(audit_pb2.QueryAuditRequest(**filters), metadata=READER).events)

    newest = query(limit=3)
    assert [e.id for e in newest] == ["req-00029", "req-00028", "req-00027"]
    assert newest[0].time.ToDatetime(tzinfo=datetime.timezone.utc) == T0 + datetime.timedelta(seconds=29)
    denied_by_alice = query(user="alice", decision="deny")
    assert [e.id for e in denied_by_alice] == ["req-00015", "req-00000"]
    assert {(e.code, e.cluster) for e in denied_by_alice} == {(403, "sandbox")}
    assert [e.id for e in query(verb="get", since=_at(25), until=_at(28))] == ["req-00027", "req-00025"]
    for bad in (dict(limit=20_000), dict(since=_at(5), until=_at(5))):
        with pytest.raises(grpc.RpcError) as caught:
            query(**bad)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_events_a_restarted_redis_lost_before_they_were_stored_are_shipped_again(tmp_path):
    """Redis without persistence restarts after taking events the control plane had not stored:
    the shipper notices the new Redis and sends again everything not confirmed stored."""
    server = RedisServer(tmp_path)
    server.start()
    store = open_store(f"sqlite:///{tmp_path / 'cp.db'}")
    try:
        client = redis.Redis.from_url(server.url)
        spool = tmp_path / "spool.jsonl"
        shipper = AuditShipper(spool, client, batch=10)
        ingester = AuditIngester(client, store, "replica-1", block=0.01, trim_interval=0)
        ids = spool_events(spool, 0, 20)
        drain(shipper, ingester)                        # stored, acknowledged, trimmed
        assert stored_ids(store) == ids
        assert shipper.ship_once() == 0                 # the first batch is now confirmed: trimmed away

        lost = spool_events(spool, 20, 15)
        while shipper.ship_once():                      # in Redis, not stored yet ...
            pass
        server.stop()
        server.start()                                  # ... and gone with it
        client = redis.Redis.from_url(server.url)
        shipper._client = client
        ingester = AuditIngester(client, store, "replica-1", block=0.01)
        assert shipper.ship_once() == 10                # from the first unconfirmed batch on, again
        drain(shipper, ingester)
        assert stored_ids(store) == ids | lost
        assert len(store.audit_events(EventQuery(limit=1000))) == 35
    finally:
        store.close()
        server.stop()
