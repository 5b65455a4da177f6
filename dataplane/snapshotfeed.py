"""The snapshot feed: keeps a worker's SnapshotHolder on the control plane's latest signed
snapshot, as published in Redis (controlplane/snapshots.py writes this contract):

- key `<prefix>:snapshot`          the signed snapshot envelope: the whole state, the one truth
- channel `<prefix>:snapshots`     a revision after each write: "read the key now"
- channel `<prefix>:revocations`   signed revocation deltas, enforced before the full snapshot

Pub/sub loses messages across reconnects, so the key is re-read on every notice, after every
(re)connection and on a timer; a missed notice only delays a snapshot, never loses one. Every
snapshot is verified and may never move the revision backwards; a refused one is logged and
counted, and the current one stays. The last applied envelope is kept on disk (still signed, so
verified again when loaded) so that a worker started while Redis is down serves its last good state.
"""
from __future__ import annotations

import asyncio
import logging
import random
from pathlib import Path
from typing import Any, Callable

import redis
import redis.asyncio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from dataplane.files import write_atomically
from dataplane.metrics import GatewayMetrics
from dataplane.snapshot import (SignatureError, Snapshot, SnapshotError, SnapshotHolder, verify_revocation_delta,
                                verify_snapshot)

log = logging.getLogger(__name__)

BACKOFF_INITIAL = 0.1
BACKOFF_MAX = 5.0
SOCKET_TIMEOUT = 5.0           # a Redis that stops answering counts as down after this long
CONNECT_TIMEOUT = 2.0
RESYNC_POLL = 0.05        # seconds between looks at a running re-read (its failure means reconnecting)

# The contract with the control plane's publisher (controlplane/snapshots.py imports these). One
# Redis (or Redis database) serves one fleet: a foreign fleet's notices would only cause re-reads,
# and its deltas fail our signature check.
SNAPSHOT_KEY = "accesspoint:snapshot"
SNAPSHOT_CHANNEL = "accesspoint:snapshots"
REVOCATION_CHANNEL = "accesspoint:revocations"


class SnapshotFeed:
    def __init__(self, redis_url: str, holder: SnapshotHolder, public_key: Ed25519PublicKey, cache_path: Path, *,
                 resync_interval: float = 10.0,
                 on_applied: Callable[[Snapshot], None] | None = None, metrics: GatewayMetrics | None = None):
        if resync_interval <= 0:
            raise ValueError("resync_interval must be positive")
        self._redis_url = redis_url            # may hold a password: never logged
        self._holder = holder
        self._public_key = public_key
        self._cache_path = Path(cache_path)
        self._snapshot_key = SNAPSHOT_KEY
        self._snapshot_channel = SNAPSHOT_CHANNEL.encode()
        self._revocation_channel = REVOCATION_CHANNEL.encode()
        self._resync_interval = resync_interval
        self._on_applied = on_applied
        self._metrics = metrics if metrics is not None else GatewayMetrics()
        self._client: redis.asyncio.Redis | None = None
        self._task: asyncio.Task | None = None
        self._first_sync_tried = asyncio.Event()
        self._connected = False
        self._outage_reported = False
        self._last_read: bytes | None = None   # the key's value last handled: the same bytes again is a no-op
        self._announced = -1                   # highest revision announced on the channel

    async def start(self) -> None:
        """Apply the disk cache, then try Redis once (so a healthy start serves the latest
        snapshot at once); following Redis then continues in the background."""
        self._metrics.snapshot_feed_connected.set(0)
        await self._load_cache()
        # The client's own retries would stall failure detection; the feed's loop backs off instead.
        self._client = redis.asyncio.Redis.from_url(
            self._redis_url, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=CONNECT_TIMEOUT,
            retry=Retry(NoBackoff(), 0))
        self._task = asyncio.create_task(self._run(), name="snapshot-feed")
        await self._first_sync_tried.wait()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        self._metrics.snapshot_feed_connected.set(0)

    # -- following Redis --------------------------------------------------------------------------

    async def _run(self) -> None:
        """Follow Redis for the life of the worker; an outage (or a bug) means back off and
        reconnect, never an exception out of here."""
        delay = BACKOFF_INITIAL
        while True:
            try:
                await self._follow()
            except (redis.RedisError, OSError) as exc:
                if not self._outage_reported:   # once per outage, not every attempt
                    log.warning("snapshot feed: Redis unreachable (%s: %s); serving revision %s, reconnecting",
                                exc.__class__.__name__, exc, self._current_revision())
                    self._outage_reported = True
            except Exception:
                log.exception("snapshot feed failed; reconnecting")
            self._first_sync_tried.set()
            if self._connected:   # it was up until now: a new outage starts with a short wait
                self._connected = False
                self._metrics.snapshot_feed_connected.set(0)
                delay = BACKOFF_INITIAL
            # Jitter: a fleet that lost the same Redis must not come back in lockstep.
            await asyncio.sleep(delay / 2 + random.uniform(0, delay / 2))
            delay = min(delay * 2, BACKOFF_MAX)

    async def _follow(self) -> None:
        assert self._client is not None
        loop = asyncio.get_running_loop()
        pubsub = self._client.pubsub()
        try:
            # Subscribe before the first read: a snapshot written in between is then announced
            # to us instead of waiting for the timer.
            await pubsub.subscribe(self._snapshot_channel, self._revocation_channel)
            await self._resync(found_by_timer=False)
            self._connected = True
            self._outage_reported = False
            self._metrics.snapshot_feed_connected.set(1)
            self._first_sync_tried.set()
            log.info("snapshot feed: following Redis (revision %s)", self._current_revision())
            next_resync = loop.time() + self._resync_interval
            # Re-reads run as a task of their own, one at a time, so that a revocation delta is
            # applied at once even while a large snapshot is being verified.
            resync: asyncio.Task | None = None
            again: bool | None = None      # asked for while one ran: its found_by_timer
            try:
                while True:
                    if resync is not None and resync.done():
                        resync.result()        # a Redis failure reconnects like any other
                        resync = None
                        if again is not None:
                            resync, again = asyncio.create_task(self._resync(found_by_timer=again)), None
                    timeout = max(0.0, next_resync - loop.time())
                    if resync is not None:
                        timeout = min(timeout, RESYNC_POLL)
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout)
                    wanted = None              # a re-read wanted: found_by_timer
                    if message is not None and message["type"] == "message" and \
                            self._on_message(message["channel"], message["data"]):
                        wanted = False
                    if loop.time() >= next_resync:
                        wanted = wanted is None   # a notice in the same turn makes it no timer find
                        next_resync = loop.time() + self._resync_interval
                    if wanted is None:
                        continue
                    if resync is None:
                        resync = asyncio.create_task(self._resync(found_by_timer=wanted))
                    else:
                        again = wanted if again is None else again and wanted
            finally:
                if resync is not None:
                    resync.cancel()
                    await asyncio.gather(resync, return_exceptions=True)
        finally:
            try:
                await pubsub.aclose()
            except (redis.RedisError, OSError):
                pass   # the connection is already gone

    def _on_message(self, channel: bytes, data: Any) -> bool:
        """Handle one message; True when it asks for the snapshot key to be read again."""
        if channel == self._revocation_channel:
            self._on_revocation_delta(data)
            return False
        if channel == self._snapshot_channel:
            self._note_announced(data)
            return True
        return False

    def _note_announced(self, data: Any) -> None:
        """Gap detection: notices should count up one by one. A jump is harmless (the key holds the
        whole state, and a busy control plane may coalesce revisions) but worth counting."""
        try:
            revision = int(data)
        except (TypeError, ValueError):
            log.warning("snapshot feed: a notice that is not a revision; re-reading the key anyway")
            return
        current = self._holder.current
        known = max(self._announced, current.revision if current is not None else -1)
        if known >= 0 and revision > known + 1:
            log.info("snapshot feed: notice of revision %d after %d: %d revision(s) not announced",
                     revision, known, revision - known - 1)
            self._metrics.snapshot_notices_missed_total.labels(how="gap").inc(revision - known - 1)
        self._announced = max(self._announced, revision)

    async def _resync(self, *, found_by_timer: bool) -> None:
        assert self._client is not None
        envelope = await self._client.get(self._snapshot_key)
        if envelope is None or envelope == self._last_read:
            return
        self._last_read = envelope
        snapshot = await self._verified(envelope, "redis")
        if snapshot is None:
            return
        current = self._holder.current
        if current is not None:
            if snapshot.revision < current.revision:
                self._refuse("redis", "older_revision",
                             f"revision {snapshot.revision} is older than the current {current.revision}")
                return
            if snapshot.revision == current.revision:
                return   # what this worker runs already (e.g. loaded from the cache)
        if found_by_timer and snapshot.revision > self._announced:
            log.info("snapshot feed: revision %d found by the periodic re-read: its notice was lost",
                     snapshot.revision)
            self._metrics.snapshot_notices_missed_total.labels(how="resync").inc()
        await self._apply(snapshot, envelope)

    async def _verified(self, envelope: bytes, source: str) -> Snapshot | None:
        """The snapshot in `envelope`, or None when it is refused (logged and counted). Parsing,
        checking and compiling a large snapshot takes seconds of CPU: a thread does it, so that the
        worker's event loop keeps serving requests meanwhile."""
        try:
            return await asyncio.to_thread(verify_snapshot, envelope, self._public_key)
        except SnapshotError as exc:
            self._refuse(source, "signature" if isinstance(exc, SignatureError) else "format", str(exc))
            return None

    def _refuse(self, source: str, reason: str, detail: str) -> None:
        log.warning("snapshot from %s refused (%s): %s; keeping revision %s", source, reason, detail,
                    self._current_revision())
        self._metrics.snapshot_refused_total.labels(source=source, reason=reason).inc()

    def _current_revision(self) -> str:
        current = self._holder.current
        return str(current.revision) if current is not None else "none"

    async def _apply(self, snapshot: Snapshot, envelope: bytes) -> None:
        self._holder.apply(snapshot)
        try:
            await asyncio.to_thread(write_atomically, self._cache_path, envelope)
        except OSError as exc:
            log.warning("snapshot feed: revision %d not cached at %s: %s", snapshot.revision, self._cache_path,
                        exc.strerror or exc.__class__.__name__)
        self._report_applied(snapshot)

    def _report_applied(self, snapshot: Snapshot) -> None:
        if self._on_applied is None:
            return
        try:
            self._on_applied(snapshot)
        except Exception:  # reporting must never stop the feed
            log.exception("snapshot feed: on_applied failed")

    def _on_revocation_delta(self, envelope: Any) -> None:
        try:
            delta = verify_revocation_delta(envelope, self._public_key)
        except SnapshotError as exc:
            log.warning("revocation delta refused: %s", exc)
            self._metrics.revocation_deltas_total.labels(result="refused").inc()
            return
        if self._holder.apply_revocations(delta["revision"], delta["revocations"]):
            self._metrics.revocation_deltas_total.labels(result="applied").inc()
        else:
            log.info("snapshot feed: revocation delta of revision %d superseded by the current snapshot",
                     delta["revision"])
            self._metrics.revocation_deltas_total.labels(result="superseded").inc()

    # -- disk cache -------------------------------------------------------------------------------

    async def _load_cache(self) -> None:
        try:
            envelope = await asyncio.to_thread(self._cache_path.read_bytes)
        except FileNotFoundError:
            log.info("snapshot feed: no cached snapshot at %s", self._cache_path)
            return
        except OSError as exc:
            log.warning("snapshot feed: cached snapshot at %s not readable: %s", self._cache_path,
                        exc.strerror or exc.__class__.__name__)
            return
        snapshot = await self._verified(envelope, "cache")
        current = self._holder.current
        if snapshot is None or current is not None and snapshot.revision <= current.revision:
            return   # a stale cache is normal (e.g. a newer snapshot file was applied first)
        self._holder.apply(snapshot)
        log.info("snapshot feed: started from the cached revision %d", snapshot.revision)
        self._report_applied(snapshot)
