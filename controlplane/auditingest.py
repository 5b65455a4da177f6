"""Audit ingestion: gateway events from the Redis Stream into the store, each exactly once.

The gateways' side is dataplane/auditship.py (stream `accesspoint:audit`, field `event`). Every
replica reads in the consumer group `controlplane` as its replica id. Delivery is at least once and
the insert is idempotent, which together make exactly once in the store:
- an entry is XACKed only after the transaction holding its event has committed;
- the event `id` is the table's key and inserts skip known ids, so a replayed entry (a shipper
  crash, a pending entry read again or claimed) adds nothing;
- entries a dead replica left pending are claimed (XAUTOCLAIM) once idle for `claim_idle`;
- a Redis restart without persistence loses the group: it is created again, from the start.
Acknowledged entries are trimmed from the stream, so Redis holds only what is not yet stored.
"""
from __future__ import annotations

import datetime
import json
import logging
import threading
import time
from typing import Any, Callable

import redis

from dataplane.auditship import AUDIT_STREAM, EVENT_FIELD

from .model import GatewayEvent, utc_text_ms
from .store import Store

log = logging.getLogger(__name__)

GROUP = "controlplane"
BATCH = 500
BLOCK = 1.0               # seconds one read waits for new entries (`wake` cuts it short)
TRIM_INTERVAL = 60.0
MAX_BACKOFF = 5.0
MAX_ID_LENGTH = 256


def parse_event(raw: bytes) -> GatewayEvent:
    """The stored form of one spool line; ValueError when it cannot be stored."""
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    event_id = data.get("id")
    if not isinstance(event_id, str) or not 0 < len(event_id) <= MAX_ID_LENGTH:
        raise ValueError("no usable 'id'")
    moment = datetime.datetime.fromisoformat(str(data.get("time", "")))   # ValueError when absent or bad
    code = data.get("code")
    user, cluster, verb, decision = (str(data.get(name) or "") for name in ("user", "cluster", "verb", "decision"))
    return GatewayEvent(id=event_id, time=utc_text_ms(moment), user=user, cluster=cluster, verb=verb,
                        decision=decision, code=code if isinstance(code, int) else 0, event=raw.decode("utf-8"))


class AuditIngester:
    """`client` is the ingester's own: a single connection (so that `wake` can name it), used by
    one thread at a time."""

    def __init__(self, client: redis.Redis, store: Store, consumer: str, batch: int = BATCH,
                 block: float = BLOCK, claim_idle: float = 30.0, trim_interval: float = TRIM_INTERVAL,
                 clock: Callable[[], float] = time.monotonic):
        self._client = client
        self._store = store
        self.consumer = consumer
        self._batch = batch
        self._block_ms = int(block * 1000)
        self._claim_idle_ms = int(claim_idle * 1000)
        self._clock = clock
        self._group_ready = False
        self._own_pending = True     # read our own unacknowledged entries first (restart, failed write)
        self._next_claim = 0.0
        self._claim_cursor = "0-0"
        self._trim_interval = trim_interval
        self._next_trim = clock() + trim_interval
        self._connection_id: int | None = None   # the Redis CLIENT ID a blocked read runs as

    def step(self) -> int:
        """Store and acknowledge one batch; returns how many entries it took off the stream.
        Raises on Redis or store failures (nothing is acknowledged then)."""
        try:
            self._ensure_group()
            entries = self._next_entries()
            if entries:
                self._store_and_ack(entries)
            if self._clock() >= self._next_trim:
                self._trim()
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            log.warning("audit consumer group vanished (Redis restarted?): creating it again")
            self._group_ready = False
            return 0
        return len(entries)

    def run(self, stop: threading.Event) -> None:
        """Ingest until `stop` is set, backing off while Redis or the store fail."""
        failures = 0
        while not stop.is_set():
            try:
                self.step()
            except Exception as exc:   # keep ingesting whatever failed; the entries stay pending
                self._connection_id = None   # a reconnect gets a new one
                if stop.is_set():
                    break
                if not failures:
                    log.warning("audit ingestion paused: %s (%s)", exc.__class__.__name__, str(exc)[:200])
                failures += 1
                self._own_pending = True
                stop.wait(min(0.1 * 2 ** failures, MAX_BACKOFF))
                continue
            if failures:
                log.info("audit ingestion resumed")
            failures = 0

    def wake(self, other: redis.Redis) -> None:
        """Cut a blocked read short (when stopping), through `other`, another connection."""
        if self._connection_id is not None:
            try:
                other.client_unblock(self._connection_id)
            except redis.RedisError:
                pass   # the read ends by itself within BLOCK

    def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            # From the start of the stream: entries shipped before the first control plane ran count too.
            self._client.xgroup_create(AUDIT_STREAM, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def _next_entries(self) -> list[tuple[bytes, dict[bytes, bytes] | None]]:
        if self._own_pending:
            entries = self._read("0")
            if entries:
                return entries
            self._own_pending = False
        if self._clock() >= self._next_claim:
            cursor, entries, *_ = self._client.xautoclaim(AUDIT_STREAM, GROUP, self.consumer, self._claim_idle_ms,
                                                          start_id=self._claim_cursor, count=self._batch)
            self._claim_cursor = cursor.decode() if isinstance(cursor, bytes) else cursor
            if self._claim_cursor == "0-0":   # a full pass over the pending entries: rest a while
                self._next_claim = self._clock() + self._claim_idle_ms / 2000
            if entries:
                log.info("claimed %d audit entries left pending by another consumer", len(entries))
                return entries
        if self._connection_id is None:
            self._connection_id = self._client.client_id()
        return self._read(">", block=self._block_ms)

    def _read(self, start: str, block: int | None = None) -> list[Any]:
        reply = self._client.xreadgroup(GROUP, self.consumer, {AUDIT_STREAM: start}, count=self._batch, block=block)
        return reply[0][1] if reply else []

    def _store_and_ack(self, entries: list[tuple[bytes, dict[bytes, bytes] | None]]) -> None:
        events: list[GatewayEvent] = []
        for entry_id, fields in entries:
            try:
                if not fields or EVENT_FIELD.encode() not in fields:
                    raise ValueError(f"no '{EVENT_FIELD}' field")
                events.append(parse_event(fields[EVENT_FIELD.encode()]))
            except (ValueError, UnicodeDecodeError) as exc:
                # It can never be stored; acknowledging it keeps it from blocking the stream.
                log.warning("audit entry %s dropped: %s", entry_id.decode(), exc)
        self._store.ingest_audit_events(events)
        self._client.xack(AUDIT_STREAM, GROUP, *[entry_id for entry_id, _ in entries])

    def _trim(self) -> None:
        """Drop entries every consumer acknowledged: those before the oldest pending one, or up to
        the last delivered when none is pending."""
        self._next_trim = self._clock() + self._trim_interval
        group = next((g for g in self._client.xinfo_groups(AUDIT_STREAM) if g["name"] == GROUP.encode()), None)
        if group is None:
            return
        pending = self._client.xpending(AUDIT_STREAM, GROUP)
        threshold = pending["min"] if pending["pending"] else group["last-delivered-id"]
        self._client.xtrim(AUDIT_STREAM, minid=threshold, approximate=False)
