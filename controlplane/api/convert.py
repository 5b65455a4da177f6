"""Protobuf messages ↔ model values. Shapes only: checks live in controlplane.validation."""
from __future__ import annotations

import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from ..errors import InvalidArgument
from ..fleet import GatewayStatus
from ..model import (Binding, Certificate, Cluster, ClusterSelector, Credential, EventQuery, GatewayEvent, Revocation,
                     Role, Rule, ServiceIdentity, Subject, Token, utc_text, utc_text_ms)
from .v1 import (audit_pb2, bindings_pb2, clusters_pb2, fleet_pb2, kubeconfigs_pb2, revocations_pb2, roles_pb2,
                 tokens_pb2)


def cluster_from_proto(msg: clusters_pb2.Cluster) -> Cluster:
    cred = msg.credential
    return Cluster(
        name=msg.name, endpoint=msg.endpoint, ca_bundle=msg.ca_bundle,
        credential=Credential(kind=cred.kind, ref=cred.ref, cert_ref=cred.cert_ref, key_ref=cred.key_ref),
        labels=dict(msg.labels), tunnel=msg.tunnel, identity_mode=msg.identity_mode or "impersonate",
        kubectl_enabled=msg.kubectl_enabled if msg.HasField("kubectl_enabled") else True)


def cluster_to_proto(c: Cluster) -> clusters_pb2.Cluster:
    cred = c.credential
    return clusters_pb2.Cluster(
        name=c.name, endpoint=c.endpoint, ca_bundle=c.ca_bundle,
        credential=clusters_pb2.Credential(kind=cred.kind, ref=cred.ref, cert_ref=cred.cert_ref,
                                           key_ref=cred.key_ref),
        labels=c.labels, tunnel=c.tunnel, identity_mode=c.identity_mode, kubectl_enabled=c.kubectl_enabled,
        revision=c.revision)


def role_from_proto(msg: roles_pb2.Role) -> Role:
    return Role(name=msg.name, rules=tuple(
        Rule(verbs=tuple(r.verbs), api_groups=tuple(r.api_groups), resources=tuple(r.resources),
             resource_names=tuple(r.resource_names), namespaces=tuple(r.namespaces),
             non_resource_urls=tuple(r.non_resource_urls)) for r in msg.rules))


def role_to_proto(role: Role) -> roles_pb2.Role:
    return roles_pb2.Role(name=role.name, revision=role.revision,
                          rules=[roles_pb2.Rule(**rule.to_snapshot()) for rule in role.rules])


def _moment_from_proto(msg, field: str, where: str) -> datetime.datetime | None:
    if not msg.HasField(field):
        return None
    try:
        return getattr(msg, field).ToDatetime(tzinfo=datetime.timezone.utc)
    except (ValueError, OverflowError):
        raise InvalidArgument(where, "is not a valid time") from None


def _time_from_proto(msg: bindings_pb2.Binding, field: str) -> str:
    moment = _moment_from_proto(msg, field, f"binding.{field}")
    return utc_text(moment) if moment else ""   # second resolution: the stored and signed form


def _time_to_proto(text: str) -> Timestamp | None:
    """Any stored time text (RFC 3339 UTC, with or without fractions); "" is no time."""
    if not text:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(datetime.datetime.fromisoformat(text))
    return stamp


def duration_from_proto(msg, field: str) -> datetime.timedelta | None:
    return getattr(msg, field).ToTimedelta() if msg.HasField(field) else None


def binding_from_proto(msg: bindings_pb2.Binding) -> Binding:
    return Binding(
        name=msg.name, role=msg.role,
        subjects=tuple(Subject(kind=s.kind, name=s.name) for s in msg.subjects),
        clusters=ClusterSelector(names=tuple(msg.clusters.names), labels=dict(msg.clusters.selector)),
        valid_from=_time_from_proto(msg, "valid_from"), valid_until=_time_from_proto(msg, "valid_until"))


def binding_to_proto(b: Binding) -> bindings_pb2.Binding:
    return bindings_pb2.Binding(
        name=b.name, role=b.role, revision=b.revision,
        subjects=[bindings_pb2.Subject(kind=s.kind, name=s.name) for s in b.subjects],
        clusters=bindings_pb2.ClusterSelector(names=b.clusters.names, selector=b.clusters.labels),
        valid_from=_time_to_proto(b.valid_from), valid_until=_time_to_proto(b.valid_until))


def token_to_proto(t: Token) -> tokens_pb2.Token:
    return tokens_pb2.Token(id=t.id, user=t.user, groups=t.groups, service=t.component,
                            description=t.description, revision=t.revision, revoked=t.revoked)


def service_identity_from_proto(msg: tokens_pb2.ServiceIdentity) -> ServiceIdentity:
    return ServiceIdentity(name=msg.name, groups=tuple(msg.groups), description=msg.description)


def service_identity_to_proto(s: ServiceIdentity) -> tokens_pb2.ServiceIdentity:
    return tokens_pb2.ServiceIdentity(name=s.name, groups=s.groups, description=s.description,
                                      revision=s.revision)


def revocation_to_proto(r: Revocation) -> revocations_pb2.Revocation:
    return revocations_pb2.Revocation(kind=r.kind, value=r.value, reason=r.reason, revision=r.revision)


def certificate_to_proto(c: Certificate) -> kubeconfigs_pb2.Certificate:
    return kubeconfigs_pb2.Certificate(serial=c.serial, user=c.user, groups=c.groups, cluster=c.cluster,
                                       expires_at=_time_to_proto(c.expires_at), revision=c.revision,
                                       revoked=c.revoked)


def gateway_to_proto(g: GatewayStatus) -> fleet_pb2.Gateway:
    return fleet_pb2.Gateway(id=g.id, hostname=g.hostname, pid=g.pid, version=g.version, revision=g.revision,
                             applied_at=_time_to_proto(g.applied_at), started_at=_time_to_proto(g.started_at),
                             heartbeat_at=_time_to_proto(g.heartbeat_at))


def event_query_from_proto(msg: audit_pb2.QueryAuditRequest, default_limit: int) -> EventQuery:
    since = _moment_from_proto(msg, "since", "since")
    until = _moment_from_proto(msg, "until", "until")
    return EventQuery(user=msg.user, cluster=msg.cluster, verb=msg.verb, decision=msg.decision,
                      since=utc_text_ms(since) if since else "", until=utc_text_ms(until) if until else "",
                      limit=msg.limit or default_limit)


def gateway_event_to_proto(e: GatewayEvent) -> audit_pb2.AuditEvent:
    return audit_pb2.AuditEvent(id=e.id, time=_time_to_proto(e.time), user=e.user, cluster=e.cluster, verb=e.verb,
                                decision=e.decision, code=e.code, json=e.event)
