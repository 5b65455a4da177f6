"""Tunnel agents' registration: one-time bootstrap tokens, and the control plane as the agents' CA.
It signs the agents' own keys (from CSRs) into short-lived client certificates, and checks a
renewal's proof that the caller holds the current certificate's key.

A CA of its own, not the kubeconfig client CA: the gateways trust it only on their tunnel port
(`--tunnel-client-ca`), so an agent certificate can never pass as a person's certificate on the
API port, nor a person's as an agent's.
"""
from __future__ import annotations

import datetime
import hashlib
import secrets
from typing import Callable

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dataplane.enrollment import RENEWAL_MAX_SKEW, renewal_proof
from dataplane.pki import CertificateAuthority, cert_pem
from dataplane.tunnel.identities import spki_sha256

from .errors import InvalidArgument, Unauthenticated
from .model import AgentCertificate, BootstrapToken, utc_text
from .store.agents import Signer

CA_COMMON_NAME = "accesspoint agent CA"
AGENT_URI_PREFIX = "urn:accesspoint:agent:"
MAX_CSR_BYTES = 16 * 1024
MAX_CERTIFICATE_NAME = 64          # RFC 5280's upper bound of a common name
_CURVES = (ec.SECP256R1, ec.SECP384R1)
MIN_RSA_BITS = 2048
BOOTSTRAP_PREFIX = "apb_"                  # recognisable in secret scanners
MAX_BOOTSTRAP_TTL = datetime.timedelta(days=7)


def new_bootstrap_token(cluster: str) -> tuple[BootstrapToken, str]:
    """The stored form (its hash) and the secret shown once."""
    secret = BOOTSTRAP_PREFIX + secrets.token_urlsafe(32)
    token = BootstrapToken(id="b-" + secrets.token_hex(6), sha256=hashlib.sha256(secret.encode()).hexdigest(),
                           cluster=cluster, expires_at="")
    return token, secret


def bootstrap_ttl(requested: datetime.timedelta | None, default: float, field: str = "ttl") -> float:
    """Seconds a new bootstrap token lives: the request's (within the cap) or the default."""
    if requested is None:
        return default
    if not datetime.timedelta(0) < requested <= MAX_BOOTSTRAP_TTL:
        raise InvalidArgument(field, f"must be more than 0 s and at most {MAX_BOOTSTRAP_TTL.total_seconds():g} s")
    return requested.total_seconds()


def agent_common_name(cluster: str, agent_id: str) -> str:
    """`agent:<cluster>:<id>`; a cluster name too long for a CN leaves it to the URI SAN."""
    name = f"agent:{cluster}:{agent_id}"
    return name if len(name) <= MAX_CERTIFICATE_NAME else f"agent:{agent_id}"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


class AgentAuthority:
    def __init__(self, ca: CertificateAuthority, gateway_ca_pem: bytes, cert_ttl: float, bootstrap_ttl: float,
                 clock: Callable[[], datetime.datetime] = _now):
        self._ca = ca
        self.gateway_ca_pem = gateway_ca_pem
        self._lifetime = datetime.timedelta(seconds=cert_ttl)
        self.bootstrap_ttl = bootstrap_ttl      # seconds a bootstrap token lives unless the request says
        self._clock = clock

    @property
    def ca_pem(self) -> bytes:
        """What gateways trust on their tunnel port (--tunnel-client-ca)."""
        return self._ca.cert_pem

    def load_csr(self, pem: bytes) -> x509.CertificateSigningRequest:
        """A CSR whose signature proves the key and whose key is one we sign; else InvalidArgument.
        Its subject is ignored: the control plane names the agent."""
        if len(pem) > MAX_CSR_BYTES:
            raise InvalidArgument("csr", f"at most {MAX_CSR_BYTES} bytes")
        try:
            csr = x509.load_pem_x509_csr(pem)
            valid = csr.is_signature_valid
            key = csr.public_key()
        except ValueError:
            raise InvalidArgument("csr", "is not a PEM certificate signing request") from None
        if not valid:
            raise InvalidArgument("csr", "its signature does not verify (the CSR must be signed by its own key)")
        if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, _CURVES):
            return csr
        if isinstance(key, rsa.RSAPublicKey) and key.key_size >= MIN_RSA_BITS:
            return csr
        raise InvalidArgument("csr", f"the key must be ECDSA P-256 or P-384, or RSA of at least {MIN_RSA_BITS} bits")

    def signer(self, csr: x509.CertificateSigningRequest, cluster: str = "") -> Signer:
        """Signs `csr`'s key: for a new agent of `cluster` at enrollment; at renewal for the agent
        (cluster and id) of the certificate renewed."""
        def sign(current: AgentCertificate | None) -> tuple[AgentCertificate, bytes]:
            agent_id = current.agent_id if current is not None else secrets.token_hex(4)
            name_cluster = current.cluster if current is not None else cluster
            name = agent_common_name(name_cluster, agent_id)
            subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
            san = [x509.UniformResourceIdentifier(f"{AGENT_URI_PREFIX}{name_cluster}:{agent_id}")]
            cert, _ = self._ca._issue(subject, ExtendedKeyUsageOID.CLIENT_AUTH, san, self._lifetime,
                                      public_key=csr.public_key())
            recorded = AgentCertificate(serial=format(cert.serial_number, "x"), cluster=name_cluster, agent_id=agent_id,
                                        common_name=name, spki_sha256=spki_sha256(cert),
                                        expires_at=utc_text(cert.not_valid_after_utc), enrolled_by="")
            return recorded, cert_pem(cert)
        return sign

    def check_renewal(self, certificate_pem: bytes, csr_pem: bytes, signed_at: datetime.datetime,
                      signature: bytes) -> tuple[x509.Certificate, x509.CertificateSigningRequest]:
        """The presented certificate is one this CA signed, and `signature` (by its key, over the
        renewal proof of the new CSR) is fresh and valid; else Unauthenticated. The store then
        checks that the serial is recorded, live and unrevoked."""
        try:
            cert = x509.load_pem_x509_certificate(certificate_pem)
        except ValueError:
            raise InvalidArgument("certificate", "is not a PEM certificate") from None
        try:
            cert.verify_directly_issued_by(self._ca.cert)
        except (ValueError, TypeError, InvalidSignature):
            raise Unauthenticated("the certificate was not issued by this control plane's agent CA") from None
        csr = self.load_csr(csr_pem)
        skew = abs(self._clock() - signed_at)
        if skew > RENEWAL_MAX_SKEW:
            raise Unauthenticated(f"signed_at is {skew.total_seconds():.0f} s away from the control plane's "
                                  f"clock (at most {RENEWAL_MAX_SKEW.total_seconds():.0f} s): check the agent's clock")
        message = renewal_proof(format(cert.serial_number, "x"), signed_at, csr.public_bytes(serialization.Encoding.DER))
        key = cert.public_key()
        try:
            if isinstance(key, ec.EllipticCurvePublicKey):
                key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
            elif isinstance(key, rsa.RSAPublicKey):
                key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
            else:
                raise InvalidSignature
        except InvalidSignature:
            raise Unauthenticated("the renewal is not signed by the certificate's key") from None
        return cert, csr
