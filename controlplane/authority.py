"""The control plane as the client certificate authority the gateways trust: short-lived client
certificates (CN = user, one O per group) wrapped in kubeconfigs that point at the gateway.

Only the certificate's serial and subject are recorded (Store.record_certificate); its private key
exists in the IssueKubeconfig response and nowhere else.
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dataplane.pki import CertificateAuthority, IssuedCert
from dataplane.sandbox import kubeconfig

from .errors import FailedPrecondition, InvalidArgument
from .model import Certificate, utc_text

CA_COMMON_NAME = "accesspoint client CA"
# A session-bound certificate names its console session in a URI SAN (docs/policy.md).
SESSION_URI_PREFIX = "urn:accesspoint:session:"


def load_or_create_ca(cert_path: Path, key_path: Path, create: bool,
                      common_name: str = CA_COMMON_NAME) -> CertificateAuthority:
    """Load the CA; with `create`, a first start (neither file there) generates it (key mode 0600)."""
    if create and not cert_path.exists() and not key_path.exists():
        cert_path.parent.mkdir(parents=True, exist_ok=True)
        ca = CertificateAuthority.create(common_name)
        ca.write(cert_path, key_path)
        return ca
    return CertificateAuthority.load(cert_path, key_path)


@dataclass(frozen=True)
class IssuedKubeconfig:
    certificate: Certificate
    kubeconfig: str           # holds the private key: hand it to the caller, never log or store it


class ClientAuthority:
    def __init__(self, ca: CertificateAuthority, gateway_url: str, gateway_ca_pem: bytes,
                 default_ttl: float, max_ttl: float):
        self._ca = ca
        self._gateway_url = gateway_url.rstrip("/")
        self._gateway_ca_pem = gateway_ca_pem
        self._default_ttl = datetime.timedelta(seconds=default_ttl)
        self._max_ttl = datetime.timedelta(seconds=max_ttl)

    @property
    def ca_pem(self) -> bytes:
        """What gateways must trust as a client CA to accept the issued certificates."""
        return self._ca.cert_pem

    def lifetime(self, ttl: datetime.timedelta | None) -> datetime.timedelta:
        """The requested ttl (None: the default) if within the cap, else InvalidArgument."""
        if ttl is None:
            return self._default_ttl
        if not datetime.timedelta(0) < ttl <= self._max_ttl:
            raise InvalidArgument("ttl", f"must be more than 0 s and at most {self._max_ttl.total_seconds():g} s")
        return ttl

    def issue(self, user: str, groups: tuple[str, ...], cluster: str,
              lifetime: datetime.timedelta, session: str = "") -> IssuedKubeconfig:
        if not self._gateway_url:
            raise FailedPrecondition("issuing kubeconfigs needs the control plane's gateway_url and gateway_ca")
        issued = self._issue_bound(user, groups, lifetime, session) if session else \
            self._ca.issue_client(user, groups, lifetime)
        certificate = Certificate(serial=issued.serial_hex, user=user, groups=groups, cluster=cluster,
                                  expires_at=utc_text(issued.cert.not_valid_after_utc), session=session)
        text = kubeconfig(f"{self._gateway_url}/clusters/{cluster}", self._gateway_ca_pem, user,
                          cert_pem=issued.cert_pem, key_pem=issued.key_pem, context=f"accesspoint-{cluster}")
        return IssuedKubeconfig(certificate, text)

    def _issue_bound(self, user: str, groups: tuple[str, ...], lifetime: datetime.timedelta,
                     session: str) -> IssuedCert:
        """issue_client's certificate plus the session's URI SAN (pki's shared builder takes SANs)."""
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, user),
                             *(x509.NameAttribute(NameOID.ORGANIZATION_NAME, group) for group in groups)])
        cert, key = self._ca._issue(subject, ExtendedKeyUsageOID.CLIENT_AUTH,
                                    [x509.UniformResourceIdentifier(SESSION_URI_PREFIX + session)], lifetime)
        return IssuedCert(cert, key)
