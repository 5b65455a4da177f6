"""Identity assertions, sans-IO: what the agent accepts and what it refuses."""
from __future__ import annotations

import pytest

from dataplane.signing import generate_signing_key
from dataplane.tunnel.assertion import AssertionRefused, AssertionSigner, AssertionVerifier, split_impersonation

NOW = 1_800_000_000.0
KEY = generate_signing_key()


def signer(clock=lambda: NOW, key=KEY, ttl=30) -> AssertionSigner:
    return AssertionSigner(key, ttl=ttl, clock=clock)


def verifier(clock=lambda: NOW + 1) -> AssertionVerifier:
    return AssertionVerifier(KEY.public_key(), "prod", clock=clock)


def test_round_trip_carries_the_identity_and_becomes_impersonation_headers():
    token = signer().sign("prod", "GET", "/api/v1/pods?watch=true", "alice", ("devs", "ops"), "u-1",
                          (("accesspoint.io/request-id", ("r1",)), ("scopes/x", ("a", "b"))))
    got = verifier().verify(token, "GET", "/api/v1/pods?watch=true")
    assert (got.user, got.groups, got.uid) == ("alice", ("devs", "ops"), "u-1")
    assert got.expires_at == int(NOW) + 30
    assert got.impersonation_headers() == [
        (b"impersonate-user", b"alice"), (b"impersonate-group", b"devs"), (b"impersonate-group", b"ops"),
        (b"impersonate-uid", b"u-1"), (b"impersonate-extra-accesspoint.io%2Frequest-id", b"r1"),
        (b"impersonate-extra-scopes%2Fx", b"a"), (b"impersonate-extra-scopes%2Fx", b"b")]


def test_split_impersonation_inverts_the_pipelines_headers():
    headers = [(b"accept", b"*/*"), (b"impersonate-user", b"bob"), (b"impersonate-group", b"g"),
               (b"impersonate-extra-accesspoint.io%2Fgrant-id", b"g1")]
    (user, groups, uid, extra), rest = split_impersonation(headers)
    assert (user, groups, uid, extra) == ("bob", ("g",), "", (("accesspoint.io/grant-id", ("g1",)),))
    assert rest == [(b"accept", b"*/*")]


@pytest.mark.parametrize("token,method,target,clock,reason", [
    (None, "GET", "/api", None, "carries no identity assertion"),
    (b"", "GET", "/api", None, "carries no identity assertion"),
    (b"no-dot", "GET", "/api", None, "malformed"),
    ("tampered", "GET", "/api", None, "not signed by the gateway fleet"),
    ("foreign", "GET", "/api", None, "not signed by the gateway fleet"),
    ("other-cluster", "GET", "/api", None, 'for cluster "dev", not "prod"'),
    ("valid", "DELETE", "/api", None, "for another request"),
    ("valid", "GET", "/api?watch=true", None, "for another request"),
    ("valid", "GET", "/api", lambda: NOW + 30, "has expired"),
    ("long", "GET", "/api", None, "valid for too long"),
    ("control", "GET", "/api", None, "control character"),
])
def test_refusals(token, method, target, clock, reason):
    tokens = {
        "valid": signer().sign("prod", "GET", "/api", "alice"),
        "foreign": signer(key=generate_signing_key()).sign("prod", "GET", "/api", "alice"),
        "other-cluster": signer().sign("dev", "GET", "/api", "alice"),
        "long": signer(ttl=3600).sign("prod", "GET", "/api", "alice"),
        "control": signer().sign("prod", "GET", "/api", "alice\r\nimpersonate-group: system:masters"),
    }
    valid = tokens["valid"]
    tokens["tampered"] = valid.replace(b".", b"x.", 1)
    token = tokens.get(token, token) if isinstance(token, str) else token
    with pytest.raises(AssertionRefused, match=reason):
        assertion = verifier(clock or (lambda: NOW + 1)).verify(token, method, target)
        assertion.impersonation_headers()
