"""After a commit: publish the store's latest snapshot (and revocation deltas) to Redis.

A commit is never undone because Redis is away: the failure is logged, and the periodic
re-publish (`run_periodically`) delivers the latest state once Redis is back. Publishing the
latest state, not the mutation's own revision, is right because the compare-and-set in Redis
keeps only the newest anyway.
"""
from __future__ import annotations

import datetime
import logging
import threading

import redis

from .errors import Unavailable
from .model import Revocation, utc_text
from .snapshots import Publisher
from .store import Store

log = logging.getLogger(__name__)


class Distributor:
    def __init__(self, store: Store, publisher: Publisher):
        self._store = store
        self._publisher = publisher

    def publish_latest(self) -> bool:
        """True when the latest snapshot is in Redis now (written by this call or already there)."""
        state = self._store.state()
        try:
            self._publisher.publish(state)
        except redis.RedisError as exc:
            log.warning("snapshot revision %d not published (will retry): %s", state.revision,
                        exc.__class__.__name__)
            return False
        return True

    def publish_revocation(self, revision: int, revocation: Revocation) -> None:
        try:
            self._publisher.publish_revocations(
                revision, utc_text(datetime.datetime.now(datetime.timezone.utc)), [revocation])
        except redis.RedisError as exc:
            log.warning("revocation delta of revision %d not published: %s", revision, exc.__class__.__name__)
        self.publish_latest()

    def published_revision(self) -> int:
        """The snapshot revision in Redis now (-1: none yet)."""
        try:
            return self._publisher.published_revision()
        except redis.RedisError as exc:
            raise Unavailable(f"Redis is unreachable ({exc.__class__.__name__})") from None

    def run_periodically(self, stop: threading.Event, interval: float) -> None:
        """Re-publish until `stop` is set: catches up after Redis outages and lost notices."""
        while not stop.wait(interval):
            self.publish_latest()
