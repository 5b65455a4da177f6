import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dataplane.identity import AuthenticationError, Authenticator, Identity

from .helpers import snapshot_data


def authenticator(**revocations) -> Authenticator:
    return Authenticator(snapshot_data(revocations=revocations))


def test_certificate_gives_user_groups_and_serial(ca):
    issued = ca.issue_client("alice", ["devs", "oncall"])
    identity = authenticator().authenticate(issued.cert, b"Bearer bob-token")  # the cert wins
    assert identity == Identity(user="alice", groups=("devs", "oncall"), method="cert",
                                credential_id=issued.serial_hex)


def test_certificate_identity_is_cached_per_certificate(ca):
    auth = authenticator()
    cert = ca.issue_client("alice", ["devs"]).cert
    assert auth.authenticate(cert, None) is auth.authenticate(cert, None)


def _cert_with_subject(ca, attributes) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    return (x509.CertificateBuilder().subject_name(x509.Name(attributes)).issuer_name(ca.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(hours=1))
            .sign(ca.key, hashes.SHA256()))


@pytest.mark.parametrize("attributes", [
    [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "devs")],
    [x509.NameAttribute(NameOID.COMMON_NAME, " ")],
    [x509.NameAttribute(NameOID.COMMON_NAME, "a"), x509.NameAttribute(NameOID.COMMON_NAME, "b")],
], ids=["no-cn", "blank-cn", "two-cns"])
def test_certificate_without_one_clear_cn_is_refused(ca, attributes):
    with pytest.raises(AuthenticationError) as caught:
        authenticator().authenticate(_cert_with_subject(ca, attributes), None)
    assert caught.value.reason == "bad_certificate"


def test_bearer_token_is_found_by_hash():
    identity = authenticator().authenticate(None, b"Bearer bob-token")
    assert identity == Identity(user="bob", groups=("devs",), method="token", credential_id="t1")


def test_bearer_scheme_is_case_insensitive():
    assert authenticator().authenticate(None, b"bearer bob-token").user == "bob"


def test_service_token_gives_a_service_identity():
    identity = authenticator().authenticate(None, b"Bearer cd-token")
    assert identity.component == "cd" and identity.user == "argo" and identity.credential_id == "t2"


@pytest.mark.parametrize("peer, header, reason", [
    (None, None, "no_credentials"),
    (None, b"Bearer not-a-known-token", "unknown_token"),
    (None, b"Basic Ym9iOnB3", "invalid_token"),
    (None, b"Bearer", "invalid_token"),
    (None, b"Bearer ", "invalid_token"),
    (None, b"bob-token", "invalid_token"),
    (None, b"Bearer bob token", "invalid_token"),
    (None, b"Bearer bob-token\x00", "invalid_token"),
    (None, "Bearer b\u00f6b".encode(), "invalid_token"),
])
def test_authentication_failures(peer, header, reason):
    with pytest.raises(AuthenticationError) as caught:
        authenticator().authenticate(peer, header)
    assert caught.value.reason == reason


def test_failure_messages_never_echo_the_token():
    for header in (b"Bearer secret-value-123", b"Basic secret-value-123", b"Bearer secret value-123"):
        with pytest.raises(AuthenticationError) as caught:
            authenticator().authenticate(None, header)
        assert "secret" not in str(caught.value) and "secret" not in repr(caught.value.args)


@pytest.mark.parametrize("revocations", [
    {"users": ["alice"]},
    {"groups": ["oncall"]},  # any one of the identity's groups is enough
    "serial",
])
def test_revoked_certificates(ca, revocations):
    issued = ca.issue_client("alice", ["devs", "oncall"])
    if revocations == "serial":
        revocations = {"cert_serials": [issued.serial_hex.upper()]}  # serials compare case-insensitively
    with pytest.raises(AuthenticationError) as caught:
        authenticator(**revocations).authenticate(issued.cert, None)
    assert caught.value.reason == "revoked"


@pytest.mark.parametrize("revocations", [
    {"token_ids": ["t1"]}, {"users": ["bob"]}, {"groups": ["devs"]},
])
def test_revoked_tokens(revocations):
    with pytest.raises(AuthenticationError) as caught:
        authenticator(**revocations).authenticate(None, b"Bearer bob-token")
    assert caught.value.reason == "revoked"


def test_revocation_of_others_does_not_touch_this_identity(ca):
    auth = authenticator(users=["mallory"], groups=["contractors"], token_ids=["t2"], cert_serials=["abc"])
    assert auth.authenticate(None, b"Bearer bob-token").user == "bob"
    assert auth.authenticate(ca.issue_client("alice", ["devs"]).cert, None).user == "alice"


def test_reason_must_be_a_known_word():
    with pytest.raises(ValueError):
        AuthenticationError("because")
