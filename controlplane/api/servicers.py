"""One thin servicer per service: convert, validate, store, publish, answer.

Domain errors (controlplane.errors) propagate to the error interceptor, which turns them into
gRPC statuses; nothing here touches status codes.
"""
from __future__ import annotations

import datetime
import hashlib
import logging
import secrets
from dataclasses import dataclass, replace

from google.protobuf.duration_pb2 import Duration

from .. import validation
from ..agentca import AgentAuthority, bootstrap_ttl, new_bootstrap_token
from ..authority import ClientAuthority
from ..distribution import Distributor
from ..errors import InvalidArgument, Unavailable
from ..fleet import Fleet, connectivity
from ..model import Revocation, Token
from ..store import Store, tables
from . import convert
from .caller import actor
from .v1 import (audit_pb2, audit_pb2_grpc, bindings_pb2, bindings_pb2_grpc, clusters_pb2, clusters_pb2_grpc, fleet_pb2,
                 fleet_pb2_grpc, kubeconfigs_pb2, kubeconfigs_pb2_grpc, revocations_pb2, revocations_pb2_grpc,
                 roles_pb2, roles_pb2_grpc, tokens_pb2, tokens_pb2_grpc)

TOKEN_PREFIX = "apt_"   # recognisable in secret scanners
DEFAULT_WAIT = datetime.timedelta(seconds=30)
# A wait holds one of the server's worker threads: keep it bounded.
MAX_WAIT = datetime.timedelta(minutes=5)
DEFAULT_AUDIT_LIMIT = 100

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dependencies:
    """What the servicers work with: one of each per control-plane process."""
    store: Store
    distributor: Distributor
    authority: ClientAuthority
    fleet: Fleet
    agents: AgentAuthority


class _Servicer:
    def __init__(self, deps: Dependencies):
        self._store = deps.store
        self._distributor = deps.distributor
        self._authority = deps.authority
        self._fleet = deps.fleet
        self._agents = deps.agents


class ClusterServicer(_Servicer, clusters_pb2_grpc.ClusterServiceServicer):
    def RegisterCluster(self, request, context):
        """A tunnel cluster comes with its agent's first bootstrap token, in the same revision."""
        cluster = convert.cluster_from_proto(request.cluster)
        validation.check_cluster(cluster)
        requested_ttl = convert.duration_from_proto(request, "bootstrap_ttl")
        if not cluster.tunnel:
            if requested_ttl is not None:
                raise InvalidArgument("bootstrap_ttl", "only a tunnel cluster has a bootstrap token")
            revision = self._store.register_cluster(actor(), cluster)
            self._distributor.publish_latest()
            return convert.cluster_to_proto(replace(cluster, revision=revision))
        token, secret = new_bootstrap_token(cluster.name)
        revision, issued = self._store.register_tunnel_cluster(
            actor(), cluster, token, bootstrap_ttl(requested_ttl, self._agents.bootstrap_ttl, "bootstrap_ttl"))
        self._distributor.publish_latest()
        answer = convert.cluster_to_proto(replace(cluster, revision=revision))
        answer.bootstrap.CopyFrom(convert.bootstrap_token_to_proto(issued, secret))
        return answer

    def UpdateCluster(self, request, context):
        cluster = convert.cluster_from_proto(request.cluster)
        validation.check_cluster(cluster)
        revision = self._store.update_cluster(actor(), cluster, request.expected_revision)
        self._distributor.publish_latest()
        return convert.cluster_to_proto(replace(cluster, revision=revision))

    def DeregisterCluster(self, request, context):
        revision = self._store.deregister_cluster(actor(), request.name, request.expected_revision)
        self._distributor.publish_latest()
        return clusters_pb2.DeregisterClusterResponse(revision=revision)

    def GetCluster(self, request, context):
        return self._with_connectivity([self._store.get(tables.CLUSTERS, request.name)])[0]

    def ListClusters(self, request, context):
        return clusters_pb2.ListClustersResponse(clusters=self._with_connectivity(self._store.list(tables.CLUSTERS)))

    def _with_connectivity(self, clusters) -> list[clusters_pb2.Cluster]:
        """The clusters, tunnel clusters with their connectivity from the gateways' heartbeats."""
        answers = [convert.cluster_to_proto(c) for c in clusters]
        if not any(c.tunnel for c in clusters):
            return answers
        try:
            seen = connectivity(self._fleet.gateways())
        except Unavailable as exc:     # status only: the clusters still list without Redis
            log.warning("cluster connectivity unknown: %s", exc)
            return answers
        for answer in answers:
            if answer.tunnel:
                answer.connectivity.SetInParent()      # present even when nothing was seen: zero agents
                answer.connectivity.MergeFrom(convert.connectivity_to_proto(seen.get(answer.name)))
        return answers


class RoleServicer(_Servicer, roles_pb2_grpc.RoleServiceServicer):
    def CreateRole(self, request, context):
        role = convert.role_from_proto(request.role)
        validation.check_role(role)
        revision = self._store.create_role(actor(), role)
        self._distributor.publish_latest()
        return convert.role_to_proto(replace(role, revision=revision))

    def UpdateRole(self, request, context):
        role = convert.role_from_proto(request.role)
        validation.check_role(role)
        revision = self._store.update_role(actor(), role, request.expected_revision)
        self._distributor.publish_latest()
        return convert.role_to_proto(replace(role, revision=revision))

    def DeleteRole(self, request, context):
        revision = self._store.delete_role(actor(), request.name, request.expected_revision)
        self._distributor.publish_latest()
        return roles_pb2.DeleteRoleResponse(revision=revision)

    def GetRole(self, request, context):
        return convert.role_to_proto(self._store.get(tables.ROLES, request.name))

    def ListRoles(self, request, context):
        return roles_pb2.ListRolesResponse(roles=[convert.role_to_proto(r) for r in self._store.list(tables.ROLES)])


class BindingServicer(_Servicer, bindings_pb2_grpc.BindingServiceServicer):
    def CreateBinding(self, request, context):
        binding = convert.binding_from_proto(request.binding)
        validation.check_binding(binding)
        revision = self._store.create_binding(actor(), binding)
        self._distributor.publish_latest()
        return convert.binding_to_proto(replace(binding, revision=revision))

    def UpdateBinding(self, request, context):
        binding = convert.binding_from_proto(request.binding)
        validation.check_binding(binding)
        revision = self._store.update_binding(actor(), binding, request.expected_revision)
        self._distributor.publish_latest()
        return convert.binding_to_proto(replace(binding, revision=revision))

    def DeleteBinding(self, request, context):
        revision = self._store.delete_binding(actor(), request.name, request.expected_revision)
        self._distributor.publish_latest()
        return bindings_pb2.DeleteBindingResponse(revision=revision)

    def GetBinding(self, request, context):
        return convert.binding_to_proto(self._store.get(tables.BINDINGS, request.name))

    def ListBindings(self, request, context):
        return bindings_pb2.ListBindingsResponse(
            bindings=[convert.binding_to_proto(b) for b in self._store.list(tables.BINDINGS)])


class TokenServicer(_Servicer, tokens_pb2_grpc.TokenServiceServicer):
    def IssueToken(self, request, context):
        validation.check_token_request(request.user, tuple(request.groups), request.service)
        channel = request.channel or "kubectl"
        validation.check_channel(channel)
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token = Token(id="t-" + secrets.token_hex(8), sha256=hashlib.sha256(secret.encode()).hexdigest(),
                      user=request.user, groups=tuple(request.groups), component=request.service,
                      description=request.description, channel=channel, session=request.session)
        issued = self._store.issue_token(actor(), token)
        self._distributor.publish_latest()
        return tokens_pb2.IssueTokenResponse(token=convert.token_to_proto(issued), secret=secret)

    def ListTokens(self, request, context):
        return tokens_pb2.ListTokensResponse(tokens=[convert.token_to_proto(t) for t in self._store.list(tables.TOKENS)])

    def RevokeToken(self, request, context):
        revocation = validation.normalise_revocation(Revocation("token", request.id, request.reason))
        revision = self._store.revoke(actor(), revocation)
        self._distributor.publish_revocation(revision, revocation)
        return tokens_pb2.RevokeTokenResponse(revision=revision)


class ServiceIdentityServicer(_Servicer, tokens_pb2_grpc.ServiceIdentityServiceServicer):
    def CreateServiceIdentity(self, request, context):
        service = convert.service_identity_from_proto(request.service_identity)
        validation.check_service_identity(service)
        revision = self._store.create_service_identity(actor(), service)
        self._distributor.publish_latest()
        return convert.service_identity_to_proto(replace(service, revision=revision))

    def DeleteServiceIdentity(self, request, context):
        revision = self._store.delete_service_identity(actor(), request.name)
        self._distributor.publish_latest()
        return tokens_pb2.DeleteServiceIdentityResponse(revision=revision)

    def ListServiceIdentities(self, request, context):
        return tokens_pb2.ListServiceIdentitiesResponse(service_identities=[
            convert.service_identity_to_proto(s) for s in self._store.list(tables.SERVICE_IDENTITIES)])


class RevocationServicer(_Servicer, revocations_pb2_grpc.RevocationServiceServicer):
    def Revoke(self, request, context):
        revocation = validation.normalise_revocation(Revocation(request.kind, request.value, request.reason))
        revision = self._store.revoke(actor(), revocation)
        self._distributor.publish_revocation(revision, revocation)
        return convert.revocation_to_proto(replace(revocation, revision=revision))

    def ListRevocations(self, request, context):
        return revocations_pb2.ListRevocationsResponse(
            revocations=[convert.revocation_to_proto(r) for r in self._store.revocations()])


class KubeconfigServicer(_Servicer, kubeconfigs_pb2_grpc.KubeconfigServiceServicer):
    def IssueKubeconfig(self, request, context):
        groups = tuple(request.groups)
        validation.check_kubeconfig_request(request.user, groups, request.cluster)
        lifetime = self._authority.lifetime(convert.duration_from_proto(request, "ttl"))
        issued = self._authority.issue(request.user, groups, request.cluster, lifetime, request.session)
        revision = self._store.record_certificate(actor(), issued.certificate)
        self._distributor.publish_latest()
        return kubeconfigs_pb2.IssueKubeconfigResponse(
            kubeconfig=issued.kubeconfig,
            certificate=convert.certificate_to_proto(replace(issued.certificate, revision=revision)))

    def ListCertificates(self, request, context):
        return kubeconfigs_pb2.ListCertificatesResponse(
            certificates=[convert.certificate_to_proto(c) for c in self._store.certificates()])


class FleetServicer(_Servicer, fleet_pb2_grpc.FleetServiceServicer):
    def GetFleetStatus(self, request, context):
        gateways = self._fleet.gateways()
        return fleet_pb2.GetFleetStatusResponse(
            store_revision=self._store.revision(), published_revision=self._distributor.published_revision(),
            gateways=[convert.gateway_to_proto(g) for g in gateways])

    def WaitForRevision(self, request, context):
        current = self._store.revision()
        if not 0 <= request.revision <= current:
            raise InvalidArgument("revision", f"must be 0-{current} (the store's revision)")
        timeout = convert.duration_from_proto(request, "timeout") or DEFAULT_WAIT
        if not datetime.timedelta(0) < timeout <= MAX_WAIT:
            raise InvalidArgument("timeout", f"must be more than 0 s and at most {MAX_WAIT.total_seconds():g} s")
        seconds = timeout.total_seconds()
        if context.time_remaining() is not None:   # answer within the caller's own deadline
            seconds = min(seconds, context.time_remaining())
        applied = self._fleet.wait_for(request.revision, seconds)
        waited = Duration()
        waited.FromTimedelta(datetime.timedelta(seconds=applied.waited))
        return fleet_pb2.WaitForRevisionResponse(
            revision=request.revision, gateways=[convert.gateway_to_proto(g) for g in applied.gateways],
            waited=waited)


class AuditServicer(_Servicer, audit_pb2_grpc.AuditServiceServicer):
    def QueryAudit(self, request, context):
        query = convert.event_query_from_proto(request, DEFAULT_AUDIT_LIMIT)
        validation.check_event_query(query)
        return audit_pb2.QueryAuditResponse(
            events=[convert.gateway_event_to_proto(e) for e in self._store.audit_events(query)])


def add_all(server, deps: Dependencies) -> list[str]:
    """Register every servicer on `server`; returns the full service names (for reflection)."""
    registrations = [
        (ClusterServicer, clusters_pb2_grpc.add_ClusterServiceServicer_to_server, clusters_pb2, "ClusterService"),
        (RoleServicer, roles_pb2_grpc.add_RoleServiceServicer_to_server, roles_pb2, "RoleService"),
        (BindingServicer, bindings_pb2_grpc.add_BindingServiceServicer_to_server, bindings_pb2, "BindingService"),
        (TokenServicer, tokens_pb2_grpc.add_TokenServiceServicer_to_server, tokens_pb2, "TokenService"),
        (ServiceIdentityServicer, tokens_pb2_grpc.add_ServiceIdentityServiceServicer_to_server, tokens_pb2,
         "ServiceIdentityService"),
        (RevocationServicer, revocations_pb2_grpc.add_RevocationServiceServicer_to_server, revocations_pb2,
         "RevocationService"),
        (KubeconfigServicer, kubeconfigs_pb2_grpc.add_KubeconfigServiceServicer_to_server, kubeconfigs_pb2,
         "KubeconfigService"),
        (FleetServicer, fleet_pb2_grpc.add_FleetServiceServicer_to_server, fleet_pb2, "FleetService"),
        (AuditServicer, audit_pb2_grpc.add_AuditServiceServicer_to_server, audit_pb2, "AuditService"),
    ]
    names = []
    for servicer, add, module, service in registrations:
        add(servicer(deps), server)
        names.append(module.DESCRIPTOR.services_by_name[service].full_name)
    return names
