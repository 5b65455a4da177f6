"""Errors of the control plane's domain, one per gRPC status they map to (api/interceptors.py).

Messages are shown to API callers: they name the field or object, never a secret's value.
"""
from __future__ import annotations


class ControlPlaneError(Exception):
    """Base class; `str(error)` is the caller-facing message."""


class InvalidArgument(ControlPlaneError):
    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field = field


class NotFound(ControlPlaneError):
    pass


class AlreadyExists(ControlPlaneError):
    pass


class FailedPrecondition(ControlPlaneError):
    pass


class PermissionDenied(ControlPlaneError):
    """The caller is known but policy does not let them do this (not an approver, say)."""


class Unauthenticated(ControlPlaneError):
    """The credential a call proves itself with (an agent's bootstrap token or certificate) is not valid."""


class DeadlineExceeded(ControlPlaneError):
    """A wait ran out of time; the message says what was still missing."""


class Unavailable(ControlPlaneError):
    """A dependency (Redis) is unreachable: worth retrying later."""
