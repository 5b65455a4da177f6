"""Ships the gateway's audit spool (dataplane/audit.py) to the Redis Stream the control plane
ingests (controlplane/auditingest.py).

Contract: stream `accesspoint:audit`, one XADD per event with the field `event` = the spool's JSON
line (without its newline).

Never loses, may repeat: complete lines are read from a persisted offset, a batch is XADDed in one
pipeline, and only then does the offset move (file `<spool>.offset`, replaced atomically). A crash
or a Redis failure in between replays that batch; ingestion drops the repeats by event id. So the
offset file needs no fsync either: losing an update only replays. While Redis is down the shipper
backs off and the spool keeps growing on disk.

A Redis without persistence that restarts loses what it held but the control plane had not stored
yet. So the shipper also keeps a `confirmed` offset: everything before it is known stored, because
the ingester trims only acknowledged entries and those entries are gone from the stream. When the
Redis it ships to has restarted (a new `run_id`), shipping resumes from `confirmed`: the events in
between are sent again and ingestion drops those it already has.
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
        self._unconfirmed: list[tuple[int, bytes]] = []   # (spool offset after a batch, its last entry id)

    def ship_once(self) -> int:
        """Ship up to one batch of complete lines; returns how many events were sent.
        Raises redis.RedisError (the offset then stays where it was)."""
        try:
            spool = open(self.spool, "rb")
        except FileNotFoundError:
            return 0   # no request audited yet
        with spool:
            inode = os.fstat(spool.fileno()).st_ino
            saved = self._saved(inode, os.fstat(spool.fileno()).st_size)
            run_id = self._client.info("server")["run_id"]
            offset, confirmed = saved["offset"], saved["confirmed"]
            if saved["run_id"] not in ("", run_id):   # before confirming: the new stream's ids say nothing
                self._unconfirmed = []
                if offset > confirmed:
                    log.warning("audit spool %s: Redis restarted; shipping again the %d bytes of events not "
                                "yet confirmed stored", self.spool, offset - confirmed)
                    offset = confirmed
            confirmed = self._confirm(confirmed)
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
        if lines:
            pipe = self._client.pipeline(transaction=False)
            for line in lines:
                pipe.xadd(AUDIT_STREAM, {EVENT_FIELD: line})
            self._unconfirmed.append((end, pipe.execute()[-1]))
        if (end, confirmed, run_id) != (saved["offset"], saved["confirmed"], saved["run_id"]):
            self._save_offset(inode, end, confirmed, run_id)
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

    def _confirm(self, confirmed: int) -> int:
        """Advance `confirmed` past the batches whose entries the ingester has trimmed away."""
        if not self._unconfirmed:
            return confirmed
        oldest = self._client.xrange(AUDIT_STREAM, count=1)
        if not oldest:
            return confirmed   # an empty stream is a new Redis as likely as a drained one
        first = _entry_id(oldest[0][0])
        while self._unconfirmed and _entry_id(self._unconfirmed[0][1]) < first:
            confirmed = self._unconfirmed.pop(0)[0]
        return confirmed

    def _saved(self, inode: int, size: int) -> dict:
        """Where shipping resumes (`offset`), what is known stored (`confirmed`) and the Redis
        `run_id` shipped to; from the start for a new or truncated spool or an unreadable file."""
        try:
            saved = json.loads(self.offset_path.read_text(encoding="utf-8"))
            offset, confirmed = int(saved["offset"]), int(saved.get("confirmed", 0))
            if int(saved["inode"]) == inode and 0 <= confirmed <= offset <= size:
                return {"offset": offset, "confirmed": confirmed, "run_id": str(saved.get("run_id", ""))}
        except (OSError, ValueError, KeyError, TypeError):
            pass
        self._unconfirmed = []
        return {"offset": 0, "confirmed": 0, "run_id": ""}

    def _save_offset(self, inode: int, offset: int, confirmed: int, run_id: str) -> None:
        temporary = self.offset_path.with_name(self.offset_path.name + ".tmp")
        temporary.write_text(json.dumps({"inode": inode, "offset": offset, "confirmed": confirmed,
                                         "run_id": run_id}), encoding="utf-8")
        os.replace(temporary, self.offset_path)


def _entry_id(entry_id: bytes | str) -> tuple[int, int]:
    """A stream entry id `ms-seq` in its order."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq)
