"""Running a FakeKube on its own event loop thread, for synchronous tests (pytest without asyncio)."""
from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any, Iterator

from .server import FakeKube


@contextlib.contextmanager
def running(**kwargs: Any) -> Iterator[FakeKube]:
    """Starts FakeKube(**kwargs) on a background loop; yields it once it listens; stops it after.

    The yielded server's `store` (create/update/delete/append_log) is safe to call from the test's
    thread: watches and `logs -f` running on the server's loop are woken thread-safely.
    """
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fakekube", daemon=True)
    thread.start()
    try:
        fake = asyncio.run_coroutine_threadsafe(_make(kwargs), loop).result(timeout=30)
        try:
            yield fake
        finally:
            asyncio.run_coroutine_threadsafe(fake.stop(), loop).result(timeout=30)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()


async def _make(kwargs: dict[str, Any]) -> FakeKube:
    fake = FakeKube(**kwargs)
    await fake.start()
    return fake
