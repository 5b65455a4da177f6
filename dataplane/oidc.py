"""OIDC ID tokens as bearer tokens: the issuer's signing keys, token verification, claim mapping.

One `OIDCVerifier` lives as long as its worker (its keys outlive snapshots; the revocation check
stays with each snapshot's `identity.Authenticator`, which calls `verify`). Verification is
synchronous and never waits on the network: the keys come from a cache that is filled off the
event loop (discovery document, then JWKS, fetched in a thread). When a token names a key the
cache lacks, `verify` starts a refresh (one at a time, `min_refresh_interval` apart)
and raises `KeysPending`; the pipeline awaits it for at most `WAIT_BOUND` seconds and verifies
once more. A failed fetch keeps the cached keys; with none at all every token is refused.

Claim mapping follows kube-apiserver's --oidc-* flags (see `ClaimMapping.from_flags`).
"""
from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import logging
import math
import re
import ssl
import time
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from .identity import AuthenticationError, Identity
from .options import ConfigError

log = logging.getLogger("accesspoint.oidc")

DISCOVERY_PATH = "/.well-known/openid-configuration"
CLOCK_SKEW = 30.0            # seconds of leeway on exp, nbf and iat
FETCH_TIMEOUT = 5.0          # seconds for one HTTP request to the issuer, body included
WAIT_BOUND = 5.0             # seconds a request waits for keys being fetched, then 401
KEYS_MAX_AGE = 900.0         # keys older than this are re-fetched in the background (removed keys go)
MAX_DOCUMENT_BYTES = 1 << 20
MAX_KEYS = 100
VERIFIED_CACHE_LIMIT = 10_000
MIN_RSA_BITS = 2048

# Asymmetric algorithms only, chosen by the JWK's key type: never `none`, never HS* (an HMAC
# "keyed" with a public key anyone can read is the classic algorithm-confusion forgery).
_ALGORITHMS_BY_KEY: dict[tuple[str, str], frozenset[str]] = {
    ("RSA", ""): frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}),
    ("EC", "P-256"): frozenset({"ES256"}),
    ("EC", "P-384"): frozenset({"ES384"}),
    ("EC", "P-521"): frozenset({"ES512"}),
    ("OKP", "Ed25519"): frozenset({"EdDSA"}),
    ("OKP", "Ed448"): frozenset({"EdDSA"}),
}
ALLOWED_ALGORITHMS = frozenset().union(*_ALGORITHMS_BY_KEY.values())
_PUBLIC_KEY_TYPES = (rsa.RSAPublicKey, ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)
_JWT_SHAPE = re.compile(rb"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")   # JWS compact serialisation


class FetchError(Exception):
    """The issuer's discovery document or JWKS could not be had; the message says why."""


class KeysPending(AuthenticationError):
    """The token's key is being fetched. `await wait()`, then verify once more; where nobody can
    wait (a live stream's re-check) it is a refusal like any other."""

    def __init__(self, refresh: asyncio.Future):
        super().__init__("oidc_unavailable", "the OIDC issuer's signing keys are being fetched")
        self._refresh = refresh

    async def wait(self, bound: float | None = None) -> None:
        """Returns when the fetch has ended or after `bound` (default WAIT_BOUND) seconds; never raises."""
        await asyncio.wait({self._refresh}, timeout=WAIT_BOUND if bound is None else bound)


# -- claims -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClaimMapping:
    username_claim: str = "sub"
    username_prefix: str = ""
    groups_claim: str = ""
    groups_prefix: str = ""

    @classmethod
    def from_flags(cls, issuer_url: str, username_claim: str, username_prefix: str, groups_claim: str,
                   groups_prefix: str) -> "ClaimMapping":
        """As kube-apiserver reads --oidc-username-prefix: "-" means no prefix; unset means none
        for the `email` claim and "<issuer URL>#" for any other, so that `sub` values of one
        issuer cannot pass for names from another source."""
        if username_prefix == "-":
            prefix = ""
        elif username_prefix:
            prefix = username_prefix
        else:
            prefix = "" if username_claim == "email" else issuer_url + "#"
        return cls(username_claim, prefix, groups_claim, groups_prefix)

    def user(self, claims: Mapping[str, Any]) -> str:
        value = claims.get(self.username_claim)
        if not isinstance(value, str) or not value:
            raise _invalid(f"the username claim {self.username_claim!r} is missing or not a non-empty string")
        if self.username_claim == "email" and "email_verified" in claims and claims["email_verified"] is not True:
            # kube-apiserver: when the IdP says whether the address is verified, it must be
            raise _invalid("the token's email is not verified")
        return _not_system(self.username_prefix + value)

    def groups(self, claims: Mapping[str, Any]) -> tuple[str, ...]:
        if not self.groups_claim or self.groups_claim not in claims:
            return ()
        value = claims[self.groups_claim]
        names = [value] if isinstance(value, str) else value
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise _invalid(f"the groups claim {self.groups_claim!r} is neither a string nor a list of strings")
        groups: list[str] = []
        for name in names:
            group = _not_system(self.groups_prefix + name)
            if name and group not in groups:
                groups.append(group)
        return tuple(groups)


def _not_system(name: str) -> str:
    # "system:" names are the cluster's own (system:masters is cluster-admin): an IdP never mints them
    if name.startswith("system:"):
        raise _invalid("OIDC users and groups may not use the reserved system: prefix")
    return name


def _invalid(message: str) -> AuthenticationError:
    return AuthenticationError("invalid_token", message)


# -- keys ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SigningKey:
    kid: str | None
    algorithms: frozenset[str]
    key: Any                    # a cryptography public key


def parse_jwks(document: Any) -> list[SigningKey]:
    """The usable signature keys of a JWKS; others (symmetric, private, encryption-only, weak,
    malformed) are skipped, so that one odd key does not cost the issuer its other keys."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise FetchError("the JWKS has no list of keys")
    keys: list[SigningKey] = []
    for entry in document["keys"][:MAX_KEYS]:
        key = _signing_key(entry)
        if key is not None:
            keys.append(key)
    return keys


def _signing_key(entry: Any) -> SigningKey | None:
    if not isinstance(entry, dict) or entry.get("use", "sig") != "sig" or "d" in entry:
        return None
    kty, crv = entry.get("kty"), entry.get("crv", "")
    algorithms = _ALGORITHMS_BY_KEY.get((kty, "" if kty == "RSA" else crv))
    if algorithms is None:
        return None
    alg = entry.get("alg")
    if alg is not None:
        if alg not in algorithms:
            return None
        algorithms = frozenset({alg})
    kid = entry.get("kid")
    if kid is not None and not isinstance(kid, str):
        return None
    try:
        public_key = jwt.PyJWK(entry, algorithm=min(algorithms)).key
    except (jwt.PyJWTError, ValueError, TypeError):
        return None
    if not isinstance(public_key, _PUBLIC_KEY_TYPES):
        return None
    if isinstance(public_key, rsa.RSAPublicKey) and public_key.key_size < MIN_RSA_BITS:
        return None
    return SigningKey(kid, algorithms, public_key)


def fetch_keys(issuer_url: str, ssl_context: ssl.SSLContext, timeout: float = FETCH_TIMEOUT) -> list[SigningKey]:
    """Discovery, then the JWKS it names (blocking: run it in a thread). Raises FetchError."""
    discovery = _get_json(issuer_url.rstrip("/") + DISCOVERY_PATH, ssl_context, timeout)
    if not isinstance(discovery, dict):
        raise FetchError("the discovery document is not a JSON object")
    if discovery.get("issuer") != issuer_url:
        # OpenID Connect Discovery 1.0 §4.3: the document must name the issuer it was fetched for
        raise FetchError(f"the discovery document names issuer {str(discovery.get('issuer'))[:200]!r}, "
                         f"not {issuer_url!r}")
    jwks_uri = discovery.get("jwks_uri")
    if not isinstance(jwks_uri, str) or urlsplit(jwks_uri).scheme != "https":
        raise FetchError("the discovery document has no https jwks_uri")
    keys = parse_jwks(_get_json(jwks_uri, ssl_context, timeout))
    if not keys:
        raise FetchError("the JWKS has no usable signature key")
    return keys


def _get_json(url: str, ssl_context: ssl.SSLContext, timeout: float) -> Any:
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise FetchError(f"{url}: not an https URL")
    deadline = time.monotonic() + timeout
    conn = http.client.HTTPSConnection(parts.hostname, parts.port or 443, timeout=timeout, context=ssl_context)
    try:
        conn.request("GET", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
                     headers={"Accept": "application/json"})
        response = conn.getresponse()
        if response.status != 200:      # redirects included: the URL is the issuer's to get right
            raise FetchError(f"{url}: HTTP {response.status}")
        body = bytearray()
        while chunk := response.read(65536):
            body += chunk
            if len(body) > MAX_DOCUMENT_BYTES:
                raise FetchError(f"{url}: larger than {MAX_DOCUMENT_BYTES} bytes")
            if time.monotonic() > deadline:   # a server dripping bytes must not hold the refresh
                raise FetchError(f"{url}: took longer than {timeout} s")
        return json.loads(body)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise FetchError(f"{url}: {exc.__class__.__name__}: {exc}") from None
    finally:
        conn.close()


# -- the verifier -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Verified:
    identity: Identity
    until: float                # exp + leeway
    generation: int             # of the key set that verified it


class OIDCVerifier:
    def __init__(self, issuer_url: str, client_id: str, mapping: ClaimMapping, ssl_context: ssl.SSLContext, *,
                 min_refresh_interval: float = 10.0):
        self.issuer_url = issuer_url
        self.client_id = client_id
        self.mapping = mapping
        self.min_refresh_interval = min_refresh_interval
        self._ssl_context = ssl_context
        self._keys: list[SigningKey] = []
        self._generation = 0
        self._fetched_at = -math.inf          # monotonic time of the keys in hand
        self._refresh_ended = -math.inf
        self._refresh: asyncio.Future | None = None
        self._verified: dict[bytes, _Verified] = {}

    @classmethod
    def from_config(cls, config) -> "OIDCVerifier | None":
        """The verifier --oidc-* configure (None without --oidc-issuer-url)."""
        if not config.oidc_issuer_url:
            return None
        mapping = ClaimMapping.from_flags(config.oidc_issuer_url, config.oidc_username_claim,
                                          config.oidc_username_prefix, config.oidc_groups_claim,
                                          config.oidc_groups_prefix)
        try:
            context = ssl.create_default_context(cafile=config.oidc_ca_file or None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"--oidc-ca-file: {config.oidc_ca_file}: {exc}") from None
        return cls(config.oidc_issuer_url, config.oidc_client_id, mapping, context,
                   min_refresh_interval=config.oidc_refresh_interval)

    @property
    def keys(self) -> list[SigningKey]:
        return list(self._keys)

    # -- verification (synchronous, never on the network) ---------------------------------------------
    def verify(self, token: bytes) -> Identity:
        """The identity an ID token proves, or AuthenticationError (KeysPending: see the module)."""
        if _JWT_SHAPE.fullmatch(token) is None:
            raise AuthenticationError("unknown_token", "the bearer token is not known")
        digest = hashlib.sha256(token).digest()
        now = time.monotonic()
        if now - self._fetched_at > KEYS_MAX_AGE and self._keys:
            self._start_refresh(now)          # in the background: the keys in hand still serve
        cached = self._verified.get(digest)
        if cached is not None and cached.generation == self._generation and time.time() <= cached.until:
            return cached.identity
        text = token.decode("ascii")
        try:
            header = jwt.get_unverified_header(text)
        except jwt.PyJWTError:
            raise _invalid("not a well-formed JWT") from None
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in ALLOWED_ALGORITHMS:
            raise _invalid(f"signature algorithm {str(alg)[:20]!r} is not accepted")
        if kid is not None and not isinstance(kid, str):
            raise _invalid("the token's key id is not a string")
        claims = self._decode(text, alg, self._candidates(kid, alg, now))
        identity = Identity(user=self.mapping.user(claims), groups=self.mapping.groups(claims), method="oidc",
                            credential_id="sha256:" + digest.hex()[:32])
        if len(self._verified) >= VERIFIED_CACHE_LIMIT:
            self._verified.clear()
        self._verified[digest] = _Verified(identity, claims["exp"] + CLOCK_SKEW, self._generation)
        return identity

    def _candidates(self, kid: str | None, alg: str, now: float) -> list[SigningKey]:
        named = [key for key in self._keys if kid is None or key.kid == kid]
        if not named:
            if self._refresh is not None or self._start_refresh(now):
                raise KeysPending(self._refresh)
            if not self._keys:
                raise AuthenticationError("oidc_unavailable", "the OIDC issuer's signing keys are unavailable")
            raise _invalid("the token names a key the OIDC issuer does not publish")
        usable = [key for key in named if alg in key.algorithms]
        if not usable:
            raise _invalid(f"signature algorithm {alg!r} does not match the token's key")
        return usable

    def _decode(self, text: str, alg: str, keys: list[SigningKey]) -> dict[str, Any]:
        for key in keys:          # several only for a token without `kid`
            try:
                claims = jwt.decode(text, key.key, algorithms=[alg], audience=self.client_id,
                                    issuer=self.issuer_url, leeway=CLOCK_SKEW,
                                    options={"require": ["iss", "aud", "exp"]})
            except jwt.InvalidSignatureError:
                continue
            except jwt.ExpiredSignatureError:
                raise _invalid("the token has expired") from None
            except jwt.PyJWTError as exc:
                raise _invalid(f"the token is not valid: {exc}") from None
            if not isinstance(claims.get("exp"), (int, float)):
                raise _invalid("the token's exp is not a number")
            return claims
        raise _invalid("the token's signature does not verify")

    # -- keys (fetched off the event loop) -------------------------------------------------------------
    def _start_refresh(self, now: float) -> bool:
        """Start fetching the keys unless a fetch runs or one ended too recently. (Counting from the
        end, a request that waited for a fetch and verifies again never starts the next one.)"""
        if self._refresh is not None or now - self._refresh_ended < self.min_refresh_interval:
            return False
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        self._refresh = loop.create_task(self._refresh_keys())
        return True

    async def _refresh_keys(self) -> None:
        try:
            keys = await asyncio.get_running_loop().run_in_executor(
                None, fetch_keys, self.issuer_url, self._ssl_context)
        except Exception as exc:   # keep the keys in hand; the next refresh may do better
            log.warning("OIDC keys of %s not refreshed (keeping %d cached): %s", self.issuer_url,
                        len(self._keys), exc)
        else:
            self._keys = keys
            self._generation += 1
            self._fetched_at = time.monotonic()
            log.info("OIDC keys of %s refreshed: %d key(s), ids %s", self.issuer_url, len(keys),
                     sorted(str(key.kid) for key in keys))
        finally:
            self._refresh = None
            self._refresh_ended = time.monotonic()
