"""The refusal audit of unauthenticated agent calls keeps a bounded history (REFUSAL_RETENTION)."""
from __future__ import annotations

import datetime

from controlplane.model import Refusal, utc_text_ms
from controlplane.store.agents import REFUSAL_RETENTION

T0 = datetime.datetime(2026, 11, 23, 8, 0, tzinfo=datetime.timezone.utc)


def refusal(number: int, at: datetime.datetime) -> Refusal:
    return Refusal(id=f"r{number}", at=utc_text_ms(at), action="agents.enroll", cluster="alpha",
                   subject="bootstrap/unknown", peer="ipv4:127.0.0.1:5000", reason="unknown bootstrap token")


def test_refusals_older_than_the_retention_are_dropped_as_new_ones_arrive(store):
    store.record_refusal(refusal(1, T0))
    store.record_refusal(refusal(2, T0 + REFUSAL_RETENTION - datetime.timedelta(seconds=1)))
    assert [r.id for r in store.refusals()] == ["r2", "r1"]       # both still within the retention
    store.record_refusal(refusal(3, T0 + REFUSAL_RETENTION + datetime.timedelta(seconds=1)))
    assert [r.id for r in store.refusals()] == ["r3", "r2"]
