"""Waking asyncio waiters from any thread: store mutations may come from a test's own thread."""
from __future__ import annotations

import asyncio
import threading


class Wakeup:
    """A set of asyncio.Events, each set on its own loop when `notify()` is called anywhere."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    def subscribe(self) -> asyncio.Event:
        event = asyncio.Event()
        with self._lock:
            self._events.add((asyncio.get_running_loop(), event))
        return event

    def unsubscribe(self, event: asyncio.Event) -> None:
        with self._lock:
            self._events = {(loop, e) for loop, e in self._events if e is not event}

    def notify(self) -> None:
        with self._lock:
            targets = list(self._events)
        for loop, event in targets:
            if not loop.is_closed():
                loop.call_soon_threadsafe(event.set)
