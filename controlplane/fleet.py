"""Fleet status from the gateways' heartbeats (the contract is in dataplane/heartbeat.py): which
gateways are live, which revision each runs, and waiting until all of them run a revision.

The heartbeat keys are the truth; the `accesspoint:applied` notices only say when to look again,
so a lost notice costs at most one poll interval and a gateway that dies while being waited for
drops out when its key expires.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Callable

import redis

from dataplane.heartbeat import APPLIED_CHANNEL, GATEWAY_KEY_PREFIX

from .errors import DeadlineExceeded, Unavailable

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.5
SCAN_BATCH = 500


@dataclass(frozen=True)
class GatewayStatus:
    id: str
    hostname: str
    pid: int
    version: str
    revision: int
    applied_at: str           # RFC 3339 or "" before the first apply
    started_at: str
    heartbeat_at: str

    @classmethod
    def from_json(cls, value: bytes) -> "GatewayStatus":
        data = json.loads(value)
        return cls(id=str(data["id"]), hostname=str(data["hostname"]), pid=int(data["pid"]),
                   version=str(data["version"]), revision=int(data["revision"]),
                   applied_at=data["applied_at"] or "", started_at=str(data["started_at"]),
                   heartbeat_at=str(data["heartbeat_at"]))


@dataclass(frozen=True)
class Applied:
    """The answer of a successful wait."""
    gateways: list[GatewayStatus]
    waited: float             # seconds


class Fleet:
    def __init__(self, client: redis.Redis, poll_interval: float = POLL_INTERVAL,
                 clock: Callable[[], float] = time.monotonic):
        self._client = client
        self._poll_interval = poll_interval
        self._clock = clock

    def gateways(self) -> list[GatewayStatus]:
        """The live gateways, by id."""
        try:
            keys = sorted(self._client.scan_iter(match=GATEWAY_KEY_PREFIX + "*", count=SCAN_BATCH))
            values = self._client.mget(keys) if keys else []
        except redis.RedisError as exc:
            raise Unavailable(f"fleet status needs Redis, which is unreachable ({exc.__class__.__name__})") from None
        live = []
        for key, value in zip(keys, values):
            if value is None:
                continue   # expired between SCAN and MGET
            try:
                live.append(GatewayStatus.from_json(value))
            except (ValueError, KeyError, TypeError):
                log.warning("ignoring malformed heartbeat %s", key.decode("utf-8", "replace"))
        return sorted(live, key=lambda g: g.id)

    def wait_for(self, revision: int, timeout: float) -> Applied:
        """Return when every live gateway runs `revision` or newer; DeadlineExceeded names those
        that did not within `timeout` seconds."""
        started = self._clock()
        deadline = started + timeout
        try:
            notices = self._client.pubsub()
            # Subscribed (confirmed) before the first look, so no notice falls in between.
            notices.subscribe(APPLIED_CHANNEL)
            notices.get_message(timeout=timeout)
        except redis.RedisError as exc:
            raise Unavailable(f"waiting needs Redis, which is unreachable ({exc.__class__.__name__})") from None
        try:
            while True:
                live = self.gateways()
                laggards = {g.id: g for g in live if g.revision < revision}
                if not laggards:
                    return Applied(live, self._clock() - started)
                remaining = deadline - self._clock()
                if remaining <= 0:
                    lagging = ", ".join(f"{g.id} (at {g.revision})" for g in laggards.values())
                    raise DeadlineExceeded(f"revision {revision} not applied within {timeout:g} s by "
                                           f"{len(laggards)} of {len(live)} live gateways: {lagging}")
                self._await_laggards(notices, set(laggards), revision, min(remaining, self._poll_interval))
        except redis.RedisError as exc:
            raise Unavailable(f"waiting needs Redis, which became unreachable ({exc.__class__.__name__})") from None
        finally:
            notices.close()

    def _await_laggards(self, notices: redis.client.PubSub, laggards: set[str], revision: int,
                        timeout: float) -> None:
        """Until the notices say every laggard caught up, or `timeout` passes (then look anyway)."""
        until = self._clock() + timeout
        while laggards and (left := until - self._clock()) > 0:
            message = notices.get_message(ignore_subscribe_messages=True, timeout=left)
            if message is None or message["type"] != "message":
                continue
            gateway_id, _, applied = message["data"].decode("utf-8", "replace").rpartition(" ")
            if applied.lstrip("-").isdigit() and int(applied) >= revision:
                laggards.discard(gateway_id)
