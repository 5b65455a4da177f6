"""The snapshot feed's test harness: control-plane states to publish, an event loop runner, and
waiters on the holder's swaps and on the feed's log records (no sleeps as synchronisation)."""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from typing import Awaitable, Callable

from controlplane.model import (Binding, Cluster, ClusterSelector, Credential, Revocation, Role, Rule, State,
                                Subject, Token)
from dataplane.identity import AuthenticationError
from dataplane.snapshot import Snapshot

from ..gateway.helpers import run as run_on_uvloop

BOB_TOKEN = b"bob-secret-token"
ISSUED_AT = "2026-11-23T08:00:00Z"
WAIT = 5.0   # bound on every wait: a failing test fails fast instead of hanging


def state(revision: int, revoked_users: tuple[str, ...] = ()) -> State:
    """A control-plane state with one cluster, one binding, and bob's token."""
    return State(
        revision=revision, committed_at=ISSUED_AT,
        clusters=(Cluster(name="sandbox", endpoint="https://127.0.0.1:6443",
                          credential=Credential(kind="token", ref="file:sandbox.token"), labels={"env": "dev"}),),
        roles=(Role("viewer", (Rule(verbs=("get", "list"), api_groups=("*",), resources=("*",)),)),),
        bindings=(Binding("devs-view", "viewer", (Subject("group", "devs"),), ClusterSelector(labels={"env": "dev"})),),
        tokens=(Token(id="t-bob", sha256=hashlib.sha256(BOB_TOKEN).hexdigest(), user="bob", groups=("devs",)),),
        revocations=tuple(Revocation("user", user) for user in revoked_users))


def bob_is_revoked(snapshot: Snapshot) -> bool:
    try:
        snapshot.authenticator.authenticate(None, b"Bearer " + BOB_TOKEN)
    except AuthenticationError as exc:
        assert exc.reason == "revoked"
        return True
    return False


def run(scenario: Callable[[], Awaitable], timeout: float = 20.0):
    """Run an async test body on uvloop (what the gateway runs); no task may outlive it."""
    return run_on_uvloop(scenario, timeout)


class Seen:
    """Snapshots handed to a callback (the holder's subscribe callback, the feed's on_applied),
    with a wait for the one that matches."""

    def __init__(self) -> None:
        self.all: list[Snapshot] = []
        self._queue: asyncio.Queue[Snapshot] = asyncio.Queue()

    def __call__(self, snapshot: Snapshot) -> None:
        self.all.append(snapshot)
        self._queue.put_nowait(snapshot)

    async def until(self, predicate: Callable[[Snapshot], bool]) -> Snapshot:
        async with asyncio.timeout(WAIT):
            while True:
                snapshot = await self._queue.get()
                if predicate(snapshot):
                    return snapshot

    def revision(self, revision: int) -> Awaitable[Snapshot]:
        return self.until(lambda snapshot: snapshot.revision == revision)

    def revisions(self) -> list[int]:
        return [snapshot.revision for snapshot in self.all]


class FeedLog(logging.Handler):
    """The records of `dataplane.snapshotfeed`, with a wait for one that matches."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self._loop.call_soon_threadsafe(self._changed.set)

    async def wait_for(self, level: int, text: str, count: int = 1) -> logging.LogRecord:
        """The `count`-th record at `level` whose message contains `text`."""
        async with asyncio.timeout(WAIT):
            while True:
                self._changed.clear()
                matches = self.matching(level, text)
                if len(matches) >= count:
                    return matches[count - 1]
                await self._changed.wait()

    def matching(self, level: int, text: str) -> list[logging.LogRecord]:
        return [r for r in self.records if r.levelno == level and text in r.getMessage()]


@contextlib.contextmanager
def feed_log():
    logger = logging.getLogger("dataplane.snapshotfeed")
    handler = FeedLog()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
