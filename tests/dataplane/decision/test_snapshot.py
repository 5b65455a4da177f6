import base64
import json

import pytest

from dataplane.signing import generate_signing_key
from dataplane.snapshot import (Cluster, Credential, SnapshotError, canonical_json, load_snapshot_file,
                                sign_snapshot, verify_snapshot)

from .helpers import cluster, rule, snapshot_data


def _envelope(signed: bytes) -> dict:
    return json.loads(signed)


def _resign(envelope: dict, payload: bytes, key) -> bytes:
    envelope = dict(envelope, payload=base64.b64encode(payload).decode(),
                    signature=base64.b64encode(key.sign(payload)).decode())
    return json.dumps(envelope).encode()


def test_round_trip_gives_typed_clusters_and_compiled_helpers(signing_key):
    snapshot = verify_snapshot(sign_snapshot(snapshot_data(), signing_key), signing_key.public_key())

    assert snapshot.revision == 7
    assert snapshot.issued_at == "2026-11-23T08:00:00Z"
    assert snapshot.data == snapshot_data()
    sandbox = snapshot.clusters["sandbox"]
    assert isinstance(sandbox, Cluster)
    assert sandbox.labels == {"env": "dev", "region": "eu"}
    assert sandbox.credential == Credential(kind="token", ref="file:sandbox.token")
    assert sandbox.identity_mode == "impersonate" and sandbox.kubectl_enabled and not sandbox.tunnel
    assert snapshot.policy is not None and snapshot.authenticator is not None


def test_envelope_payload_is_the_canonical_encoding(signing_key):
    envelope = _envelope(sign_snapshot(snapshot_data(), signing_key))
    assert set(envelope) == {"format", "key_id", "payload", "signature"}
    assert envelope["format"] == "accesspoint.signed-snapshot/v1"
    assert base64.b64decode(envelope["payload"]) == canonical_json(snapshot_data())


def test_canonical_json_is_sorted_compact_utf8():
    assert canonical_json({"b": 1, "a": ["é", {"d": None, "c": True}]}) == '{"a":["é",{"c":true,"d":null}],"b":1}'.encode()


@pytest.mark.parametrize("value", [1.5, float("nan"), {"x": [float("inf")]}])
def test_canonical_json_refuses_floats(value):
    with pytest.raises(SnapshotError, match="floating-point"):
        canonical_json(value)


def test_load_snapshot_file(tmp_path, signing_key):
    (tmp_path / "snapshot.json").write_bytes(sign_snapshot(snapshot_data(), signing_key))
    assert load_snapshot_file(tmp_path / "snapshot.json", signing_key.public_key()).revision == 7
    with pytest.raises(SnapshotError, match="cannot read snapshot file"):
        load_snapshot_file(tmp_path / "missing.json", signing_key.public_key())


def test_tampered_payload_is_refused(signing_key):
    envelope = _envelope(sign_snapshot(snapshot_data(), signing_key))
    payload = base64.b64decode(envelope["payload"]).replace(b'"viewer"', b'"admin!"')
    envelope["payload"] = base64.b64encode(payload).decode()
    with pytest.raises(SnapshotError, match="signature does not verify"):
        verify_snapshot(json.dumps(envelope).encode(), signing_key.public_key())


def test_wrong_key_with_forged_key_id_is_refused(signing_key):
    other = generate_signing_key()
    envelope = _envelope(sign_snapshot(snapshot_data(), other))
    envelope["key_id"] = _envelope(sign_snapshot(snapshot_data(), signing_key))["key_id"]
    with pytest.raises(SnapshotError, match="signature does not verify"):
        verify_snapshot(json.dumps(envelope).encode(), signing_key.public_key())


def test_unknown_key_id_is_refused(signing_key):
    signed = sign_snapshot(snapshot_data(), generate_signing_key())
    with pytest.raises(SnapshotError, match="is not the trusted key"):
        verify_snapshot(signed, signing_key.public_key())


@pytest.mark.parametrize("mutate, message", [
    (lambda e: b"not json", "envelope is not JSON"),
    (lambda e: b"[]", "exactly format, key_id, payload, signature"),
    (lambda e: json.dumps({k: v for k, v in e.items() if k != "signature"}).encode(), "exactly format"),
    (lambda e: json.dumps(dict(e, extra=1)).encode(), "exactly format"),
    (lambda e: json.dumps(dict(e, format="v0")).encode(), "envelope format must be"),
    (lambda e: json.dumps(dict(e, payload="***")).encode(), "payload is not valid base64"),
    (lambda e: json.dumps(dict(e, signature=5)).encode(), "signature must be a base64 string"),
])
def test_malformed_envelopes_are_refused(signing_key, mutate, message):
    envelope = _envelope(sign_snapshot(snapshot_data(), signing_key))
    with pytest.raises(SnapshotError, match=message):
        verify_snapshot(mutate(envelope), signing_key.public_key())


def test_signed_payload_that_is_not_json_is_refused(signing_key):
    envelope = _envelope(sign_snapshot(snapshot_data(), signing_key))
    with pytest.raises(SnapshotError, match="payload is not UTF-8 JSON"):
        verify_snapshot(_resign(envelope, b"\xff{", signing_key), signing_key.public_key())


def test_signed_payload_with_duplicate_keys_is_refused(signing_key):
    envelope = _envelope(sign_snapshot(snapshot_data(), signing_key))
    payload = b'{"revision":1,' + base64.b64decode(envelope["payload"])[1:]
    with pytest.raises(SnapshotError, match="repeats a key"):
        verify_snapshot(_resign(envelope, payload, signing_key), signing_key.public_key())


def test_signed_but_invalid_payload_is_refused_on_verify(signing_key):
    """A schema check on verify too: the gateway trusts the signer's key, not its validation."""
    envelope = _envelope(sign_snapshot(snapshot_data(), signing_key))
    payload = canonical_json(dict(snapshot_data(), revision="7"))
    with pytest.raises(SnapshotError, match="revision must be an integer"):
        verify_snapshot(_resign(envelope, payload, signing_key), signing_key.public_key())


def _with_cluster(**fields):
    return snapshot_data(clusters=[dict(cluster("sandbox", env="dev"), **fields)])


SCHEMA_VIOLATIONS = [
    (snapshot_data(surprise=1), "unknown top-level field.*surprise"),
    ({k: v for k, v in snapshot_data().items() if k != "clusters"}, "missing top-level field 'clusters'"),
    (snapshot_data(format="accesspoint.snapshot/v0"), "format must be"),
    (snapshot_data(revision=True), "revision must be an integer"),
    (snapshot_data(revision=-1), "revision must not be negative"),
    (snapshot_data(issued_at="yesterday"), "issued_at must be"),
    (snapshot_data(clusters={}), "clusters must be a list"),
    (snapshot_data(clusters=[cluster("a"), cluster("a")]), r"clusters\[1\].name: duplicate name 'a'"),
    (snapshot_data(clusters=[cluster("Bad/Name")]), r"clusters\[0\].name"),
    (_with_cluster(endpoint="http://10.0.0.1:6443"), r"clusters\[0\].endpoint must be an https"),
    (_with_cluster(endpoint="https://"), r"clusters\[0\].endpoint must be an https"),
    (_with_cluster(endpoint="https://h:99999"), r"clusters\[0\].endpoint is not a valid URL"),
    (_with_cluster(endpoint="https://u:p@h"), "must not contain user information"),
    (_with_cluster(endpoint="https://h/api?x=1"), "must not have a path"),
    (_with_cluster(credential={"kind": "password", "ref": "file:x"}), r"credential.kind must be one of"),
    (_with_cluster(credential={"kind": ["token"], "ref": "file:x"}), r"credential.kind must be one of"),
    (_with_cluster(credential={"kind": "token"}), r"credential.ref is missing"),
    (_with_cluster(credential={"kind": "token", "ref": "file:../etc/passwd"}), "relative name inside"),
    (_with_cluster(credential={"kind": "token", "ref": "file:/etc/passwd"}), "relative name inside"),
    (_with_cluster(credential={"kind": "token", "ref": "vault:x"}), "file:NAME or env:VAR"),
    (_with_cluster(credential={"kind": "client_cert", "cert_ref": "file:c"}), "key_ref is missing"),
    (_with_cluster(identity_mode="root"), "identity_mode must be one of"),
    (_with_cluster(tunnel="yes"), r"clusters\[0\].tunnel must be a boolean"),
    (_with_cluster(labels={"env": 1}), r"clusters\[0\].labels.env must be a string"),
    (_with_cluster(extra=1), r"clusters\[0\]: unknown field\(s\) extra"),
    (snapshot_data(roles=[{"name": "r", "rules": []}, {"name": "r", "rules": []}]), "duplicate name 'r'"),
    (snapshot_data(roles=[{"name": "r", "rules": [rule([], ["*"], ["*"])]}]), "verbs must not be empty"),
    (snapshot_data(roles=[{"name": "r", "rules": [rule(["get"], [], ["pods"])]}]), "resources and api_groups"),
    (snapshot_data(roles=[{"name": "r", "rules": [rule(["get"])]}]), "must name resources or non_resource_urls"),
    (snapshot_data(roles=[{"name": "r", "rules": [rule(["get"], non_resource_urls=["/a*b"])]}]), "must be a path"),
    (snapshot_data(roles=[{"name": "r", "rules": [dict(rule(["get"], [""], ["pods"]), when="x")]}]), "unknown field"),
    (snapshot_data(bindings=[{"name": "b", "role": "ghost", "subjects": [], "clusters": {}}]),
     r"bindings\[0\].role names a missing role 'ghost'"),
    (snapshot_data(bindings=[{"name": "b", "role": "viewer", "subjects": [{"kind": "robot", "name": "x"}],
                              "clusters": {}}]), r"subjects\[0\].kind must be one of"),
    (snapshot_data(bindings=[{"name": "b", "role": "viewer", "subjects": [], "clusters": {"names": "*"}}]),
     r"clusters.names must be a list"),
    (snapshot_data(bindings=2 * [{"name": "b", "role": "viewer", "subjects": [], "clusters": {}}]),
     "duplicate name 'b'"),
    (snapshot_data(tokens=[{"id": "t", "sha256": "abc", "user": "u"}]), r"tokens\[0\].sha256 must be 64 hex"),
    (snapshot_data(tokens=[{"id": "t", "sha256": "a" * 64, "user": "u", "component": 3}]), "component must be"),
    (snapshot_data(tokens=2 * [{"id": "t", "sha256": "a" * 64, "user": "u"}]), "duplicate token id"),
    (snapshot_data(revocations={"people": []}), r"revocations: unknown field\(s\) people"),
    (snapshot_data(revocations={"cert_serials": ["zz"]}), "cert_serials.0. must be hex"),
    (snapshot_data(settings={"x": 0.5}), "floating-point"),
]


@pytest.mark.parametrize("data, message", SCHEMA_VIOLATIONS)
def test_schema_violations_name_the_field(signing_key, data, message):
    with pytest.raises(SnapshotError, match=message):
        sign_snapshot(data, signing_key)
    # And the same payload, signed anyway, is refused by the gateway.
    envelope = _envelope(sign_snapshot(snapshot_data(), signing_key))
    with pytest.raises(SnapshotError, match=message):
        verify_snapshot(_resign(envelope, json.dumps(data).encode() if "floating" in message
                                else canonical_json(data), signing_key), signing_key.public_key())


def test_minimal_snapshot_defaults_optional_sections(signing_key):
    data = {"format": "accesspoint.snapshot/v1", "revision": 1, "issued_at": "2026-01-01T00:00:00.5Z",
            "clusters": []}
    snapshot = verify_snapshot(sign_snapshot(data, signing_key), signing_key.public_key())
    assert snapshot.clusters == {}


def test_errors_never_echo_secret_looking_values(signing_key):
    data = _with_cluster(endpoint="https://admin:hunter2@h")
    with pytest.raises(SnapshotError) as caught:
        sign_snapshot(data, signing_key)
    assert "hunter2" not in str(caught.value)


from hypothesis import given, settings, strategies as st  # noqa: E402

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20)


@settings(max_examples=200, deadline=None)
@given(payload=_json)
def test_any_signed_payload_verifies_or_raises_snapshot_error(signing_key, payload):
    """Whatever a (compromised or buggy) signer sends, verify gives a Snapshot or a SnapshotError."""
    envelope = _envelope(sign_snapshot(snapshot_data(), signing_key))
    signed = _resign(envelope, json.dumps(payload).encode(), signing_key)
    with pytest.raises(SnapshotError):
        verify_snapshot(signed, signing_key.public_key())


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=200))
def test_arbitrary_envelope_bytes_raise_only_snapshot_error(signing_key, data):
    with pytest.raises(SnapshotError):
        verify_snapshot(data, signing_key.public_key())


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(obj, list):
        for index, value in enumerate(obj):
            yield from _paths(value, prefix + (index,))


_ALL_PATHS = [p for p in _paths(snapshot_data()) if p]


@settings(max_examples=400, deadline=None)
@given(path=st.sampled_from(_ALL_PATHS), replacement=_json)
def test_mutated_snapshots_validate_or_raise_snapshot_error(signing_key, path, replacement):
    """Replacing any one value by arbitrary JSON never crashes validation or compilation."""
    data = snapshot_data()
    target = data
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = replacement
    try:
        signed = sign_snapshot(data, signing_key)
    except SnapshotError:
        return
    verify_snapshot(signed, signing_key.public_key())
