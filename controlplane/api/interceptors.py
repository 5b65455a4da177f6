"""Server interceptors: authentication (and the operator role model) and error mapping.

Both wrap the method handler's behaviour rather than act in `intercept_service`, because the
synchronous server calls `intercept_service` on its polling thread but the behaviour on a worker
thread: the caller's identity (a context variable) must be set where the servicer runs.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Any, Callable

import grpc
from google.protobuf import unknown_fields
from google.protobuf.message import Message

from ..errors import (AlreadyExists, ControlPlaneError, DeadlineExceeded, FailedPrecondition, InvalidArgument,
                      NotFound, PermissionDenied, Unauthenticated, Unavailable)
from . import caller

log = logging.getLogger(__name__)

HEALTH_PREFIX = "/grpc.health.v1.Health/"
REFLECTION_PREFIX = "/grpc.reflection."
# Methods that only read: a read-only operator (or platform service) may call them.
READ_METHOD_PREFIXES = ("Get", "List", "Query", "Wait")
# What people may call for themselves (their own token, or the portal for them), as Service/Method.
SELF_SERVICE = frozenset({
    "AccessService/CreateAccessRequest", "AccessService/ApproveAccessRequest", "AccessService/DenyAccessRequest",
    "AccessService/GetAccessRequest", "AccessService/ListAccessRequests", "AccessService/ActivateBreakGlass",
    "SessionService/LogoutSession",
})
# The portal also runs the console sessions of the people it logs in.
PORTAL_METHODS = SELF_SERVICE | {"SessionService/CreateSession", "SessionService/TouchSession",
                                 "SessionService/ListSessions"}
ROLE_METHODS = {caller.PERSON: SELF_SERVICE, caller.PORTAL: PORTAL_METHODS}
# Tunnel agents hold no API token: they prove themselves in the request (a bootstrap token, or a
# signature by their certificate's key), which the servicer checks (api/agents.py).
AGENT_METHODS = frozenset({"AgentService/Enroll", "AgentService/Renew"})


def _wrap(handler: Any, decorate: Callable[[Callable], Callable], kinds: tuple[str, ...]) -> Any:
    """`handler` with each of its behaviours of `kinds` decorated (handlers are namedtuples)."""
    changes = {kind: decorate(getattr(handler, kind)) for kind in kinds if getattr(handler, kind) is not None}
    return handler._replace(**changes)


def is_mutation(method: str) -> bool:
    """`/pkg.Service/Method`: READ_METHOD_PREFIXES and reflection read; everything else changes state."""
    return not (method.startswith(REFLECTION_PREFIX) or method.rsplit("/", 1)[-1].startswith(READ_METHOD_PREFIXES))


def refusal(who: caller.Caller, method: str) -> str | None:
    """Why `who` may not call `method` (None: it may). Admins may call anything; the read-only
    token every read; the portal and people only their methods."""
    if who.role == caller.ADMIN:
        return None
    if who.role == caller.READ_ONLY:
        return f"{who.name} may read but not change state" if is_mutation(method) else None
    if method.rsplit(".", 1)[-1] in ROLE_METHODS[who.role]:
        return None
    return f"{who.name} may not call {method.rsplit('/', 1)[-1]}"


# A person's gateway token → (user, groups), or None when it is no live person's token.
PersonLookup = Callable[[str], "tuple[str, tuple[str, ...]] | None"]


class AuthInterceptor(grpc.ServerInterceptor):
    """`authorization: Bearer <token>` → a Caller, compared by SHA-256 in constant time: an
    operator or portal API token, else a person's own gateway token (looked up by its digest).
    Health checks need no token (load balancers probe them), nor the agents' AGENT_METHODS."""

    def __init__(self, tokens: dict[str, str], people: PersonLookup | None = None):
        # role → token; only the digests are kept.
        self._digests = [(hashlib.sha256(token.encode()).digest(), role) for role, token in tokens.items()]
        self._people = people

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(HEALTH_PREFIX) or method.rsplit(".", 1)[-1] in AGENT_METHODS:
            return handler

        def decorate(behaviour: Callable) -> Callable:
            def authenticated(request: Any, context: grpc.ServicerContext) -> Any:
                who = self._authenticate(context)
                refused = refusal(who, method)
                if refused:
                    context.abort(grpc.StatusCode.PERMISSION_DENIED, refused)
                reset = caller.current.set(who)
                try:
                    return behaviour(request, context)
                finally:
                    caller.current.reset(reset)
            return authenticated

        return _wrap(handler, decorate, ("unary_unary", "unary_stream", "stream_unary", "stream_stream"))

    def _authenticate(self, context: grpc.ServicerContext) -> caller.Caller:
        values = [value for key, value in context.invocation_metadata() if key == "authorization"]
        scheme, _, token = (values[0] if len(values) == 1 else "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or malformed authorization: Bearer token")
        digest = hashlib.sha256(token.strip().encode()).digest()
        role = None
        for known, known_role in self._digests:  # compare every entry: no early exit on a match
            if hmac.compare_digest(known, digest):
                role = known_role
        metadata = context.invocation_metadata()
        acting_for = [value for key, value in metadata if key == caller.ON_BEHALF_OF]
        if role is None:
            try:
                person = self._people(digest.hex()) if self._people is not None else None
            except Exception:
                log.exception("looking up a person's token failed")
                context.abort(grpc.StatusCode.UNAVAILABLE, "cannot check the token now (the store is unreachable)")
            if person is None:
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown token")
            who = caller.Caller(name=f"user:{person[0]}", role=caller.PERSON, user=person[0], groups=person[1])
        else:
            who = caller.Caller(name=f"token:{role}", role=role)
        if not acting_for:
            return who
        if role != caller.PORTAL:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, f"only the portal may send {caller.ON_BEHALF_OF}")
        user = acting_for[0]
        groups = tuple(value for key, value in metadata if key == caller.ON_BEHALF_OF_GROUP)
        if len(acting_for) > 1 or not all(0 < len(name) <= 256 and name.isprintable() for name in (user, *groups)):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"{caller.ON_BEHALF_OF}: one user name (and groups) of 1-256 printable characters")
        return caller.Caller(name=f"user:{user} via token:portal", role=role, user=user, groups=groups)


_STATUS = [
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
]


def _unknown_field(message: Message, path: str) -> str | None:
    """The path of the first (sub)message carrying fields this server does not know, if any."""
    if len(unknown_fields.UnknownFieldSet(message)):
        return path
    for field, value in message.ListFields():
        if field.message_type is None or field.message_type.GetOptions().map_entry:
            continue  # scalars, and maps (of strings, in this API)
        items = list(enumerate(value)) if field.is_repeated else [(None, value)]
        for index, item in items:
            found = _unknown_field(item, f"{path}.{field.name}" if index is None else f"{path}.{field.name}[{index}]")
            if found:
                return found
    return None


class ErrorInterceptor(grpc.ServerInterceptor):
    """Domain errors → gRPC statuses with their message; anything else → INTERNAL, details logged
    here only. Requests with unknown fields are refused: a newer client's intent must not be
    silently dropped."""

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method

        def decorate(behaviour: Callable) -> Callable:
            def mapped(request: Any, context: grpc.ServicerContext) -> Any:
                unknown = _unknown_field(request, "request")
                if unknown:
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{unknown}: unknown field(s)")
                try:
                    return behaviour(request, context)
                except ControlPlaneError as exc:
                    code = next(code for kind, code in _STATUS if isinstance(exc, kind))
                    context.abort(code, str(exc))
                except Exception:
                    log.exception("%s failed", method)
                    context.abort(grpc.StatusCode.INTERNAL, "internal error (logged by the control plane)")
            return mapped

        return _wrap(handler, decorate, ("unary_unary",))
