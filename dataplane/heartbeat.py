"""The gateway's report to the control plane: a heartbeat key in Redis, and a notice per applied
snapshot revision. The control plane reads both for fleet status (controlplane/fleet.py).

Contract:
- key `accesspoint:gateway:<id>`: JSON `{"id", "hostname", "pid", "version", "revision",
  "applied_at", "started_at", "heartbeat_at"}` (times RFC 3339 UTC with milliseconds; `revision`
  is -1 and `applied_at` null until the first snapshot applies), rewritten every 5 s with a TTL of
  15 s: a gateway that stops refreshing it leaves the fleet within 15 s, and one that stops
  cleanly deletes it at once.
- channel `accesspoint:applied`: `<id> <revision>`, published in the same MULTI as the key write
  on every apply, so a waiter learns at once. The key stays the truth (pub/sub loses messages).
- `<id>` has no whitespace. Default `<hostname>-<pid>`: every worker process holds its own
  snapshot, so every worker reports.
- A gateway with tunnels adds `"tunnel": {"gateway", "worker", "workers", "address", "clusters"}`
  (tunnel/membership.py): its replica id, worker index and count, advertised tunnel address, and
  live agent tunnels per cluster (`{"prod": 2}`). Agents learn the fleet from it.

Redis I/O happens on the heartbeat's own thread; `applied()` only records and wakes it, so the
gateway may call it from its event loop.
"""
from __future__ import annotations

import datetime
import json
import logging
import os
import socket
import threading
import time
from importlib import metadata
from typing import Callable

import redis

log = logging.getLogger(__name__)

GATEWAY_KEY_PREFIX = "accesspoint:gateway:"
APPLIED_CHANNEL = "accesspoint:applied"
HEARTBEAT_INTERVAL = 5.0
HEARTBEAT_TTL = 15
NOT_APPLIED = -1


def rfc3339(moment: float) -> str:
    return datetime.datetime.fromtimestamp(moment, datetime.timezone.utc).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


def _package_version() -> str:
    try:
        return metadata.version("accesspoint")
    except metadata.PackageNotFoundError:
        return "unknown"


class Heartbeat:
    def __init__(self, client: redis.Redis, gateway_id: str = "", version: str = "",
                 interval: float = HEARTBEAT_INTERVAL, ttl: int = HEARTBEAT_TTL):
        # fields added to every beat; called on the heartbeat thread, so it must return a value
        # the event loop built whole (a reference read, never a walk over live state)
        self.extra: Callable[[], dict] | None = None
        self.gateway_id = gateway_id or f"{socket.gethostname()}-{os.getpid()}"
        if not self.gateway_id or any(c.isspace() for c in self.gateway_id):
            raise ValueError("a gateway id must be non-empty without whitespace")
        self.key = GATEWAY_KEY_PREFIX + self.gateway_id
        self._client = client
        self._interval = interval
        self._ttl = ttl
        self._static = {"id": self.gateway_id, "hostname": socket.gethostname(), "pid": os.getpid(),
                        "version": version or _package_version(), "started_at": rfc3339(time.time())}
        self._lock = threading.Lock()
        self._revision = NOT_APPLIED
        self._applied_at: str | None = None
        self._notice_due = False
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def applied(self, revision: int) -> None:
        """Record that `revision` is now in force; the heartbeat thread reports it at once."""
        with self._lock:
            self._revision = revision
            self._applied_at = rfc3339(time.time())
            self._notice_due = True
        self._wake.set()

    def beat(self) -> None:
        """Write the key now (and the applied notice, if one is due); raises redis.RedisError."""
        with self._lock:
            revision, notice = self._revision, self._notice_due
            extra = self.extra() if self.extra is not None else {}
            value = json.dumps({**extra, **self._static, "revision": revision, "applied_at": self._applied_at,
                                "heartbeat_at": rfc3339(time.time())}, separators=(",", ":"))
        pipe = self._client.pipeline(transaction=True)
        pipe.set(self.key, value, ex=self._ttl)
        if notice:
            pipe.publish(APPLIED_CHANNEL, f"{self.gateway_id} {revision}")
        pipe.execute()
        if notice:
            with self._lock:   # a newer apply while writing keeps its own notice due
                if self._revision == revision:
                    self._notice_due = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop beating and leave the fleet at once (the key is deleted, best effort)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        try:
            self._client.delete(self.key)
        except redis.RedisError:
            pass   # the TTL removes it

    def _run(self) -> None:
        failing = False
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                self.beat()
                if failing:
                    log.info("heartbeat to Redis restored")
                failing = False
            except redis.RedisError as exc:
                if not failing:   # once per outage, not every beat
                    log.warning("heartbeat not written (retrying every %.0f s): %s", self._interval,
                                exc.__class__.__name__)
                failing = True
            self._wake.wait(self._interval)
