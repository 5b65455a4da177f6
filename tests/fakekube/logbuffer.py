"""A fake container's log: lines with timestamps, appended by tests, followed by `logs -f`."""
from __future__ import annotations

import datetime
import threading

from .wakeup import Wakeup


class LogBuffer:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lines: list[tuple[datetime.datetime, str]] = []
        self._closed = False
        self.changed = Wakeup()

    def append(self, line: str) -> None:
        """One line (a trailing newline is added when missing). Thread-safe."""
        with self._lock:
            if self._closed:
                return
            self._lines.append((datetime.datetime.now(datetime.timezone.utc),
                                line if line.endswith("\n") else line + "\n"))
        self.changed.notify()

    def close(self) -> None:
        """The container is gone (pod deleted): followers finish."""
        with self._lock:
            self._closed = True
        self.changed.notify()

    def read(self, start: int) -> tuple[list[tuple[datetime.datetime, str]], bool]:
        """Lines from index `start` on, and whether the log is closed."""
        with self._lock:
            return self._lines[start:], self._closed

    def __len__(self) -> int:
        with self._lock:
            return len(self._lines)
