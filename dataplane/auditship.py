"""Ships the gateway's audit spool (dataplane/audit.py) to the Redis Stream the control plane
ingests (controlplane/auditingest.py).

Contract: stream `accesspoint:audit`, one XADD per event with the field `event` = the spool's JSON
line (without its newline).

Never loses, may repeat: complete lines are read from a persisted offset, a batch is XADDed in one
pipeline, and only then does the offset move (file `<spool>.offset`, replaced atomically). A crash
or a Redis failure in between replays that batch; ingestion drops the repeats by event id. So the
offset file needs no fsync either: losing an update only replays. While Redis is down the shipper
backs off and the spool keeps growing on disk.
"""
from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

import redis

log = logging.getLogger(__name__)

AUDIT_STREAM = "accesspoint:audit"
EVENT_FIELD = "event"
BATCH = 500
INTERVAL = 0.5            # seconds between looks at the spool once it is drained
MAX_BACKOFF = 30.0        # seconds between attempts while Redis is down


class AuditShipper:
    def __init__(self, spool: Path, client: redis.Redis, batch: int = BATCH, interval: float = INTERVAL,
                 max_backoff: float = MAX_BACKOFF):
        self.spool = Path(spool)
        self.offset_path = self.spool.with_name(self.spool.name + ".offset")
        self._client = client
        self._batch = batch
        self._interval = interval
        self._max_backoff = max_backoff
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def ship_once(self) -> int:
        """Ship up to one batch of complete lines; returns how many events were sent.
        Raises redis.RedisError (the offset then stays where it was)."""
        try:
            spool = open(self.spool, "rb")
        except FileNotFoundError:
            return 0   # no request audited yet
        with spool:
            inode = os.fstat(spool.fileno()).st_ino
            offset = self._offset(inode, os.fstat(spool.fileno()).st_size)
            spool.seek(offset)
            lines: list[bytes] = []
            end = offset
            while len(lines) < self._batch:
                line = spool.readline()
                if not line.endswith(b"\n"):
                    break   # end of file, or a line still being written: next time
                if self._shippable(line, end):
                    lines.append(line.rstrip(b"\n"))
                end += len(line)
        if end == offset:
            return 0
        if lines:
            pipe = self._client.pipeline(transaction=False)
            for line in lines:
                pipe.xadd(AUDIT_STREAM, {EVENT_FIELD: line})
            pipe.execute()
        self._save_offset(inode, end)
        return len(lines)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="audit-shipper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        backoff = self._interval
        while not self._stopping.is_set():
            try:
                shipped = self.ship_once()
            except redis.RedisError as exc:
                if backoff == self._interval:   # once per outage
                    log.warning("audit shipping paused, Redis unreachable (%s); events stay spooled",
                                exc.__class__.__name__)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, self._max_backoff)
                continue
            if backoff != self._interval:
                log.info("audit shipping resumed")
                backoff = self._interval
            if shipped < self._batch:
                self._stopping.wait(self._interval)

    def _shippable(self, line: bytes, at: int) -> bool:
        """A torn line (a short write) could never be ingested: skip it, saying where."""
        try:
            event = json.loads(line)
        except ValueError:
            event = None
        if isinstance(event, dict) and isinstance(event.get("id"), str) and event["id"]:
            return True
        log.warning("audit spool %s: skipping an unreadable line at byte %d", self.spool, at)
        return False

    def _offset(self, inode: int, size: int) -> int:
        """Where shipping resumes: 0 for a new or truncated spool, or an unreadable offset file."""
        try:
            saved = json.loads(self.offset_path.read_text(encoding="utf-8"))
            saved_inode, offset = int(saved["inode"]), int(saved["offset"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0
        return offset if saved_inode == inode and 0 <= offset <= size else 0

    def _save_offset(self, inode: int, offset: int) -> None:
        temporary = self.offset_path.with_name(self.offset_path.name + ".tmp")
        temporary.write_text(json.dumps({"inode": inode, "offset": offset}), encoding="utf-8")
        os.replace(temporary, self.offset_path)
