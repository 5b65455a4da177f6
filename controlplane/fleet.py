"""Fleet status from the gateways' heartbeats (the contract is in dataplane/heartbeat.py): which
gateways are live, which revision each runs, waiting until all of them run a revision, and each
tunnel cluster's connectivity (the heartbeats' `tunnel` part: live tunnels per cluster per worker).

The heartbeat keys are the truth; the `accesspoint:applied` notices only say when to look again,
so a lost notice costs at most one poll interval and a gateway that dies while being waited for
drops out when its key expires.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

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
    # a worker serving tunnels: its replica, live tunnels per cluster, and when it last held a
    # tunnel of each cluster it holds none of now (RFC 3339)
    tunnel_gateway: str = ""
    tunnels: Mapping[str, int] = field(default_factory=dict)
    tunnels_lost_at: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, value: bytes) -> "GatewayStatus":
        data = json.loads(value)
        tunnel = data.get("tunnel") or {}
        return cls(id=str(data["id"]), hostname=str(data["hostname"]), pid=int(data["pid"]),
                   version=str(data["version"]), revision=int(data["revision"]),
                   applied_at=data["applied_at"] or "", started_at=str(data["started_at"]),
                   heartbeat_at=str(data["heartbeat_at"]), tunnel_gateway=str(tunnel.get("gateway", "")),
                   tunnels={str(k): int(v) for k, v in (tunnel.get("clusters") or {}).items()},
                   tunnels_lost_at={str(k): str(v) for k, v in (tunnel.get("lost_at") or {}).items()})


@dataclass(frozen=True)
class Connectivity:
    """One tunnel cluster as the live gateways see it."""
    agents: int               # the most tunnels of it on one gateway worker: an agent keeps one per worker
    tunnels: int              # usable tunnels across the fleet
    gateways: int             # replicas holding at least one
    last_seen: str            # the newest heartbeat reporting a tunnel, else when the last one closed; "" never


def connectivity(gateways: list[GatewayStatus]) -> dict[str, Connectivity]:
    """Per cluster, from the heartbeats of `gateways` (one per worker); clusters no live gateway
    has seen are absent."""
    tunnels: dict[str, list[tuple[GatewayStatus, int]]] = {}
    lost: dict[str, str] = {}
    for g in gateways:
        for cluster, count in g.tunnels.items():
            if count > 0:
                tunnels.setdefault(cluster, []).append((g, count))
        for cluster, at in g.tunnels_lost_at.items():
            lost[cluster] = max(lost.get(cluster, ""), at)
    found = {cluster: Connectivity(agents=max(n for _, n in held), tunnels=sum(n for _, n in held),
                                   gateways=len({g.tunnel_gateway or g.id for g, _ in held}),
                                   last_seen=max(g.heartbeat_at for g, _ in held))
             for cluster, held in tunnels.items()}
    for cluster, at in lost.items():
        found.setdefault(cluster, Connectivity(agents=0, tunnels=0, gateways=0, last_seen=at))
    return found


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
