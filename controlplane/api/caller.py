"""Who is calling the API: set by the authentication interceptor for the duration of one call.

Operators call with the admin or read-only token. People act for themselves in two ways: with
their own gateway token (one IssueToken gave them; service tokens do not count), or through the
portal, whose API token may name the person it authenticated in `on_behalf_of` metadata.
"""
from __future__ import annotations

import contextvars
from dataclasses import dataclass

from ..errors import PermissionDenied

ADMIN = "admin"
READ_ONLY = "read-only"
PORTAL = "portal"
PERSON = "person"         # a person's own gateway token

# The portal names the person it acts for (only the portal's token may send these).
ON_BEHALF_OF = "x-accesspoint-on-behalf-of"
ON_BEHALF_OF_GROUP = "x-accesspoint-on-behalf-of-group"   # repeat for each group


@dataclass(frozen=True)
class Caller:
    name: str                 # what the audit records, e.g. "token:admin", "user:ann via token:portal"
    role: str                 # ADMIN | READ_ONLY | PORTAL | PERSON
    user: str = ""            # the person acting, if any
    groups: tuple[str, ...] = ()


current: contextvars.ContextVar[Caller] = contextvars.ContextVar("controlplane_caller")


def actor() -> str:
    return current.get().name


def person() -> Caller:
    """The person this call acts for; PermissionDenied for a call that names none."""
    who = current.get()
    if not who.user:
        raise PermissionDenied(f"{who.name} acts for no person: call with your own token, or through the portal "
                               f"with {ON_BEHALF_OF}")
    return who
