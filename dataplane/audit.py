"""Append-only local audit spool: one JSON line per request, written before the response ends.

Several worker processes may append to the same file. Each event is one `os.write` on an
O_APPEND descriptor, which the kernel applies atomically for regular files, so lines from
different processes never interleave. fsync is batched (periodic), not per event.
"""
from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import re
import threading
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger(__name__)

# Secret-bearing key names; matched on the last word of the key (`private_key`, `bearerToken`,
# `client-secret`) so that `token_id` or `key_id` stay.
SECRET_WORDS = frozenset({"authorization", "token", "password", "secret", "key"})
_WORD_BOUNDARY = re.compile(r"[_\-.\s]+|(?<=[a-z0-9])(?=[A-Z])")


@functools.lru_cache(maxsize=4096)
def is_secret_key(name: str) -> bool:
    # cached: events repeat the same few dozen key names, and this runs for every key of every event
    words = [w for w in _WORD_BOUNDARY.split(name) if w]
    return bool(words) and words[-1].lower() in SECRET_WORDS


# key lists already found free of secret names: every request's event has one of a few shapes
_CLEAN_KEYS: set[tuple] = set()


def _is_clean(value: Any) -> bool:
    """No secret-named key at any depth (the common case: nothing to copy)."""
    if isinstance(value, dict):
        keys = tuple(value)
        if keys not in _CLEAN_KEYS:
            if any(isinstance(key, str) and is_secret_key(key) for key in keys):
                return False
            if len(_CLEAN_KEYS) < 1024:
                _CLEAN_KEYS.add(keys)
        return _items_clean(value.values())
    if isinstance(value, (list, tuple)):
        return _items_clean(value)
    return True


def _items_clean(items) -> bool:
    for item in items:
        if type(item) in _SCALARS:
            continue
        if isinstance(item, (dict, list, tuple)) and not _is_clean(item):
            return False
    return True


_SCALARS = frozenset({str, int, float, bool, type(None)})


def redact(value: Any, where: str = "") -> Any:
    """`value` without secret-named keys at any depth (a safety net: callers should never pass
    secrets in the first place, so each drop is logged by key path, not value). The input is
    never changed: a copy when something is dropped, else the value itself."""
    if _is_clean(value):
        return value
    return _redacted_copy(value, where)


def _redacted_copy(value: Any, where: str) -> Any:
    if isinstance(value, dict):
        clean = {}
        for key, item in value.items():
            path = f"{where}.{key}" if where else str(key)
            if isinstance(key, str) and is_secret_key(key):
                log.warning("audit: dropped secret-named field %s", path)
                continue
            clean[key] = _redacted_copy(item, path)
        return clean
    if isinstance(value, (list, tuple)):
        return [_redacted_copy(item, f"{where}[]") for item in value]
    return value


# the stdlib encoder for what orjson refuses but json accepts (non-str keys, ints beyond 64 bits)
_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def encode_line(event: dict[str, Any]) -> bytes:
    """One compact JSON line, UTF-8. orjson (C) costs a tenth of json's Python encoder, which was
    ~5 % of the gateway's CPU per small request; both refuse non-JSON values with TypeError."""
    try:
        return orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:
        return (_ENCODE(event) + "\n").encode("utf-8")


class AuditSpool:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._dirty = False
        self._fsync_lock = threading.Lock()  # fsync runs in an executor thread; close() waits for it
        self._periodic: asyncio.Task | None = None

    def append(self, event: dict[str, Any]) -> None:
        if "id" not in event:
            raise ValueError("audit event needs the request id in 'id'")
        if self._fd is None:
            raise ValueError("audit spool is closed")
        data = encode_line(redact(event))
        written = os.write(self._fd, data)
        if written != len(data):
            # A short write (disk full) leaves a torn line; say so loudly rather than retry and
            # risk interleaving with another process.
            raise OSError(f"audit spool {self.path}: short write ({written} of {len(data)} bytes)")
        self._dirty = True

    def fsync(self) -> None:
        with self._fsync_lock:
            if self._fd is not None and self._dirty:
                self._dirty = False
                os.fsync(self._fd)

    flush = fsync

    def start_periodic_fsync(self, loop: asyncio.AbstractEventLoop, interval: float = 0.2) -> asyncio.Task:
        """fsync every `interval` seconds in a thread, off the event loop."""
        async def run() -> None:
            while True:
                await asyncio.sleep(interval)
                await loop.run_in_executor(None, self.fsync)

        self._periodic = loop.create_task(run())
        return self._periodic

    def close(self) -> None:
        if self._periodic is not None:
            self._periodic.cancel()
            self._periodic = None
        self.fsync()
        with self._fsync_lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def read_events(path: Path) -> list[dict[str, Any]]:
    """Every event of a spool file; a torn or non-JSON line raises ValueError."""
    events = []
    with open(path, encoding="utf-8") as spool:
        for number, line in enumerate(spool, 1):
            if not line.endswith("\n"):
                raise ValueError(f"{path}:{number}: incomplete last line")
            event = json.loads(line)
            if not isinstance(event, dict):
                raise ValueError(f"{path}:{number}: not a JSON object")
            events.append(event)
    return events
