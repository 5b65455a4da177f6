"""A gateway's link to the fleet through Redis (`--redis-url`): the snapshot feed, the heartbeat
and the audit shipper, wired together and started and stopped in the order a worker needs.

- Every worker follows the snapshots itself (snapshotfeed.py) and reports the revision it applied
  in its own heartbeat (heartbeat.py): fleet status counts worker processes, each holds a snapshot.
- Exactly one audit shipper per spool file (auditship.py: its offset file is not shared-safe):
  the supervising parent runs it when there are several workers, the worker when it is alone.
- On drain the heartbeat stops first, so that the fleet forgets a draining worker at once; the
  feed runs until the streams are done, so that a revocation still ends them.

The Redis URL may hold a password: it is handed to the Redis clients only, never logged.
"""
from __future__ import annotations

import asyncio
import logging

import redis

from .auditship import AuditShipper
from .config import GatewayConfig
from .heartbeat import Heartbeat
from .snapshot import Snapshot
from .snapshotfeed import CONNECT_TIMEOUT, SOCKET_TIMEOUT, SnapshotFeed

log = logging.getLogger("accesspoint.distribution")


def redis_client(config: GatewayConfig) -> redis.Redis:
    """A blocking client for the heartbeat and shipper threads; timeouts so that a Redis that
    stops answering counts as down instead of hanging them."""
    return redis.Redis.from_url(config.redis_url, socket_timeout=SOCKET_TIMEOUT,
                                socket_connect_timeout=CONNECT_TIMEOUT)


def start_audit_shipper(config: GatewayConfig) -> AuditShipper:
    shipper = AuditShipper(config.audit_spool, redis_client(config))
    shipper.start()
    log.info("shipping audit events from %s to Redis", config.audit_spool)
    return shipper


class Distribution:
    """One worker's feed, heartbeat and (when it is the only worker) audit shipper."""

    def __init__(self, config: GatewayConfig, index: int, holder, metrics, public_key):
        self._config = config
        self._ship_audit = config.workers <= 1
        self.heartbeat = Heartbeat(redis_client(config), gateway_id=config.worker_gateway_id(index))
        self.feed = SnapshotFeed(
            config.redis_url, holder, public_key, config.snapshot_cache_path,
            resync_interval=config.snapshot_resync_interval,
            on_applied=self.applied, metrics=metrics)
        self._holder = holder
        self._shipper: AuditShipper | None = None

    async def start(self) -> None:
        current = self._holder.current
        if current is not None:           # started from --snapshot: report that one
            self.heartbeat.applied(current.revision)
        self.heartbeat.start()
        if self._ship_audit:
            self._shipper = start_audit_shipper(self._config)
        await self.feed.start()
        log.info("following snapshots in Redis as gateway %s", self.heartbeat.gateway_id)

    def applied(self, snapshot: Snapshot) -> None:
        self.heartbeat.applied(snapshot.revision)

    async def leave_fleet(self) -> None:
        """Stop the heartbeat and delete its key (the first step of a drain)."""
        await asyncio.to_thread(self.heartbeat.stop)

    async def stop(self) -> None:
        await self.feed.stop()
        if self._shipper is not None:
            await asyncio.to_thread(self._shipper.stop)
