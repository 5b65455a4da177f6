"""The OIDC verifier against a local issuer: signatures, claims, algorithms, key fetching and
rotation, claim mapping as kube-apiserver's --oidc-* flags do it, and revocation of OIDC users."""
from __future__ import annotations

import asyncio
import ssl
import time

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from dataplane import oidc
from dataplane.config import GatewayConfig
from dataplane.identity import AuthenticationError, Authenticator
from dataplane.oidc import ClaimMapping, FetchError, KeysPending, OIDCVerifier, fetch_keys, parse_jwks
from dataplane.options import ConfigError
from tests.dataplane.gateway.helpers import run

from .issuer import CLIENT_ID, Issuer, Key


@pytest.fixture
def issuer(tmp_path):
    with Issuer(tmp_path) as issuer:
        yield issuer


def make_verifier(issuer: Issuer, interval: float = 10.0, **flags) -> OIDCVerifier:
    flags = {"username_claim": "sub", "username_prefix": "-", "groups_claim": "groups", "groups_prefix": "oidc:",
             **flags}
    mapping = ClaimMapping.from_flags(issuer.url, **flags)
    return OIDCVerifier(issuer.url, CLIENT_ID, mapping, issuer.ssl_context(), min_refresh_interval=interval)


async def verify(verifier: OIDCVerifier, token: str):
    """As the pipeline does: wait once for keys being fetched, then verify again."""
    try:
        return verifier.verify(token.encode())
    except KeysPending as pending:
        await pending.wait()
        return verifier.verify(token.encode())


async def refused(verifier: OIDCVerifier, token: str) -> str:
    with pytest.raises(AuthenticationError) as caught:
        await verify(verifier, token)
    return caught.value.reason


async def eventually_verifies(verifier: OIDCVerifier, token: str, timeout: float = 15.0):
    """Keys refresh at most once per interval: retry until the token verifies (or fail)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await verify(verifier, token)
        except AuthenticationError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


# -- accepted tokens ----------------------------------------------------------------------------------

def test_tokens_signed_with_each_key_type_verify_and_keys_are_fetched_once(issuer):
    issuer.keys = [Key.generate("rsa"), Key.generate("pss", "PS256"), Key.generate("ec", "ES256"),
                   Key.generate("ed", "EdDSA")]

    async def body():
        verifier = make_verifier(issuer)
        for key in issuer.keys:
            identity = await verify(verifier, issuer.token(key, groups=["devs", "ops"]))
            assert (identity.user, identity.groups, identity.method) == ("carol", ("oidc:devs", "oidc:ops"), "oidc")
            assert identity.credential_id.startswith("sha256:")
        assert issuer.jwks_fetches == 1

    run(body)


def test_a_small_clock_skew_is_tolerated(issuer):
    async def body():
        now = int(time.time())
        identity = await verify(make_verifier(issuer), issuer.token(exp=now - 5, nbf=now + 5, iat=now + 5))
        assert identity.user == "carol"

    run(body)


def test_a_token_without_kid_is_tried_against_the_keys(issuer):
    issuer.keys = [Key.generate("other"), issuer.keys[0]]

    async def body():
        token = issuer.token(issuer.keys[1], headers={"kid": None})
        assert (await verify(make_verifier(issuer), token)).user == "carol"

    run(body)


# -- refused tokens -----------------------------------------------------------------------------------

def _tampered(issuer: Issuer) -> str:
    header, _, signature = issuer.token().split(".")
    other = issuer.token(sub="admin").split(".")[1]
    return f"{header}.{other}.{signature}"


REFUSED = {
    "expired": lambda i: i.token(exp=int(time.time()) - 120),
    "not yet valid": lambda i: i.token(nbf=int(time.time()) + 120),
    "issued in the future": lambda i: i.token(iat=int(time.time()) + 120),
    "wrong audience": lambda i: i.token(aud="someone-else"),
    "one of several audiences is not enough unless it is ours": lambda i: i.token(aud=["a", "b"]),
    "wrong issuer": lambda i: i.token(iss="https://evil.example"),
    "no exp": lambda i: i.token(exp=None),
    "alg none": lambda i: i.unsigned_token(),
    "HS256 keyed with the public key": lambda i: i.hs256_with_public_key(),
    "tampered payload": _tampered,
    "forged with a published kid": lambda i: i.token(Key("key-1", "RS256", Key.generate("x").private)),
    "algorithm not of the key's type": lambda i: i.token(Key("key-1", "ES256", Key.generate("x", "ES256").private)),
    "system: user": lambda i: i.token(sub="system:admin"),
    "groups claim of the wrong type": lambda i: i.token(groups={"devs": True}),
    "empty username": lambda i: i.token(sub=""),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_bad_tokens_are_refused(issuer, case):
    async def body():
        verifier = make_verifier(issuer)
        await verify(verifier, issuer.token())          # the keys are in hand: no fetch is involved
        assert await refused(verifier, REFUSED[case](issuer)) == "invalid_token"

    run(body)


def test_system_groups_are_refused_unless_prefixed(issuer):
    async def body():
        token = issuer.token(groups=["devs", "system:masters"])
        assert await refused(make_verifier(issuer, groups_prefix=""), token) == "invalid_token"
        assert await refused(make_verifier(issuer, groups_prefix="system:"), issuer.token()) == "invalid_token"
        assert (await verify(make_verifier(issuer), token)).groups == ("oidc:devs", "oidc:system:masters")

    run(body)


def test_a_token_that_is_not_a_jwt_is_simply_unknown(issuer):
    async def body():
        verifier = make_verifier(issuer)
        assert await refused(verifier, "not-a-jwt") == "unknown_token"
        assert issuer.requests == 0

    run(body)


# -- keys: fetching, rotation, failures ---------------------------------------------------------------

def test_an_unknown_kid_prompts_one_refresh_then_refusals_without_fetching(issuer):
    async def body():
        verifier = make_verifier(issuer, interval=60)
        await verify(verifier, issuer.token())
        assert issuer.jwks_fetches == 1
        rogue = Key.generate("rogue")
        for _ in range(3):
            assert await refused(verifier, issuer.token(rogue)) == "invalid_token"
        assert issuer.jwks_fetches == 1          # the first fetch was moments ago: rate-limited

        verifier = make_verifier(issuer, interval=0.3)
        await verify(verifier, issuer.token())
        fetches = issuer.jwks_fetches
        await asyncio.sleep(0.3)                 # let the rate limit lapse (what is tested here)
        assert await refused(verifier, issuer.token(rogue)) == "invalid_token"
        assert issuer.jwks_fetches == fetches + 1

    run(body)


def test_rotation_new_keys_are_fetched_and_removed_keys_stop_verifying(issuer):
    async def body():
        verifier = make_verifier(issuer, interval=0.5)
        old_key = issuer.keys[0]
        await verify(verifier, issuer.token(old_key))
        new_key = Key.generate("key-2")
        issuer.keys = [old_key, new_key]                       # the issuer publishes its next key
        assert (await eventually_verifies(verifier, issuer.token(new_key))).user == "carol"
        assert (await verify(verifier, issuer.token(old_key, sub="dave"))).user == "dave"   # both serve
        issuer.keys = [new_key]                                # ... and later retires the old one
        rogue = Key.generate("rogue")                          # a refresh happens (any unknown kid)
        deadline = time.monotonic() + 15
        while [key.kid for key in verifier.keys] != ["key-2"]:
            assert time.monotonic() < deadline, "the keys were not refreshed"
            await refused(verifier, issuer.token(rogue))
            await asyncio.sleep(0.05)
        assert await refused(verifier, issuer.token(old_key, sub="erin")) in ("invalid_token", "oidc_unavailable")
        assert (await verify(verifier, issuer.token(new_key, sub="frank"))).user == "frank"

    run(body)


def test_old_keys_are_refreshed_in_the_background(issuer, monkeypatch):
    monkeypatch.setattr(oidc, "KEYS_MAX_AGE", 0.0)

    async def body():
        verifier = make_verifier(issuer, interval=0.2)
        old_key = issuer.keys[0]
        await verify(verifier, issuer.token(old_key))
        issuer.keys = [Key.generate("key-2")]
        deadline = time.monotonic() + 15
        while [key.kid for key in verifier.keys] != ["key-2"]:
            assert time.monotonic() < deadline, "the keys were not refreshed in the background"
            verifier.verify(issuer.token(old_key).encode())    # never waits: the cached key serves
            await asyncio.sleep(0.05)
        assert await refused(verifier, issuer.token(old_key, sub="gina")) in ("invalid_token", "oidc_unavailable")

    run(body)


def test_a_failed_refresh_keeps_the_cached_keys(issuer):
    async def body():
        verifier = make_verifier(issuer, interval=0.2)
        await verify(verifier, issuer.token())
        issuer.failing = True
        requests = issuer.requests
        rogue = Key.generate("rogue")
        while issuer.requests == requests:           # until a refresh was tried (and failed)
            await refused(verifier, issuer.token(rogue))
            await asyncio.sleep(0.05)
        assert (await verify(verifier, issuer.token(sub="hank"))).user == "hank"
        assert [key.kid for key in verifier.keys] == ["key-1"]

    run(body)


def test_without_any_keys_every_token_is_refused(issuer):
    issuer.failing = True

    async def body():
        verifier = make_verifier(issuer)
        assert await refused(verifier, issuer.token()) == "oidc_unavailable"
        assert await refused(verifier, issuer.token(sub="ivan")) == "oidc_unavailable"
        assert issuer.requests == 1                  # rate-limited: one attempt

    run(body)


def test_waiting_for_keys_is_bounded_and_never_blocks_the_loop(issuer):
    issuer.hold.clear()                               # the issuer does not answer for now

    async def body():
        verifier = make_verifier(issuer)
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticking = asyncio.ensure_future(ticker())
        token = issuer.token().encode()
        started = time.monotonic()
        with pytest.raises(KeysPending) as pending:
            verifier.verify(token)
        await pending.value.wait(bound=0.5)
        assert time.monotonic() - started < 5
        assert ticks > 0                             # the loop ran while the fetch hung
        with pytest.raises(KeysPending):             # still in flight: the pipeline answers 401
            verifier.verify(token)
        issuer.hold.set()
        await pending.value.wait(bound=15)
        assert verifier.verify(token).user == "carol"
        ticking.cancel()

    run(body)


# -- JWKS and discovery -------------------------------------------------------------------------------

def test_only_asymmetric_public_signature_keys_are_taken_from_a_jwks():
    good_ec, good_rsa = Key.generate("ec", "ES256"), Key.generate("rsa")
    private = {**good_rsa.jwk(), "kid": "private", "d": "AQAB"}
    weak = Key("weak", "RS256", rsa.generate_private_key(public_exponent=65537, key_size=1024))
    keys = parse_jwks({"keys": [
        {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac", "alg": "HS256"},
        private,
        weak.jwk(),
        {**good_rsa.jwk(), "kid": "says-hs", "alg": "HS256"},
        {**good_ec.jwk(), "kid": "says-rs", "alg": "RS256"},
        {**good_ec.jwk(), "kid": "enc", "use": "enc"},
        {"kid": "no-kty"},
        "not an object",
        good_ec.jwk(),
        {**good_rsa.jwk(), "alg": "PS384"},
    ]})
    assert [(key.kid, sorted(key.algorithms)) for key in keys] == [("ec", ["ES256"]), ("rsa", ["PS384"])]
    with pytest.raises(FetchError):
        parse_jwks({"keys": "none"})


def test_discovery_must_name_the_issuer_and_an_https_jwks(issuer):
    assert [key.kid for key in fetch_keys(issuer.url, issuer.ssl_context())] == ["key-1"]
    issuer.discovery = {"issuer": "https://elsewhere.example"}
    with pytest.raises(FetchError, match="names issuer"):
        fetch_keys(issuer.url, issuer.ssl_context())
    issuer.discovery = {"jwks_uri": issuer.url.replace("https", "http") + "/keys"}
    with pytest.raises(FetchError, match="https jwks_uri"):
        fetch_keys(issuer.url, issuer.ssl_context())
    issuer.discovery = {}
    with pytest.raises(FetchError, match="CERTIFICATE_VERIFY_FAILED"):   # the issuer's CA is not the system's
        fetch_keys(issuer.url, ssl.create_default_context())
    issuer.failing = True
    with pytest.raises(FetchError, match="HTTP 500"):
        fetch_keys(issuer.url, issuer.ssl_context())


# -- claim mapping (kube-apiserver --oidc-* semantics) ------------------------------------------------

ISSUER = "https://idp.example"


@pytest.mark.parametrize("flags, claims, user", [
    (("sub", "", ""), {"sub": "u1"}, "https://idp.example#u1"),        # non-email claims: issuer URL#
    (("email", "", ""), {"email": "a@x.io"}, "a@x.io"),                # email: no prefix by default
    (("sub", "-", ""), {"sub": "u1"}, "u1"),                           # "-": no prefix at all
    (("name", "oidc:", ""), {"name": "Ann"}, "oidc:Ann"),
    (("email", "corp:", ""), {"email": "a@x.io", "email_verified": True}, "corp:a@x.io"),
])
def test_username_mapping(flags, claims, user):
    claim, prefix, _ = flags
    assert ClaimMapping.from_flags(ISSUER, claim, prefix, "", "").user(claims) == user


def test_an_unverified_email_is_refused_as_the_username():
    mapping = ClaimMapping.from_flags(ISSUER, "email", "", "", "")
    with pytest.raises(AuthenticationError):
        mapping.user({"email": "a@x.io", "email_verified": False})
    with pytest.raises(AuthenticationError):
        mapping.user({"sub": "u1"})                                    # the claim is missing


def test_groups_mapping():
    mapping = ClaimMapping.from_flags(ISSUER, "sub", "-", "roles", "idp:")
    assert mapping.groups({"roles": ["a", "b", "a", ""]}) == ("idp:a", "idp:b")
    assert mapping.groups({"roles": "a"}) == ("idp:a",)                # a single string is one group
    assert mapping.groups({}) == ()                                    # the claim may be absent
    assert ClaimMapping.from_flags(ISSUER, "sub", "-", "", "").groups({"groups": ["a"]}) == ()
    with pytest.raises(AuthenticationError):
        mapping.groups({"roles": [1, 2]})


# -- with the snapshot's authenticator ----------------------------------------------------------------

def test_oidc_identities_are_revoked_like_any_other(issuer):
    async def body():
        verifier = make_verifier(issuer)
        token = f"Bearer {issuer.token()}".encode()
        await verify(verifier, issuer.token())         # fetch the keys
        fresh = Authenticator({"tokens": [], "revocations": {}})
        assert fresh.authenticate(None, token, verifier).user == "carol"
        for revocations in ({"users": ["carol"]}, {"groups": ["oidc:devs"]}):
            authenticator = Authenticator({"tokens": [], "revocations": revocations})
            with pytest.raises(AuthenticationError) as caught:
                authenticator.authenticate(None, token, verifier)
            assert caught.value.reason == "revoked"
        # without a verifier (no --oidc-issuer-url) a JWT is just an unknown token
        with pytest.raises(AuthenticationError) as caught:
            fresh.authenticate(None, token)
        assert caught.value.reason == "unknown_token"

    run(body)


# -- configuration ------------------------------------------------------------------------------------

def _config(**oidc_options) -> GatewayConfig:
    return GatewayConfig(tls_cert="c", tls_key="k", snapshot="s", snapshot_public_key="p", secrets_dir="d",
                         audit_spool="/tmp/a", **oidc_options)


@pytest.mark.parametrize("options, problem", [
    ({"oidc_issuer_url": "http://idp.example", "oidc_client_id": "x"}, "--oidc-issuer-url must be an https URL"),
    ({"oidc_issuer_url": "https://idp.example?a=b", "oidc_client_id": "x"}, "--oidc-issuer-url must be"),
    ({"oidc_issuer_url": "https://idp.example"}, "--oidc-client-id is required"),
    ({"oidc_client_id": "x"}, "--oidc-client-id needs --oidc-issuer-url"),
    ({"oidc_issuer_url": "https://idp.example", "oidc_client_id": "x", "oidc_username_claim": ""},
     "--oidc-username-claim must not be empty"),
    ({"oidc_issuer_url": "https://idp.example", "oidc_client_id": "x", "oidc_refresh_interval": 0},
     "--oidc-refresh-interval must be positive"),
])
def test_oidc_options_are_validated(options, problem):
    with pytest.raises(ConfigError, match=problem):
        _config(**options).validate(check_files=False)


def test_an_unreadable_ca_file_is_a_configuration_error(tmp_path):
    (tmp_path / "ca.pem").write_text("not a certificate")
    with pytest.raises(ConfigError, match="--oidc-ca-file"):
        OIDCVerifier.from_config(_config(oidc_issuer_url=ISSUER, oidc_client_id="k8s",
                                         oidc_ca_file=str(tmp_path / "ca.pem")))


def test_the_verifier_follows_the_options():
    assert OIDCVerifier.from_config(_config()) is None
    verifier = OIDCVerifier.from_config(_config(oidc_issuer_url=ISSUER, oidc_client_id="k8s",
                                                oidc_groups_claim="groups", oidc_groups_prefix="g:"))
    assert (verifier.issuer_url, verifier.client_id) == (ISSUER, "k8s")
    assert verifier.mapping == ClaimMapping("sub", ISSUER + "#", "groups", "g:")
