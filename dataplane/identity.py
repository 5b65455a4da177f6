"""Who is calling: authentication from a verified client certificate or a bearer token.

The TLS layer has already verified the certificate chain; this module maps a certificate or a
token to an `Identity` using one snapshot's tokens and revocations. An `Authenticator` lives
exactly as long as its snapshot, so its caches never outlive a revocation.
"""
from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

if TYPE_CHECKING:
    from .oidc import OIDCVerifier

CERT_CACHE_LIMIT = 100_000
_SHA256 = hashes.SHA256()


@dataclass(frozen=True)
class Identity:
    user: str
    groups: tuple[str, ...]
    uid: str = ""
    method: str = ""          # "cert" | "token" | "oidc"
    component: str = ""       # service identity (portal, cd, ...) recorded as the audit source
    credential_id: str = ""   # token id or certificate serial (hex): what revocation names
    channel: str = "kubectl"  # "kubectl" | "terminal" (the browser terminal's tokens): policy conditions
    session: str = ""         # the console session the credential is bound to (revocable)


class AuthenticationError(Exception):
    """Authentication refused. `reason` is a fixed word, safe for metrics labels and audit."""

    REASONS = frozenset({"no_credentials", "invalid_token", "unknown_token", "revoked", "bad_certificate",
                         "oidc_unavailable"})

    def __init__(self, reason: str, message: str = ""):
        if reason not in self.REASONS:
            raise ValueError(f"unknown authentication failure reason {reason!r}")
        super().__init__(message or reason.replace("_", " "))
        self.reason = reason


@dataclass(frozen=True)
class _TokenEntry:
    token_id: str
    sha256: bytes             # digest of the token (raw bytes, compared in constant time)
    user: str
    groups: tuple[str, ...]
    component: str
    channel: str
    session: str


def normalise_serial(serial: str) -> str:
    """Certificate serials as revocations name them: lower-case hex, no leading zeros."""
    return format(int(serial, 16), "x")


class Authenticator:
    """Maps credentials to identities for one snapshot (its `tokens` and `revocations`)."""

    def __init__(self, snapshot_data: Mapping[str, Any]):
        self._tokens: dict[str, _TokenEntry] = {}
        for entry in snapshot_data.get("tokens", ()):
            digest = entry["sha256"].lower()
            self._tokens[digest] = _TokenEntry(
                token_id=entry["id"],
                sha256=bytes.fromhex(digest),
                user=entry["user"],
                groups=tuple(entry.get("groups", ())),
                component=entry.get("component") or "",
                channel=entry.get("channel", "kubectl"),
                session=entry.get("session") or "",
            )
        revocations = snapshot_data.get("revocations", {})
        self._revoked_users = frozenset(revocations.get("users", ()))
        self._revoked_groups = frozenset(revocations.get("groups", ()))
        self._revoked_serials = frozenset(normalise_serial(s) for s in revocations.get("cert_serials", ()))
        self._revoked_token_ids = frozenset(revocations.get("token_ids", ()))
        self._revoked_sessions = frozenset(revocations.get("sessions", ()))
        # Keyed by the certificate's SHA-256 fingerprint rather than the bare serial: two CAs may
        # issue the same serial, and a cache hit must never hand out someone else's identity.
        self._cert_cache: dict[bytes, Identity] = {}

    def authenticate(self, peer_cert: x509.Certificate | None, authorization: bytes | None,
                     oidc: OIDCVerifier | None = None) -> Identity:
        """`oidc` (the worker's, with --oidc-issuer-url) verifies bearer JWTs the snapshot does not know."""
        if peer_cert is not None:
            return self._from_certificate(peer_cert)
        if authorization is not None:
            return self._from_bearer(authorization, oidc)
        raise AuthenticationError("no_credentials", "no client certificate or bearer token")

    # -- certificates -------------------------------------------------------------------------

    def _from_certificate(self, cert: x509.Certificate) -> Identity:
        fingerprint = cert.fingerprint(_SHA256)
        identity = self._cert_cache.get(fingerprint)
        if identity is None:
            identity = self._check_revoked(_identity_from_certificate(cert))
            if len(self._cert_cache) >= CERT_CACHE_LIMIT:
                self._cert_cache.clear()
            self._cert_cache[fingerprint] = identity
        return identity

    # -- bearer tokens ------------------------------------------------------------------------

    def _from_bearer(self, authorization: bytes, oidc: OIDCVerifier | None) -> Identity:
        token = parse_bearer(authorization)
        digest = hashlib.sha256(token).digest()
        entry = self._tokens.get(digest.hex())
        if entry is None and oidc is not None:      # not the snapshot's: perhaps an OIDC ID token
            return self._check_revoked(oidc.verify(token))
        # The dict lookup is keyed by a hash the caller cannot steer; the constant-time compare
        # keeps the final equality check free of early-exit timing all the same.
        if entry is None or not hmac.compare_digest(entry.sha256, digest):
            raise AuthenticationError("unknown_token", "the bearer token is not known")
        if entry.token_id in self._revoked_token_ids:
            raise AuthenticationError("revoked", "the bearer token has been revoked")
        return self._check_revoked(Identity(
            user=entry.user,
            groups=entry.groups,
            method="token",
            component=entry.component,
            credential_id=entry.token_id,
            channel=entry.channel,
            session=entry.session,
        ))

    # -- revocation ---------------------------------------------------------------------------

    def _check_revoked(self, identity: Identity) -> Identity:
        if identity.method == "cert" and identity.credential_id in self._revoked_serials:
            raise AuthenticationError("revoked", "the client certificate has been revoked")
        if identity.session and identity.session in self._revoked_sessions:
            raise AuthenticationError("revoked", "the console session of this credential has ended")
        if identity.user in self._revoked_users:
            raise AuthenticationError("revoked", f"user {identity.user!r} has been revoked")
        for group in identity.groups:
            if group in self._revoked_groups:
                raise AuthenticationError("revoked", f"group {group!r} has been revoked")
        return identity


def parse_bearer(authorization: bytes) -> bytes:
    """The token of an `Authorization: Bearer <token>` value; anything else is invalid_token."""
    scheme, sep, token = authorization.strip().partition(b" ")
    token = token.strip(b" ")
    # Scheme names are case-insensitive (RFC 9110 §11.1); the token is b64token-ish visible ASCII.
    if not sep or scheme.lower() != b"bearer" or not token:
        raise AuthenticationError("invalid_token", "malformed Authorization header (expected Bearer)")
    if any(byte <= 0x20 or byte >= 0x7F for byte in token):
        raise AuthenticationError("invalid_token", "malformed bearer token")
    return token


def _identity_from_certificate(cert: x509.Certificate) -> Identity:
    subject = cert.subject
    common_names = subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    # Several CNs would make the user ambiguous (Go takes the last, others the first): refuse.
    if len(common_names) != 1 or not _text(common_names[0].value).strip():
        raise AuthenticationError("bad_certificate", "client certificate has no single non-blank CN")
    groups: list[str] = []
    for attribute in subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME):
        group = _text(attribute.value)
        if group and group not in groups:
            groups.append(group)
    return Identity(
        user=_text(common_names[0].value),
        groups=tuple(groups),
        method="cert",
        credential_id=format(cert.serial_number, "x"),
        session=_session_of(cert),
    )


SESSION_URI_PREFIX = "urn:accesspoint:session:"


def _session_of(cert: x509.Certificate) -> str:
    """The console session a certificate is bound to: its URI SAN urn:accesspoint:session:<id>."""
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ""
    sessions = {uri[len(SESSION_URI_PREFIX):] for uri in names.get_values_for_type(x509.UniformResourceIdentifier)
                if uri.startswith(SESSION_URI_PREFIX)}
    if len(sessions) > 1 or "" in sessions:
        # which session would revocation have to name? refuse rather than pick one
        raise AuthenticationError("bad_certificate", "client certificate names no single clear console session")
    return sessions.pop() if sessions else ""


def _text(value: str | bytes) -> str:
    return value if isinstance(value, str) else ""
