"""Who is calling the API: set by the authentication interceptor for the duration of one call."""
from __future__ import annotations

import contextvars
from dataclasses import dataclass

ADMIN = "admin"
READ_ONLY = "read-only"


@dataclass(frozen=True)
class Caller:
    name: str                 # what the audit records, e.g. "token:admin"
    role: str                 # ADMIN | READ_ONLY


current: contextvars.ContextVar[Caller] = contextvars.ContextVar("controlplane_caller")


def actor() -> str:
    return current.get().name
