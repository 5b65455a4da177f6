"""Identity assertions: who a tunnelled request is for, signed by the gateway fleet's key.

The gateway turns the Impersonate-* fields the pipeline built for a request into an assertion
bound to the cluster, the method and the request target (path and query, byte for byte) and
valid for a few seconds; the agent verifies it with the fleet's public key and sets the
Impersonate-* fields from it itself. A compromised tunnel or gateway without the key cannot act
as anyone, and a captured assertion is good only for the same request, for seconds.

Encoding: `base64url(payload) "." base64url(Ed25519(CONTEXT + base64url(payload)))`, payload a
compact JSON object {v, cluster, method, target, user, groups, uid, extra, iat, exp}.
"""
from __future__ import annotations

import base64
import binascii
import json
import time
from dataclasses import dataclass
from typing import Callable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .. import headers as hdrs

VERSION = 1
CONTEXT = b"accesspoint-assertion/v1."   # domain separation: this key signs nothing else like it
DEFAULT_TTL = 30
MAX_LIFETIME = 300      # the agent refuses assertions meant to live longer than this
MAX_SIZE = 1024 * 1024


class AssertionRefused(Exception):
    """The agent will not act on this assertion; `reason` is safe to show to the caller."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Assertion:
    cluster: str
    method: str
    target: str
    user: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()
    issued_at: int = 0
    expires_at: int = 0

    def impersonation_headers(self) -> list[tuple[bytes, bytes]]:
        """The Impersonate-* fields the agent sends to its API server."""
        out = [(hdrs.IMPERSONATE_USER, _value(self.user))]
        out += [(hdrs.IMPERSONATE_GROUP, _value(group)) for group in self.groups]
        if self.uid:
            out.append((hdrs.IMPERSONATE_UID, _value(self.uid)))
        for key, values in self.extra:
            name = hdrs.IMPERSONATE_EXTRA + hdrs.escape_extra_key(key).encode("ascii")
            out += [(name, _value(value)) for value in values]
        return out


def _value(text: str) -> bytes:
    data = text.encode("utf-8")
    if any(b in data for b in (0, 10, 13)):
        raise AssertionRefused("the identity assertion holds a control character")
    return data


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _unb64(data: bytes) -> bytes:
    return base64.urlsafe_b64decode(data + b"=" * (-len(data) % 4))


def split_impersonation(headers: list[tuple[bytes, bytes]]):
    """(user, groups, uid, extra) from the pipeline's Impersonate-* fields, and the other fields."""
    user, uid = "", ""
    groups: list[str] = []
    extra: dict[str, list[str]] = {}
    rest = []
    for name, value in headers:
        if name == hdrs.IMPERSONATE_USER:
            user = value.decode("utf-8")
        elif name == hdrs.IMPERSONATE_GROUP:
            groups.append(value.decode("utf-8"))
        elif name == hdrs.IMPERSONATE_UID:
            uid = value.decode("utf-8")
        elif name.startswith(hdrs.IMPERSONATE_EXTRA):
            key = hdrs.unescape_extra_key(name[len(hdrs.IMPERSONATE_EXTRA):].decode("ascii"))
            extra.setdefault(key, []).append(value.decode("utf-8"))
        else:
            rest.append((name, value))
    return (user, tuple(groups), uid, tuple((k, tuple(v)) for k, v in extra.items())), rest


class AssertionSigner:
    """The gateway side: signs one assertion per tunnelled request."""

    def __init__(self, key: Ed25519PrivateKey, ttl: float = DEFAULT_TTL, clock: Callable[[], float] = time.time):
        self._key = key
        self.ttl = ttl
        self._clock = clock

    def sign(self, cluster: str, method: str, target: str, user: str, groups=(), uid: str = "", extra=()) -> bytes:
        now = int(self._clock())
        payload = json.dumps({
            "v": VERSION, "cluster": cluster, "method": method, "target": target, "user": user,
            "groups": list(groups), "uid": uid, "extra": {k: list(v) for k, v in extra},
            "iat": now, "exp": now + int(self.ttl),
        }, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        encoded = _b64(payload)
        return encoded + b"." + _b64(self._key.sign(CONTEXT + encoded))


class AssertionVerifier:
    """The agent side: refuses unsigned, badly signed, expired, over-long, other-cluster and
    other-request assertions."""

    def __init__(self, public_key: Ed25519PublicKey, cluster: str, clock: Callable[[], float] = time.time,
                 max_lifetime: float = MAX_LIFETIME):
        self._key = public_key
        self.cluster = cluster
        self._clock = clock
        self.max_lifetime = max_lifetime

    def verify(self, token: bytes | None, method: str, target: str) -> Assertion:
        if not token:
            raise AssertionRefused("the request carries no identity assertion")
        if len(token) > MAX_SIZE:
            raise AssertionRefused("the identity assertion is too large")
        encoded, dot, signature = token.partition(b".")
        if not dot:
            raise AssertionRefused("the identity assertion is malformed")
        try:
            self._key.verify(_unb64(signature), CONTEXT + encoded)
            payload = json.loads(_unb64(encoded))
        except (InvalidSignature, binascii.Error, ValueError):
            raise AssertionRefused("the identity assertion is not signed by the gateway fleet") from None
        assertion = _parse(payload)
        if assertion.cluster != self.cluster:
            raise AssertionRefused(f'the identity assertion is for cluster "{assertion.cluster}", '
                                   f'not "{self.cluster}"')
        if assertion.method != method or assertion.target != target:
            raise AssertionRefused("the identity assertion is for another request")
        now = self._clock()
        if now >= assertion.expires_at:
            raise AssertionRefused("the identity assertion has expired")
        if assertion.expires_at - now > self.max_lifetime:
            raise AssertionRefused("the identity assertion is valid for too long")
        return assertion


def _parse(payload) -> Assertion:
    try:
        if not isinstance(payload, dict) or payload.get("v") != VERSION:
            raise TypeError
        texts = [payload[k] for k in ("cluster", "method", "target", "user", "uid")]
        groups, extra = payload["groups"], payload["extra"]
        iat, exp = payload["iat"], payload["exp"]
        if (not all(isinstance(t, str) for t in texts) or not isinstance(groups, list)
                or not all(isinstance(g, str) for g in groups) or not isinstance(extra, dict)
                or not all(isinstance(v, list) and all(isinstance(i, str) for i in v) for v in extra.values())
                or not all(isinstance(n, int) and not isinstance(n, bool) for n in (iat, exp))):
            raise TypeError
    except (KeyError, TypeError):
        raise AssertionRefused("the identity assertion is malformed") from None
    cluster, method, target, user, uid = texts
    if not user:
        raise AssertionRefused("the identity assertion names no user")
    return Assertion(cluster, method, target, user, tuple(groups), uid,
                     tuple((k, tuple(v)) for k, v in extra.items()), iat, exp)
