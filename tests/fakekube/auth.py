"""Authentication, impersonation and the fake's own RBAC, faithful to the API server's messages."""
from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping
from urllib.parse import unquote

from .httpcore import Request
from .requestinfo import RequestInfo
from .status import ApiError, internal

Role = Literal["admin", "view"]

AUTHENTICATED = "system:authenticated"
UNAUTHENTICATED = "system:unauthenticated"
ANONYMOUS = "system:anonymous"
DEFAULT_GATEWAY_USER = "system:serviceaccount:accesspoint:gateway"
DEFAULT_RBAC: dict[str, dict[str, Role]] = {"users": {"alice": "admin"}, "groups": {}}

# What every authenticated user may read (the system:discovery / public-info-viewer roles).
_PUBLIC_PATHS = ("/api", "/apis", "/version", "/healthz", "/livez", "/readyz", "/openapi")
# Subresources that run things in a pod: never read-only, even when reached with GET.
_STREAM_SUBRESOURCES = ("exec", "attach", "portforward")


@dataclass(frozen=True)
class UserInfo:
    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    may_impersonate: bool = False          # the gateway's own identity


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


class Authenticator:
    def __init__(self, gateway_token: str, gateway_user: str = DEFAULT_GATEWAY_USER):
        if not gateway_token:
            raise ValueError("gateway_token must not be empty")
        self._token = gateway_token.encode()
        self._gateway_user = gateway_user

    def authenticate(self, request: Request) -> UserInfo:
        """A verified client certificate (CN/O) first, then the gateway's bearer token; else 401."""
        if request.peer_cert:
            subject = [attr for rdn in request.peer_cert.get("subject", ()) for attr in rdn]
            cn = next((v for k, v in subject if k == "commonName"), "")
            if cn:
                groups = tuple(v for k, v in subject if k == "organizationName")
                return UserInfo(cn, groups + (AUTHENTICATED,))
        scheme, _, token = (request.header("authorization") or "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self._token):
            return UserInfo(self._gateway_user, (AUTHENTICATED,), may_impersonate=True)
        raise unauthorized()


class Rbac:
    """{"users": {name: role}, "groups": {name: role}}; admin = everything, view = get/list/watch."""

    def __init__(self, config: Mapping[str, Mapping[str, str]] | None = None):
        config = DEFAULT_RBAC if config is None else config
        self.users: dict[str, str] = dict(config.get("users") or {})
        self.groups: dict[str, str] = dict(config.get("groups") or {})
        for role in (*self.users.values(), *self.groups.values()):
            if role not in ("admin", "view"):
                raise ValueError(f"unknown role {role!r} (admin or view)")

    def roles(self, user: UserInfo) -> set[str]:
        roles = {self.users[user.name]} if user.name in self.users else set()
        return roles | {self.groups[g] for g in user.groups if g in self.groups}

    def allows(self, user: UserInfo, info: RequestInfo) -> bool:
        roles = self.roles(user)
        if "admin" in roles:
            return True
        if not info.is_resource:
            return info.verb in ("get", "head") and any(
                info.path == p or info.path.startswith(p + "/") for p in _PUBLIC_PATHS)
        if info.group == "authorization.k8s.io" and info.resource.startswith("selfsubject") \
                and info.verb == "create":
            return True                     # system:basic-user: anyone may ask about themselves
        return ("view" in roles and info.verb in ("get", "list", "watch")
                and info.subresource not in _STREAM_SUBRESOURCES)

    def reason(self, user: UserInfo) -> str:
        """The RBAC authorizer's "allowed by" text for a granted request ("" for built-in grants)."""
        for role in ("admin", "view"):
            if self.users.get(user.name) == role:
                return (f'RBAC: allowed by ClusterRoleBinding "fakekube-{role}" of ClusterRole '
                        f'"{role}" to User "{user.name}"')
            group = next((g for g in user.groups if self.groups.get(g) == role), None)
            if group is not None:
                return (f'RBAC: allowed by ClusterRoleBinding "fakekube-{role}" of ClusterRole '
                        f'"{role}" to Group "{group}"')
        return ""


def forbidden(user: UserInfo, info: RequestInfo) -> ApiError:
    """The authorizer's 403, word for word: `pods "x" is forbidden: User "bob" cannot get resource …`."""
    if not info.is_resource:
        return ApiError(403, f'forbidden: User "{user.name}" cannot {info.verb} path "{info.path}"',
                        "Forbidden", {})
    qualified = f"{info.resource}.{info.group}" if info.group else info.resource
    subject = f'{qualified} "{info.name}"' if info.name else qualified
    scope = f'in the namespace "{info.namespace}"' if info.namespace else "at the cluster scope"
    message = (f'{subject} is forbidden: User "{user.name}" cannot {info.verb} resource '
               f'"{info.full_resource}" in API group "{info.group}" {scope}')
    details: dict[str, Any] = {}
    if info.name:
        details["name"] = info.name
    if info.group:
        details["group"] = info.group
    details["kind"] = info.resource
    return ApiError(403, message, "Forbidden", details)


def impersonate(request: Request, caller: UserInfo, rbac: Rbac) -> UserInfo:
    """Applies Impersonate-* headers (the effective user), as k8s.io/apiserver's filter does."""
    user = request.header("impersonate-user")
    groups = request.header_values("impersonate-group")
    uid = request.header("impersonate-uid")
    extra: dict[str, tuple[str, ...]] = {}
    prefix = b"impersonate-extra-"
    for key, value in request.headers:
        if key.startswith(prefix):
            name = unquote(key[len(prefix):].decode("latin-1"))
            extra[name] = extra.get(name, ()) + (value.decode("latin-1"),)
    if user is None:
        if groups or uid is not None or extra:
            requested = [f"Group={g}" for g in groups] + ([f"UID={uid}"] if uid else [])
            raise internal(f"requested [{' '.join(requested)}] without impersonating a user")
        return caller
    if not caller.may_impersonate and "admin" not in rbac.roles(caller):
        target = RequestInfo(True, "impersonate", "", resource="users", name=user)
        raise forbidden(caller, target)

    effective_groups = list(groups)
    sa_prefix = "system:serviceaccount:"
    if user.startswith(sa_prefix) and not groups and user.count(":") == 3:
        namespace = user.split(":")[2]
        effective_groups += ["system:serviceaccounts", f"system:serviceaccounts:{namespace}"]
    if user == ANONYMOUS:
        if UNAUTHENTICATED not in effective_groups:
            effective_groups.append(UNAUTHENTICATED)
    elif AUTHENTICATED not in effective_groups and UNAUTHENTICATED not in effective_groups:
        effective_groups.append(AUTHENTICATED)
    return UserInfo(user, tuple(effective_groups), uid or "", extra)
