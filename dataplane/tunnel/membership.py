"""The gateway fleet as agents see it: which replicas exist, how many worker processes each runs,
and where an agent can dial each one directly (docs/tunnels.md, "High availability").

Source: the gateways' heartbeats in Redis (heartbeat.py). With tunnels on, each worker's heartbeat
carries a `tunnel` object, `{"gateway", "worker", "workers", "address", "clusters"}`: the replica
id, this worker's index and the worker count, the replica's advertised tunnel address
(`--tunnel-advertise`, or null), and its live tunnels per cluster (for fleet status). Each
gateway worker reads the fleet every few seconds and sends the list of replicas to its agents on
a control stream (`accesspoint-control: members`, the list JSON-encoded in
`accesspoint-members`) when a tunnel opens and whenever the list changes. The agent dials every
advertised address, and keeps dialling the address it was given (a load balancer) for replicas
that advertise none, until it holds a tunnel to every worker of every replica (agent.py).

Without Redis a gateway knows only itself: agents then learn other replicas only through the
addresses they were given (`--gateway A,B`).
"""
from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Callable

from ..heartbeat import GATEWAY_KEY_PREFIX
from .protocol import MAX_WORKERS

log = logging.getLogger("accesspoint.tunnel")

MAX_MEMBERS = 1000
REFRESH_INTERVAL = 5.0     # as often as heartbeats are written


@dataclass(frozen=True, order=True)
class Member:
    gateway: str            # the replica's id (the `OK` line's)
    workers: int
    address: str | None     # HOST:PORT an agent dials to reach this replica directly

    def to_json(self) -> dict:
        return {"gateway": self.gateway, "workers": self.workers, "address": self.address}


def encode(members: list[Member]) -> bytes:
    return json.dumps([m.to_json() for m in sorted(members)], separators=(",", ":")).encode("ascii")


def _member(item) -> Member | None:
    if not isinstance(item, dict):
        return None
    gateway, workers, address = item.get("gateway"), item.get("workers"), item.get("address")
    if not isinstance(gateway, str) or not gateway or not gateway.isprintable() or " " in gateway:
        return None
    if not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS:
        return None
    if address is not None and not _address_ok(address):
        return None
    return Member(gateway, workers, address)


def _address_ok(address) -> bool:
    if not isinstance(address, str) or " " in address:
        return False
    host, _, port = address.rpartition(":")
    return bool(host) and port.isdigit() and 0 < int(port) < 65536


def decode(raw: bytes) -> list[Member]:
    """The members a gateway sent; ValueError when the list is not one."""
    data = json.loads(raw)
    if not isinstance(data, list) or len(data) > MAX_MEMBERS:
        raise ValueError("the member list is not a list of at most %d entries" % MAX_MEMBERS)
    members = [_member(item) for item in data]
    if any(m is None for m in members):
        raise ValueError("the member list has a malformed entry")
    return members


def from_heartbeats(values) -> list[Member]:
    """Members from heartbeat JSON values (one per worker process; other gateways' too)."""
    found: dict[str, Member] = {}
    for value in values:
        try:
            tunnel = json.loads(value).get("tunnel")
        except (ValueError, AttributeError):
            continue
        member = _member(tunnel) if isinstance(tunnel, dict) else None
        if member is None:
            continue
        known = found.get(member.gateway)
        if known is None or (member.workers, member.address or "") > (known.workers, known.address or ""):
            found[member.gateway] = member
    return sorted(found.values())


def read_fleet(client) -> list[Member]:
    """The live replicas with tunnels, from their heartbeat keys (blocking: run in a thread)."""
    keys = list(client.scan_iter(match=GATEWAY_KEY_PREFIX + "*", count=500))
    if not keys:
        return []
    return from_heartbeats(v for v in client.mget(keys) if v is not None)


class FleetWatcher:
    """Reads the fleet every REFRESH_INTERVAL; `on_change(members)` when the list changed.
    `me` is always in the list: an agent must keep its tunnel to the gateway that told it."""

    def __init__(self, client, me: Member, on_change: Callable[[list[Member]], None],
                 interval: float = REFRESH_INTERVAL):
        self._client = client
        self.me = me
        self._on_change = on_change
        self._interval = interval
        self.members: list[Member] = [me]
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        failing = False
        while True:
            try:
                fleet = await asyncio.to_thread(read_fleet, self._client)
                failing = False
            except Exception as exc:          # Redis down: keep the last list
                if not failing:
                    log.warning("gateway fleet not read from Redis (keeping the last list): %s",
                                exc.__class__.__name__)
                failing = True
            else:
                members = sorted({m.gateway: m for m in fleet + [self.me]}.values())
                if members != self.members:
                    self.members = members
                    self._on_change(members)
            await asyncio.sleep(self._interval)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._client.close()
