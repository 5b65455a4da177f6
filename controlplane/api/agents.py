"""AgentService: bootstrap tokens for operators, enrollment and renewal for tunnel agents.

Enroll and Renew take no API token (interceptors.AGENT_METHODS): the bootstrap token, or a
signature by the current certificate's key, is the caller's proof. Every refusal of either is
recorded in the store's refusal audit (and logged) before the caller gets its gRPC error; what
they spend or issue is an ordinary audited mutation.
"""
from __future__ import annotations

import datetime
import hashlib
import logging
import secrets

from dataplane.tunnel.identities import spki_sha256

from .. import validation
from ..agentca import BOOTSTRAP_PREFIX, bootstrap_ttl, new_bootstrap_token
from ..errors import ControlPlaneError, InvalidArgument
from ..model import AgentCertificate, Refusal, utc_text, utc_text_ms
from . import convert
from .caller import actor
from .servicers import _Servicer
from .v1 import agents_pb2, agents_pb2_grpc

log = logging.getLogger("accesspoint.controlplane.agents")

MAX_TOKEN_LENGTH = 256
DEFAULT_REFUSAL_LIMIT = 100


class AgentServicer(_Servicer, agents_pb2_grpc.AgentServiceServicer):
    # -- operators ---------------------------------------------------------------------------------

    def IssueBootstrapToken(self, request, context):
        validation.check_cluster_name(request.cluster, "cluster")
        ttl = bootstrap_ttl(convert.duration_from_proto(request, "ttl"), self._agents.bootstrap_ttl)
        token, secret = new_bootstrap_token(request.cluster)
        issued = self._store.issue_bootstrap_token(actor(), token, ttl)
        return convert.bootstrap_token_to_proto(issued, secret)

    def ListAgentCertificates(self, request, context):
        now = utc_text(datetime.datetime.now(datetime.timezone.utc))
        return agents_pb2.ListAgentCertificatesResponse(certificates=[
            convert.agent_certificate_to_proto(c, now) for c in self._store.agent_certificates(request.cluster)])

    def ListRefusals(self, request, context):
        limit = request.limit or DEFAULT_REFUSAL_LIMIT
        if not 0 < limit <= validation.MAX_AUDIT_LIMIT:
            raise InvalidArgument("limit", f"must be 1-{validation.MAX_AUDIT_LIMIT}")
        return agents_pb2.ListRefusalsResponse(
            refusals=[convert.refusal_to_proto(r) for r in self._store.refusals(request.cluster, limit)])

    # -- agents (no API token) ---------------------------------------------------------------------

    def Enroll(self, request, context):
        subject = "bootstrap token"
        try:
            validation.check_cluster_name(request.cluster, "cluster")
            token = request.bootstrap_token.strip()
            if not token.startswith(BOOTSTRAP_PREFIX) or len(token) > MAX_TOKEN_LENGTH:
                raise InvalidArgument("bootstrap_token", f"expected a token starting with {BOOTSTRAP_PREFIX}")
            digest = hashlib.sha256(token.encode()).hexdigest()
            # Named by its id once the store knows it; never by the secret.
            subject = self._store.bootstrap_subject(digest)
            csr = self._agents.load_csr(request.csr)
            issued, pem = self._store.enroll_agent(digest, request.cluster, self._agents.signer(csr, request.cluster))
        except ControlPlaneError as exc:
            self._refused("agents.enroll", request.cluster, subject, context, exc)
            raise
        self._distributor.publish_latest()
        return self._credentials(issued, pem)

    def Renew(self, request, context):
        subject, cluster = "certificate", ""
        try:
            signed_at = convert.moment_from_proto(request, "signed_at", "signed_at")
            if signed_at is None:
                raise InvalidArgument("signed_at", "is required")
            cert, csr = self._agents.check_renewal(request.certificate, request.csr, signed_at, request.signature)
            serial = format(cert.serial_number, "x")
            subject = f"certificate/{serial}"
            recorded = self._store.agent_certificate(serial)
            cluster = recorded.cluster if recorded is not None else ""
            issued, pem = self._store.renew_agent(serial, spki_sha256(cert), self._agents.signer(csr))
        except ControlPlaneError as exc:
            self._refused("agents.renew", cluster, subject, context, exc)
            raise
        self._distributor.publish_latest()
        return self._credentials(issued, pem)

    def _credentials(self, issued: AgentCertificate, pem: bytes) -> agents_pb2.AgentCredentials:
        now = utc_text(datetime.datetime.now(datetime.timezone.utc))
        return agents_pb2.AgentCredentials(certificate=convert.agent_certificate_to_proto(issued, now),
                                           certificate_pem=pem, agent_ca=self._agents.ca_pem,
                                           gateway_ca=self._agents.gateway_ca_pem)

    def _refused(self, action: str, cluster: str, subject: str, context, exc: ControlPlaneError) -> None:
        refusal = Refusal(id="r-" + secrets.token_hex(8), at=utc_text_ms(datetime.datetime.now(datetime.timezone.utc)),
                          action=action, cluster=cluster[:64], subject=subject, peer=context.peer() or "",
                          reason=str(exc))
        log.warning("REFUSED %s of cluster %r from %s (%s): %s", action, refusal.cluster, refusal.peer, subject,
                    refusal.reason)
        try:
            self._store.record_refusal(refusal)
        except Exception:   # the caller still gets its refusal; the log line above is the record
            log.exception("recording the refusal failed")


def add_all(server, deps) -> list[str]:
    """Register AgentService on `server`; returns its full name (for reflection)."""
    agents_pb2_grpc.add_AgentServiceServicer_to_server(AgentServicer(deps), server)
    return [agents_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name]
