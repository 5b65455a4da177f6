"""The idle timeout of console sessions: a periodic sweep ends every session idle past its
timeout, revoking it fleet-wide at once (a signed delta, then the snapshot), as logout does.

Any number of replicas may sweep: ending a session re-checks it in the ending transaction, so a
session another replica ended, or a touch that came first, is left alone.
"""
from __future__ import annotations

import logging
import threading

from .distribution import Distributor
from .errors import FailedPrecondition, NotFound
from .store import Store

log = logging.getLogger(__name__)

ACTOR = "controlplane:session-idle-timeout"


class SessionSweeper:
    def __init__(self, store: Store, distributor: Distributor):
        self._store = store
        self._distributor = distributor

    def sweep(self) -> list[str]:
        """End the sessions idle past their timeout; returns their ids."""
        ended = []
        for session_id in self._store.idle_sessions():
            try:
                revision, revocation = self._store.end_session(ACTOR, session_id, "idle timeout")
            except (FailedPrecondition, NotFound):
                continue   # ended elsewhere, or touched, since the list was read
            self._distributor.publish_revocation(revision, revocation)
            log.info("session %s ended after its idle timeout (revision %d)", session_id, revision)
            ended.append(session_id)
        return ended

    def run_periodically(self, stop: threading.Event, interval: float) -> None:
        while not stop.wait(interval):
            try:
                self.sweep()
            except Exception:   # the store may be briefly away: the next round retries
                log.exception("session sweep failed")
