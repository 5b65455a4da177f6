import logging

import pytest

from dataplane.snapshot import (Credential, ResolvedCredential, SnapshotError, SnapshotHolder, resolve_credential,
                                sign_snapshot, verify_snapshot)

from .helpers import snapshot_data


@pytest.fixture
def make(signing_key):
    def make(revision: int):
        return verify_snapshot(sign_snapshot(snapshot_data(revision=revision), signing_key), signing_key.public_key())
    return make


def test_holder_applies_newer_and_notifies_subscribers(make):
    holder = SnapshotHolder()
    seen = []
    holder.subscribe(lambda snapshot: seen.append(snapshot.revision))

    assert holder.current is None
    assert holder.apply(make(3)) and holder.current.revision == 3
    assert holder.apply(make(4)) and holder.current.revision == 4
    assert seen == [3, 4]


def test_holder_refuses_an_older_revision(make, caplog):
    holder = SnapshotHolder()
    newer = make(5)
    holder.apply(newer)
    with caplog.at_level(logging.WARNING, logger="dataplane.snapshot"):
        assert holder.apply(make(4)) is False
    assert holder.current is newer
    assert "refusing snapshot revision 4" in caplog.text


def test_holder_treats_the_same_revision_as_a_no_op(make):
    holder = SnapshotHolder()
    first = make(5)
    holder.apply(first)
    seen = []
    holder.subscribe(seen.append)
    assert holder.apply(make(5)) is True
    assert holder.current is first and seen == []


def test_a_failing_subscriber_does_not_stop_the_swap_or_the_others(make, caplog):
    holder = SnapshotHolder()
    seen = []
    holder.subscribe(lambda snapshot: 1 / 0)
    holder.subscribe(lambda snapshot: seen.append(snapshot.revision))
    with caplog.at_level(logging.ERROR, logger="dataplane.snapshot"):
        assert holder.apply(make(1))
    assert holder.current.revision == 1 and seen == [1]


def test_resolve_token_from_file_and_env(tmp_path, monkeypatch):
    (tmp_path / "sandbox.token").write_text("s3cr3t-token\n")
    assert resolve_credential(Credential("token", ref="file:sandbox.token"), tmp_path) == \
        ResolvedCredential(token="s3cr3t-token", cert_file=None, key_file=None)
    monkeypatch.setenv("SANDBOX_TOKEN", "from-env")
    assert resolve_credential(Credential("token", ref="env:SANDBOX_TOKEN"), tmp_path).token == "from-env"


def test_resolve_client_cert_files(tmp_path):
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "c.crt").write_text("cert")
    (tmp_path / "certs" / "c.key").write_text("key")
    resolved = resolve_credential(Credential("client_cert", cert_ref="file:certs/c.crt",
                                             key_ref="file:certs/c.key"), tmp_path)
    assert resolved == ResolvedCredential(None, tmp_path / "certs" / "c.crt", tmp_path / "certs" / "c.key")


@pytest.mark.parametrize("credential, message", [
    (Credential("token", ref="file:missing.token"), "no such file"),
    (Credential("token", ref="env:AP_TEST_UNSET_VARIABLE"), "environment variable is not set"),
    (Credential("token", ref="file:../outside.token"), "relative name inside"),
    (Credential("token", ref="file:/etc/hostname"), "relative name inside"),
    (Credential("token", ref="file:empty.token"), "the token is empty"),
    (Credential("client_cert", cert_ref="env:X", key_ref="file:k"), "must be a file:NAME"),
    (Credential("ssh", ref="file:x"), "not supported"),
])
def test_resolve_errors_name_the_reference_only(tmp_path, credential, message):
    (tmp_path / "empty.token").write_text("\n")
    (tmp_path.parent / "outside.token").write_text("do-not-leak")
    with pytest.raises(SnapshotError, match=message) as caught:
        resolve_credential(credential, tmp_path)
    assert "do-not-leak" not in str(caught.value)
