"""Header rewriting between the caller and the API server (request side and response side).

Upstream requests never carry what the caller sent to prove or borrow an identity:
`Authorization`, every `Impersonate-*`, front-proxy identity headers (`X-Remote-*`), or
`X-Forwarded-*`/`Forwarded` spoofing. Hop-by-hop headers (RFC 9110 §7.6.1) and every header
named in `Connection` are dropped, except `Connection`/`Upgrade` for upgrade requests, which are
rebuilt. The gateway adds the cluster's credential and impersonates the effective identity.
Repeated headers keep their order (X-Stream-Protocol-Version, Sec-WebSocket-Protocol).

The caller's own impersonation headers (kubectl --as/--as-group/--as-uid) are parsed here into
an `ImpersonationRequest`; the pipeline authorizes each part with the policy.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from urllib.parse import unquote

from .status import bad_request

HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"proxy-authenticate",
    b"proxy-authorization", b"te", b"trailer", b"trailers", b"transfer-encoding", b"upgrade",
})
# caller headers that are never forwarded upstream, whatever the Connection header says
_CALLER_CREDENTIALS = frozenset({b"authorization", b"cookie"})
# headers the gateway sets itself
_GATEWAY_SET = frozenset({b"host", b"content-length", b"expect", b"forwarded", b"x-real-ip"})
_DROP_PREFIXES = (b"impersonate-", b"x-forwarded-", b"x-remote-", b"proxy-")

IMPERSONATE_USER = b"impersonate-user"
IMPERSONATE_GROUP = b"impersonate-group"
IMPERSONATE_UID = b"impersonate-uid"
IMPERSONATE_EXTRA = b"impersonate-extra-"

RESERVED_EXTRA_PREFIX = "accesspoint.io/"
REQUEST_ID_EXTRA = RESERVED_EXTRA_PREFIX + "request-id"
GRANT_ID_EXTRA = RESERVED_EXTRA_PREFIX + "grant-id"    # joins the cluster's audit log to the grant

# client-go's legal header-key bytes (token characters); everything else in an extra key is
# %-encoded, and "%" itself too (k8s.io/client-go/transport/round_trippers.go headerKeyEscape)
_TOKEN = frozenset(b"!#$&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")

SERVICEACCOUNT_PREFIX = "system:serviceaccount:"


def escape_extra_key(key: str) -> str:
    out = []
    for b in key.encode("utf-8"):
        out.append(chr(b) if b in _TOKEN else f"%{b:02X}")
    return "".join(out)


def unescape_extra_key(raw: str) -> str:
    # Kubernetes lower-cases the header name, then path-unescapes the key
    return unquote(raw.lower(), errors="strict")


def connection_tokens(headers: list[tuple[bytes, bytes]]) -> set[bytes]:
    tokens: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            for token in value.split(b","):
                token = token.strip().lower()
                if token:
                    tokens.add(token)
    return tokens


def header_value(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


def header_values(headers: list[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    return [value for key, value in headers if key == name]


# --- the caller's own impersonation ------------------------------------------------------------

@dataclass(frozen=True)
class ImpersonationRequest:
    user: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: tuple[tuple[str, tuple[str, ...]], ...] = field(default=())   # key → values, in order

    def checks(self) -> list[tuple[str, str, str]]:
        """(resource, name, namespace) per part, in the order Kubernetes checks them."""
        out: list[tuple[str, str, str]] = []
        if self.user.startswith(SERVICEACCOUNT_PREFIX):
            namespace, _, name = self.user[len(SERVICEACCOUNT_PREFIX):].partition(":")
            out.append(("serviceaccounts", name, namespace))
        else:
            out.append(("users", self.user, ""))
        out += [("groups", group, "") for group in self.groups]
        for key, values in self.extra:
            out += [(f"userextras/{key}", value, "") for value in values]
        if self.uid:
            out.append(("uids", self.uid, ""))
        return out

    def effective_groups(self) -> tuple[str, ...]:
        """The groups Kubernetes gives the impersonated user (impersonation.go)."""
        groups = list(self.groups)
        if self.user.startswith(SERVICEACCOUNT_PREFIX):
            namespace = self.user[len(SERVICEACCOUNT_PREFIX):].partition(":")[0]
            for extra in ("system:serviceaccounts", f"system:serviceaccounts:{namespace}"):
                if extra not in groups:
                    groups.append(extra)
        if self.user != "system:anonymous" and "system:authenticated" not in groups:
            groups.append("system:authenticated")
        return tuple(groups)


def _text(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise bad_request("impersonation headers must be UTF-8") from None


def requested_impersonation(headers: list[tuple[bytes, bytes]]) -> ImpersonationRequest | None:
    """The caller's Impersonate-* headers, or None. Malformed combinations → 400 (as Kubernetes)."""
    user: str | None = None
    groups: list[str] = []
    uid = ""
    extra: dict[str, list[str]] = {}
    seen = False
    for name, value in headers:
        if not name.startswith(b"impersonate-"):
            continue
        seen = True
        if name == IMPERSONATE_USER:
            if user is not None:
                raise bad_request("only one Impersonate-User header is allowed")
            user = _text(value)
        elif name == IMPERSONATE_GROUP:
            groups.append(_text(value))
        elif name == IMPERSONATE_UID:
            if uid:
                raise bad_request("only one Impersonate-Uid header is allowed")
            uid = _text(value)
        elif name.startswith(IMPERSONATE_EXTRA):
            raw_key = _text(name[len(IMPERSONATE_EXTRA):])
            try:
                key = unescape_extra_key(raw_key)
            except UnicodeDecodeError:
                raise bad_request("malformed Impersonate-Extra key") from None
            if not key:
                raise bad_request("empty Impersonate-Extra key")
            if key.startswith(RESERVED_EXTRA_PREFIX):   # the gateway's own provenance keys
                raise bad_request(f"Impersonate-Extra keys under {RESERVED_EXTRA_PREFIX} are reserved")
            extra.setdefault(key, []).append(_text(value))
        else:
            raise bad_request(f"unknown impersonation header {name.decode('latin-1')!r}")
    if not seen:
        return None
    if not user:
        raise bad_request("requested impersonation of groups, uid or extras without impersonating a user")
    return ImpersonationRequest(user, tuple(groups), uid,
                                tuple((k, tuple(v)) for k, v in extra.items()))


# --- upstream request headers -------------------------------------------------------------------

@dataclass(frozen=True)
class Impersonate:
    """Who the upstream request impersonates."""
    user: str
    groups: tuple[str, ...]
    uid: str = ""
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()


def _header_value(text: str) -> bytes:
    data = text.encode("utf-8")
    if b"\0" in data or b"\n" in data or b"\r" in data:
        raise bad_request("impersonation values must not contain control characters")
    return data


@functools.lru_cache(maxsize=4096)
def _extra_header_name(key: str) -> bytes:
    return b"impersonate-extra-" + escape_extra_key(key).encode("ascii")


@functools.lru_cache(maxsize=4096)
def impersonation_block(impersonate: Impersonate) -> tuple[tuple[bytes, bytes], ...]:
    """The Impersonate-* headers of one identity, built once and reused by its every request
    (the cache holds no secret: these headers are what the cluster's audit log shows)."""
    out = [(IMPERSONATE_USER, _header_value(impersonate.user))]
    out += [(IMPERSONATE_GROUP, _header_value(group)) for group in impersonate.groups]
    if impersonate.uid:
        out.append((IMPERSONATE_UID, _header_value(impersonate.uid)))
    for key, values in impersonate.extra:
        name = _extra_header_name(key)
        out += [(name, _header_value(value)) for value in values]
    return tuple(out)


def upstream_request_headers(headers: list[tuple[bytes, bytes]], *, host: bytes, token: str | None,
                             impersonate: Impersonate, request_id: str,
                             client_ip: str, upgrade: bytes | None = None,
                             body_framing: tuple[bytes, bytes] | None = None,
                             grant_id: str = "") -> list[tuple[bytes, bytes]]:
    """Headers for the upstream request, in order: host, the caller's headers that may pass, the
    gateway's credential and impersonation, framing."""
    named = connection_tokens(headers)
    out: list[tuple[bytes, bytes]] = [(b"host", host)]
    for name, value in headers:
        if (name in HOP_BY_HOP or name in _CALLER_CREDENTIALS or name in _GATEWAY_SET
                or name.startswith(_DROP_PREFIXES) or name in named):
            continue
        out.append((name, value))
    if upgrade is not None:
        out.append((b"connection", b"Upgrade"))
        out.append((b"upgrade", upgrade))
    if token:
        out.append((b"authorization", b"Bearer " + token.encode("ascii")))
    out += impersonation_block(impersonate)
    out.append((_extra_header_name(REQUEST_ID_EXTRA), _header_value(request_id)))
    if grant_id:
        out.append((_extra_header_name(GRANT_ID_EXTRA), _header_value(grant_id)))
    if client_ip:
        out.append((b"x-forwarded-for", client_ip.encode("ascii", "replace")))
    if body_framing is not None:
        out.append(body_framing)
    return out


# --- response headers toward the caller ----------------------------------------------------------

def downstream_response_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The upstream's response headers minus hop-by-hop ones (framing is the protocol layer's)."""
    named = connection_tokens(headers)
    return [(name, value) for name, value in headers
            if name not in HOP_BY_HOP and name not in named and not name.startswith(b"proxy-")]
