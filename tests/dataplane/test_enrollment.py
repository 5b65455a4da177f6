"""The agent's side of registration with no control plane: a stub that signs CSRs with a local CA
(the real exchange is tested in tests/controlplane/test_agents.py). Renewal timing with jitter,
the state directory's files, enrolment only when needed, retries that back off."""
from __future__ import annotations

import asyncio
import datetime
import random
import stat

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from controlplane.api.v1 import agents_pb2
from dataplane import enrollment
from dataplane.pki import CertificateAuthority, cert_pem

UTC = datetime.timezone.utc


class Refused(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str):
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


class FakeAgentService:
    """Signs every CSR for an hour; `failures` are raised first, one per call."""

    def __init__(self) -> None:
        self.ca = CertificateAuthority.create("agents")
        self.calls: list[str] = []
        self.failures: list[grpc.RpcError] = []

    def _answer(self, csr_pem: bytes) -> agents_pb2.AgentCredentials:
        csr = x509.load_pem_x509_csr(csr_pem)
        assert csr.is_signature_valid
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "agent:alpha:1")])
        cert, _ = self.ca._issue(subject, ExtendedKeyUsageOID.CLIENT_AUTH, [], datetime.timedelta(hours=1),
                                 public_key=csr.public_key())
        return agents_pb2.AgentCredentials(certificate_pem=cert_pem(cert), agent_ca=self.ca.cert_pem,
                                           gateway_ca=b"gateway CA")

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if self.failures:
            raise self.failures.pop(0)

    def Enroll(self, request, timeout=None):
        self._call("Enroll")
        return self._answer(request.csr)

    def Renew(self, request, timeout=None):
        self._call("Renew")
        current = x509.load_pem_x509_certificate(request.certificate)
        csr = x509.load_pem_x509_csr(request.csr)
        proof = enrollment.renewal_proof(format(current.serial_number, "x"),
                                         request.signed_at.ToDatetime(tzinfo=UTC),
                                         csr.public_bytes(serialization.Encoding.DER))
        current.public_key().verify(request.signature, proof, ec.ECDSA(hashes.SHA256()))
        return self._answer(request.csr)


def test_renewal_is_due_at_two_thirds_of_the_lifetime_with_jitter_earlier():
    ca = CertificateAuthority.create("agents")
    cert = ca.issue_client("agent:alpha:1", lifetime=datetime.timedelta(hours=24)).cert
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    rng = random.Random(7)
    moments = [enrollment.renew_at(cert, rng) for _ in range(200)]
    start = cert.not_valid_before_utc
    assert all(start + lifetime * (2 / 3 - 0.1) <= m <= start + lifetime * 2 / 3 for m in moments)
    assert max(moments) - min(moments) > lifetime * 0.05          # spread out, not one instant


def test_enroll_writes_private_files_and_reuses_them_until_expiry(tmp_path):
    service = FakeAgentService()
    token = tmp_path / "token"
    token.write_text("apb_secret\n")
    state = tmp_path / "state"
    first = enrollment.ensure_enrolled(service, "alpha", token, state)
    assert service.calls == ["Enroll"]
    for name in (enrollment.CREDENTIALS_FILE, enrollment.GATEWAY_CA_FILE, enrollment.AGENT_CA_FILE):
        assert stat.S_IMODE((state / name).stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert (state / enrollment.GATEWAY_CA_FILE).read_bytes() == b"gateway CA"
    assert [p.name for p in state.iterdir() if p.name.endswith(".tmp")] == []

    again = enrollment.ensure_enrolled(service, "alpha", token, state)
    assert service.calls == ["Enroll"] and again.serial == first.serial
    later = lambda: first.cert.not_valid_after_utc + datetime.timedelta(seconds=1)   # noqa: E731
    assert enrollment.ensure_enrolled(service, "alpha", token, state, now=later).serial != first.serial
    with pytest.raises(enrollment.EnrollmentError, match="no bootstrap token file"):
        enrollment.ensure_enrolled(service, "alpha", None, state, now=lambda: later() + datetime.timedelta(days=1))


def test_a_certificate_for_another_key_is_not_stored(tmp_path):
    service = FakeAgentService()
    answer = service._answer(enrollment.make_csr(enrollment.new_key()))
    with pytest.raises(enrollment.EnrollmentError, match="another key"):
        enrollment.store_credentials(tmp_path, enrollment.new_key(), answer)
    assert not (tmp_path / enrollment.CREDENTIALS_FILE).exists()


def test_refusals_are_enrollment_errors_that_say_whether_retrying_helps(tmp_path):
    service = FakeAgentService()
    service.failures = [Refused(grpc.StatusCode.UNAUTHENTICATED, "bootstrap token b-1 was already used")]
    with pytest.raises(enrollment.EnrollmentError, match="UNAUTHENTICATED: bootstrap token b-1") as caught:
        enrollment.enroll(service, "alpha", "apb_x", tmp_path)
    assert caught.value.final
    assert not enrollment.EnrollmentError("x", grpc.StatusCode.UNAVAILABLE).final


def test_the_renewal_loop_retries_a_failure_then_renews(tmp_path):
    service = FakeAgentService()
    first = enrollment.enroll(service, "alpha", "apb_x", tmp_path)
    service.failures = [Refused(grpc.StatusCode.UNAVAILABLE, "control plane restarting")]
    renewed: list[enrollment.Credentials] = []
    # the loop's clock: at the renewal time from the start; each retry delay is passed over at once
    lifetime = first.cert.not_valid_after_utc - first.cert.not_valid_before_utc
    moment = [first.cert.not_valid_before_utc + lifetime * enrollment.RENEW_AT]

    async def run() -> None:
        stop = asyncio.Event()

        def on_renewed(credentials: enrollment.Credentials) -> None:
            renewed.append(credentials)
            stop.set()

        def now() -> datetime.datetime:
            moment[0] += datetime.timedelta(seconds=10)      # time passes between looks
            return moment[0]

        await asyncio.wait_for(enrollment.keep_renewed(service, tmp_path, stop, on_renewed, retry_initial=5,
                                                       now=now), 30)

    asyncio.run(run())
    assert service.calls == ["Enroll", "Renew", "Renew"]
    assert [c.serial for c in renewed] == [enrollment.load_credentials(tmp_path).serial]
    assert renewed[0].serial != first.serial
