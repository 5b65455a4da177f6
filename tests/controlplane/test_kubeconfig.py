"""Kubeconfig issuance: the control plane as client CA. Certificates verify against its CA, carry
CN = user and O = groups, are recorded by serial (and so revocable), and live no longer than the cap."""
from __future__ import annotations

import base64
import datetime
import os
import stat
from pathlib import Path

import grpc
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from google.protobuf.duration_pb2 import Duration

from controlplane.api.v1 import (clusters_pb2, clusters_pb2_grpc, kubeconfigs_pb2, kubeconfigs_pb2_grpc,
                                 revocations_pb2, revocations_pb2_grpc)
from controlplane.config import ControlPlaneConfig
from controlplane.snapshots import SNAPSHOT_KEY
from dataplane.identity import AuthenticationError
from dataplane.snapshot import verify_snapshot

from .planes import ADMIN, GATEWAY_URL, READER
from .test_api import a_cluster


def _ttl(**delta: float) -> Duration:
    duration = Duration()
    duration.FromTimedelta(datetime.timedelta(**delta))
    return duration


def _issue(channel, metadata=ADMIN, **fields) -> kubeconfigs_pb2.IssueKubeconfigResponse:
    request = kubeconfigs_pb2.IssueKubeconfigRequest(**{"user": "alice", "cluster": "sandbox", **fields})
    return kubeconfigs_pb2_grpc.KubeconfigServiceStub(channel).IssueKubeconfig(request, metadata=metadata)


def _refused(channel, metadata=ADMIN, **fields) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        _issue(channel, metadata, **fields)
    return caught.value.code(), caught.value.details()


@pytest.fixture
def sandbox(channel):
    clusters_pb2_grpc.ClusterServiceStub(channel).RegisterCluster(
        clusters_pb2.RegisterClusterRequest(cluster=a_cluster()), metadata=ADMIN)


def _client_certificate(kubeconfig: str) -> tuple[dict, x509.Certificate, bytes]:
    config = yaml.safe_load(kubeconfig)
    user = config["users"][0]["user"]
    cert = x509.load_pem_x509_certificate(base64.b64decode(user["client-certificate-data"]))
    return config, cert, base64.b64decode(user["client-key-data"])


def test_issued_kubeconfig_points_at_the_gateway_and_its_certificate_is_right(channel, plane, sandbox,
                                                                               redis_client, signing_key):
    issued = _issue(channel, groups=["devs", "ops"], ttl=_ttl(hours=1))
    config, cert, key_pem = _client_certificate(issued.kubeconfig)

    cluster = config["clusters"][0]["cluster"]
    assert cluster["server"] == f"{GATEWAY_URL}/clusters/sandbox"
    assert base64.b64decode(cluster["certificate-authority-data"]) == Path(plane.config.gateway_ca).read_bytes()
    ca = x509.load_pem_x509_certificate(plane.authority.ca_pem)
    cert.verify_directly_issued_by(ca)
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)] == ["alice"]
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == ["devs", "ops"]
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()
    lifetime = cert.not_valid_after_utc - datetime.datetime.now(datetime.timezone.utc)
    assert datetime.timedelta(minutes=59) < lifetime <= datetime.timedelta(hours=1)

    # recorded by serial, as an audited mutation, without the key
    assert issued.certificate.serial == format(cert.serial_number, "x")
    assert (issued.certificate.user, list(issued.certificate.groups)) == ("alice", ["devs", "ops"])
    listed = kubeconfigs_pb2_grpc.KubeconfigServiceStub(channel).ListCertificates(
        kubeconfigs_pb2.ListCertificatesRequest(), metadata=READER).certificates
    assert [(c.serial, c.cluster, c.revoked) for c in listed] == [(issued.certificate.serial, "sandbox", False)]
    assert plane.store.audit()[-1].action == "certificates.issue"
    database = Path(plane.config.store.removeprefix("sqlite:///"))
    stored = b"".join(path.read_bytes() for path in database.parent.glob(database.name + "*"))   # with the WAL
    assert b"CERTIFICATE" not in stored and key_pem.split(b"\n")[1] not in stored

    # the gateways' own authentication accepts it until its serial is revoked
    snapshot = verify_snapshot(redis_client.get(SNAPSHOT_KEY), signing_key.public_key())
    identity = snapshot.authenticator.authenticate(cert, None)
    assert (identity.user, identity.groups) == ("alice", ("devs", "ops"))
    revocations_pb2_grpc.RevocationServiceStub(channel).Revoke(
        revocations_pb2.RevokeRequest(kind="cert_serial", value=issued.certificate.serial), metadata=ADMIN)
    snapshot = verify_snapshot(redis_client.get(SNAPSHOT_KEY), signing_key.public_key())
    with pytest.raises(AuthenticationError):
        snapshot.authenticator.authenticate(cert, None)
    listed = kubeconfigs_pb2_grpc.KubeconfigServiceStub(channel).ListCertificates(
        kubeconfigs_pb2.ListCertificatesRequest(), metadata=READER).certificates
    assert listed[0].revoked


def test_ttl_defaults_and_is_capped(channel, plane, sandbox):
    _, cert, _ = _client_certificate(_issue(channel).kubeconfig)
    lifetime = cert.not_valid_after_utc - datetime.datetime.now(datetime.timezone.utc)
    assert datetime.timedelta(hours=7, minutes=59) < lifetime <= datetime.timedelta(hours=8)
    revision = plane.store.revision()
    for ttl in (_ttl(hours=24, seconds=1), _ttl(seconds=0), _ttl(seconds=-5)):
        code, details = _refused(channel, ttl=ttl)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("ttl:"), details
    assert _issue(channel, ttl=_ttl(hours=24)).certificate.serial
    assert plane.store.revision() == revision + 1


def test_bad_requests_change_nothing(channel, plane, sandbox):
    revision = plane.store.revision()
    assert _refused(channel, cluster="nope") == (grpc.StatusCode.NOT_FOUND, "cluster 'nope' does not exist")
    code, details = _refused(channel, user="x" * 65)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("user:")
    code, details = _refused(channel, groups=["devs", ""])
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("groups[1]:")
    code, details = _refused(channel, groups=["devs", "devs"])
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("groups:")
    code, _ = _refused(channel, metadata=READER)   # only an admin may issue
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert plane.store.revision() == revision and plane.store.certificates() == []


def test_the_client_ca_is_created_on_first_start_and_kept(tmp_path):
    config = ControlPlaneConfig(state_dir=str(tmp_path / "state"))
    first = config.client_authority()
    key_file = tmp_path / "state" / "client-ca.key"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert config.client_authority().ca_pem == first.ca_pem
    # a CA named by options is never invented
    named = ControlPlaneConfig(client_ca_cert=str(tmp_path / "missing.crt"),
                               client_ca_key=str(tmp_path / "missing.key"))
    with pytest.raises(ValueError, match="client CA"):
        named.client_authority()
    assert not (tmp_path / "missing.crt").exists()
