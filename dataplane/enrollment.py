"""The agent's certificate: enrolled once with a bootstrap token, renewed before it expires
(docs/tunnels.md, "Registration").

The agent generates its key here and it never leaves the agent: the control plane gets a CSR and
signs the key into a short-lived client certificate (AgentService.Enroll). Before the certificate
expires (at about 2/3 of its lifetime, with jitter so that agents enrolled together do not renew
together) the agent renews with a fresh key, proving possession of the current one by signing the
new CSR with it (`renewal_proof`, checked by controlplane/agentca.py).

State directory (mode 0700, files 0600):
- `agent.pem`       the certificate followed by its key, replaced atomically (one file, so a
                    reader never pairs a new key with an old certificate; `ssl.load_cert_chain`
                    takes both from it)
- `gateway-ca.pem`  the gateways' serving CA, when the control plane knows it
- `agent-ca.pem`    the CA that signed the certificate (informative)

The wire contract is the control plane's API (controlplane/api/v1/agents.proto).
"""
from __future__ import annotations

import asyncio
import datetime
import hashlib
import ipaddress
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf.timestamp_pb2 import Timestamp

from .files import write_atomically

log = logging.getLogger("accesspoint.agent.enrollment")

CREDENTIALS_FILE = "agent.pem"
GATEWAY_CA_FILE = "gateway-ca.pem"
AGENT_CA_FILE = "agent-ca.pem"
RENEWAL_MAX_SKEW = datetime.timedelta(minutes=5)
RENEW_AT = 2 / 3                   # of the lifetime
RENEW_JITTER = 0.1                 # up to this share of the lifetime earlier
CALL_TIMEOUT = 15.0
_PROOF_CONTEXT = b"accesspoint agent renewal v1\n"
# Refusals that no retry can change: the agent must be enrolled again.
FINAL_CODES = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED,
               grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT)


class EnrollmentError(Exception):
    """The control plane refused (or could not be reached): the message says why."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None):
        super().__init__(message)
        self.code = code

    @property
    def final(self) -> bool:
        return self.code in FINAL_CODES


def renewal_proof(serial: str, signed_at: datetime.datetime, csr_der: bytes) -> bytes:
    """What the current key signs to renew: binds the new CSR to this certificate and a time."""
    return _PROOF_CONTEXT + f"{serial}\n{int(signed_at.timestamp())}\n".encode() + \
        hashlib.sha256(csr_der).hexdigest().encode()


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def make_csr(key: ec.EllipticCurvePrivateKey) -> bytes:
    """PEM CSR; its subject is a placeholder (the control plane names the agent)."""
    subject = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "accesspoint-agent")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class Credentials:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    path: Path                     # the combined file: --cert and --key of the agent

    @property
    def serial(self) -> str:
        return format(self.cert.serial_number, "x")


def credentials_path(state_dir: Path) -> Path:
    return Path(state_dir) / CREDENTIALS_FILE


def load_credentials(state_dir: Path) -> Credentials | None:
    """The stored certificate and key, or None when there are none (not enrolled yet)."""
    path = credentials_path(state_dir)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    cert = x509.load_pem_x509_certificate(data)
    key = serialization.load_pem_private_key(data[data.index(b"-----BEGIN PRIVATE KEY-----"):], password=None)
    return Credentials(cert, key, path)


def store_credentials(state_dir: Path, key: ec.EllipticCurvePrivateKey, answer) -> Credentials:
    """Write an Enroll/Renew answer (AgentCredentials) and the key it certifies."""
    state_dir = Path(state_dir)
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    cert = x509.load_pem_x509_certificate(answer.certificate_pem)
    if cert.public_key().public_numbers() != key.public_key().public_numbers():
        raise EnrollmentError("the control plane certified another key than ours")
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    if answer.gateway_ca:
        write_atomically(state_dir / GATEWAY_CA_FILE, answer.gateway_ca, mode=0o600)
    write_atomically(state_dir / AGENT_CA_FILE, answer.agent_ca, mode=0o600)
    path = credentials_path(state_dir)
    write_atomically(path, answer.certificate_pem + key_pem, mode=0o600)
    return Credentials(cert, key, path)


def _call(method, request) -> object:
    try:
        return method(request, timeout=CALL_TIMEOUT)
    except grpc.RpcError as exc:
        raise EnrollmentError(f"{exc.code().name}: {exc.details()}", exc.code()) from None


def enroll(stub, cluster: str, bootstrap_token: str, state_dir: Path) -> Credentials:
    """Exchange the bootstrap token for a certificate of a new key; store both."""
    from controlplane.api.v1 import agents_pb2

    key = new_key()
    answer = _call(stub.Enroll, agents_pb2.EnrollRequest(cluster=cluster, bootstrap_token=bootstrap_token,
                                                          csr=make_csr(key)))
    credentials = store_credentials(state_dir, key, answer)
    log.info("enrolled as %s (certificate %s, until %s)", answer.certificate.common_name, credentials.serial,
             credentials.cert.not_valid_after_utc.isoformat())
    return credentials


def renew(stub, state_dir: Path) -> Credentials:
    """A certificate for a fresh key, proving possession of the current one; stores both."""
    from controlplane.api.v1 import agents_pb2

    current = load_credentials(state_dir)
    if current is None:
        raise EnrollmentError(f"nothing to renew in {state_dir}: enroll first")
    key = new_key()
    csr_pem = make_csr(key)
    csr_der = x509.load_pem_x509_csr(csr_pem).public_bytes(serialization.Encoding.DER)
    signed_at = _utcnow().replace(microsecond=0)
    signature = current.key.sign(renewal_proof(current.serial, signed_at, csr_der), ec.ECDSA(hashes.SHA256()))
    stamp = Timestamp()
    stamp.FromDatetime(signed_at)
    answer = _call(stub.Renew, agents_pb2.RenewRequest(
        certificate=current.cert.public_bytes(serialization.Encoding.PEM), csr=csr_pem, signed_at=stamp,
        signature=signature))
    credentials = store_credentials(state_dir, key, answer)
    log.info("renewed certificate %s as %s (until %s)", current.serial, credentials.serial,
             credentials.cert.not_valid_after_utc.isoformat())
    return credentials


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def renew_at(cert: x509.Certificate, rng: random.Random | None = None) -> datetime.datetime:
    """When to renew: at RENEW_AT of the lifetime, up to RENEW_JITTER of it earlier."""
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    share = RENEW_AT - (rng or random).random() * RENEW_JITTER
    return start + (end - start) * share


def ensure_enrolled(stub, cluster: str, token_file: Path | None, state_dir: Path,
                    now: Callable[[], datetime.datetime] = _utcnow) -> Credentials:
    """The stored credentials while unexpired; else enroll with the token in `token_file`."""
    current = load_credentials(state_dir)
    if current is not None and current.cert.not_valid_after_utc > now():
        return current
    if token_file is None:
        raise EnrollmentError(f"no unexpired certificate in {state_dir} and no bootstrap token file to enroll with")
    token = Path(token_file).read_text(encoding="utf-8").strip()
    if not token:
        raise EnrollmentError(f"{token_file} is empty")
    return enroll(stub, cluster, token, state_dir)


def agent_service(channel: grpc.Channel):
    """The AgentService stub on `channel` (what enroll, renew and keep_renewed call)."""
    from controlplane.api.v1 import agents_pb2_grpc

    return agents_pb2_grpc.AgentServiceStub(channel)


def controlplane_channel(address: str, ca_file: str = "") -> grpc.Channel:
    """TLS when the control plane's CA is given; plaintext only to a loopback address."""
    if ca_file:
        return grpc.secure_channel(address, grpc.ssl_channel_credentials(Path(ca_file).read_bytes()))
    if not _is_loopback(address.rpartition(":")[0].strip("[]")):
        raise EnrollmentError(f"{address} is not a loopback address: give the control plane's CA (bootstrap "
                              "tokens must not travel in clear text)")
    return grpc.insecure_channel(address)


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def keep_renewed(stub, state_dir: Path, stop: asyncio.Event,
                       on_renewed: Callable[[Credentials], None] | None = None,
                       retry_initial: float = 5.0, retry_max: float = 300.0,
                       now: Callable[[], datetime.datetime] = _utcnow, rng: random.Random | None = None) -> None:
    """Renew whenever due (by `now`) until `stop` is set. A failure is retried with doubling delays while the
    certificate lives; a final refusal (revoked, deregistered) is logged as an error and retried at
    the longest delay, in case an operator fixes the cause (a new enrollment needs a restart)."""
    retry = retry_initial
    due = None
    while not stop.is_set():
        current = load_credentials(state_dir)
        if current is None:
            raise EnrollmentError(f"nothing to renew in {state_dir}: enroll first")
        due = due or renew_at(current.cert, rng)
        if await _wait(stop, (due - now()).total_seconds()):
            return
        try:
            renewed = await asyncio.to_thread(renew, stub, state_dir)
        except EnrollmentError as exc:
            delay = retry_max if exc.final else retry
            retry = min(retry * 2, retry_max)
            log.log(logging.ERROR if exc.final else logging.WARNING,
                    "renewing certificate %s failed: %s; again in %.0fs", current.serial, exc, delay)
            due = now() + datetime.timedelta(seconds=delay)
            continue
        retry, due = retry_initial, None
        if on_renewed is not None:
            on_renewed(renewed)


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    """True when `stop` was set within `seconds`."""
    if seconds <= 0:
        return stop.is_set()
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True
