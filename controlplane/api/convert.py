"""Protobuf messages ↔ model values. Shapes only: checks live in controlplane.validation."""
from __future__ import annotations

import datetime

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from ..errors import InvalidArgument
from ..fleet import Connectivity, GatewayStatus
from ..model import (AccessRequest, AgentCertificate, Binding, BootstrapToken, BreakGlassPolicy, Certificate, Cluster,
                     ClusterSelector, Conditions, Credential, EventQuery, GatewayEvent, MatchExpression, Refusal,
                     Revocation, Role, Rule, Schedule, ServiceIdentity, Session, Settings, Subject, Token, utc_text,
                     utc_text_ms)
from .v1 import (access_pb2, agents_pb2, audit_pb2, bindings_pb2, clusters_pb2, fleet_pb2, kubeconfigs_pb2,
                 revocations_pb2, roles_pb2, sessions_pb2, settings_pb2, tokens_pb2)


def cluster_from_proto(msg: clusters_pb2.Cluster) -> Cluster:
    cred = msg.credential
    return Cluster(
        name=msg.name, endpoint=msg.endpoint, ca_bundle=msg.ca_bundle,
        credential=Credential(kind=cred.kind, ref=cred.ref, cert_ref=cred.cert_ref, key_ref=cred.key_ref),
        labels=dict(msg.labels), tunnel=msg.tunnel, identity_mode=msg.identity_mode or "impersonate",
        kubectl_enabled=msg.kubectl_enabled if msg.HasField("kubectl_enabled") else True,
        read_only=msg.read_only, upstream_groups=tuple(msg.upstream_groups))


def cluster_to_proto(c: Cluster) -> clusters_pb2.Cluster:
    cred = c.credential
    return clusters_pb2.Cluster(
        name=c.name, endpoint=c.endpoint, ca_bundle=c.ca_bundle,
        credential=clusters_pb2.Credential(kind=cred.kind, ref=cred.ref, cert_ref=cred.cert_ref,
                                           key_ref=cred.key_ref),
        labels=c.labels, tunnel=c.tunnel, identity_mode=c.identity_mode, kubectl_enabled=c.kubectl_enabled,
        read_only=c.read_only, upstream_groups=c.upstream_groups, revision=c.revision)


def role_from_proto(msg: roles_pb2.Role) -> Role:
    return Role(name=msg.name, rules=tuple(
        Rule(verbs=tuple(r.verbs), api_groups=tuple(r.api_groups), resources=tuple(r.resources),
             resource_names=tuple(r.resource_names), namespaces=tuple(r.namespaces),
             non_resource_urls=tuple(r.non_resource_urls)) for r in msg.rules))


def role_to_proto(role: Role) -> roles_pb2.Role:
    return roles_pb2.Role(name=role.name, revision=role.revision,
                          rules=[roles_pb2.Rule(**rule.to_snapshot()) for rule in role.rules])


def moment_from_proto(msg, field: str, where: str) -> datetime.datetime | None:
    if not msg.HasField(field):
        return None
    try:
        return getattr(msg, field).ToDatetime(tzinfo=datetime.timezone.utc)
    except (ValueError, OverflowError):
        raise InvalidArgument(where, "is not a valid time") from None


def _time_from_proto(msg: bindings_pb2.Binding, field: str) -> str:
    moment = moment_from_proto(msg, field, f"binding.{field}")
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


def selector_from_proto(msg: bindings_pb2.ClusterSelector) -> ClusterSelector:
    return ClusterSelector(names=tuple(msg.names), labels=dict(msg.selector), expressions=tuple(
        MatchExpression(key=e.key, operator=e.operator, values=tuple(e.values)) for e in msg.match_expressions))


def selector_to_proto(c: ClusterSelector) -> bindings_pb2.ClusterSelector:
    return bindings_pb2.ClusterSelector(names=c.names, selector=c.labels, match_expressions=[
        bindings_pb2.LabelSelectorRequirement(key=e.key, operator=e.operator, values=e.values)
        for e in c.expressions])


def binding_from_proto(msg: bindings_pb2.Binding) -> Binding:
    """The grant is output only: a binding written through the API is an operator's (kind "binding")."""
    conditions = msg.conditions
    schedule = conditions.schedule
    return Binding(
        name=msg.name, role=msg.role,
        subjects=tuple(Subject(kind=s.kind, name=s.name) for s in msg.subjects),
        clusters=selector_from_proto(msg.clusters),
        valid_from=_time_from_proto(msg, "valid_from"), valid_until=_time_from_proto(msg, "valid_until"),
        effect=msg.effect or "allow",
        conditions=Conditions(source_cidrs=tuple(conditions.source_cidrs), channels=tuple(conditions.channels),
                              schedule=Schedule(days=tuple(schedule.days), start=schedule.start or "00:00",
                                                end=schedule.end or "24:00")
                              if conditions.HasField("schedule") else None))


def binding_to_proto(b: Binding) -> bindings_pb2.Binding:
    schedule = b.conditions.schedule
    return bindings_pb2.Binding(
        name=b.name, role=b.role, revision=b.revision,
        subjects=[bindings_pb2.Subject(kind=s.kind, name=s.name) for s in b.subjects],
        clusters=selector_to_proto(b.clusters),
        valid_from=_time_to_proto(b.valid_from), valid_until=_time_to_proto(b.valid_until), effect=b.effect,
        conditions=bindings_pb2.Conditions(
            source_cidrs=b.conditions.source_cidrs, channels=b.conditions.channels,
            schedule=bindings_pb2.Schedule(days=schedule.days, start=schedule.start, end=schedule.end)
            if schedule is not None else None),
        grant=bindings_pb2.Grant(kind=b.grant.kind, id=b.grant.id or b.name, reason=b.grant.reason))


def token_to_proto(t: Token) -> tokens_pb2.Token:
    return tokens_pb2.Token(id=t.id, user=t.user, groups=t.groups, service=t.component,
                            description=t.description, revision=t.revision, revoked=t.revoked, channel=t.channel,
                            session=t.session)


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
                                       revoked=c.revoked, session=c.session)


def gateway_to_proto(g: GatewayStatus) -> fleet_pb2.Gateway:
    return fleet_pb2.Gateway(id=g.id, hostname=g.hostname, pid=g.pid, version=g.version, revision=g.revision,
                             applied_at=_time_to_proto(g.applied_at), started_at=_time_to_proto(g.started_at),
                             heartbeat_at=_time_to_proto(g.heartbeat_at))


def connectivity_to_proto(c: Connectivity | None) -> clusters_pb2.TunnelConnectivity:
    """None: no live gateway has seen the cluster's agents."""
    if c is None:
        return clusters_pb2.TunnelConnectivity()
    return clusters_pb2.TunnelConnectivity(agents=c.agents, tunnels=c.tunnels, gateways=c.gateways,
                                           last_seen=_time_to_proto(c.last_seen))


def event_query_from_proto(msg: audit_pb2.QueryAuditRequest, default_limit: int) -> EventQuery:
    since = moment_from_proto(msg, "since", "since")
    until = moment_from_proto(msg, "until", "until")
    return EventQuery(user=msg.user, cluster=msg.cluster, verb=msg.verb, decision=msg.decision,
                      since=utc_text_ms(since) if since else "", until=utc_text_ms(until) if until else "",
                      limit=msg.limit or default_limit)


def gateway_event_to_proto(e: GatewayEvent) -> audit_pb2.AuditEvent:
    return audit_pb2.AuditEvent(id=e.id, time=_time_to_proto(e.time), user=e.user, cluster=e.cluster, verb=e.verb,
                                decision=e.decision, code=e.code, json=e.event)


def _seconds(msg, field: str, default: int) -> int:
    """A Duration field in whole seconds (unset: `default`); fractions are refused, not rounded."""
    if not msg.HasField(field):
        return default
    value = getattr(msg, field)
    if value.nanos:
        raise InvalidArgument(field, "must be whole seconds")
    return value.seconds


def _duration(seconds: int) -> Duration:
    return Duration(seconds=seconds)


def settings_from_proto(msg: settings_pb2.Settings) -> Settings:
    defaults, policy = Settings(), msg.break_glass
    return Settings(
        break_glass_enabled=msg.break_glass_enabled if msg.HasField("break_glass_enabled") else True,
        group_compaction=msg.group_compaction, max_exec_sessions=msg.max_exec_sessions, max_watches=msg.max_watches,
        approver_group=msg.approver_group,
        access_request_max_duration=_seconds(msg, "access_request_max_duration",
                                             defaults.access_request_max_duration),
        session_idle_timeout=_seconds(msg, "session_idle_timeout", defaults.session_idle_timeout),
        break_glass=BreakGlassPolicy(role=policy.role, group=policy.group, clusters=selector_from_proto(policy.clusters),
                                     max_duration=_seconds(policy, "max_duration", BreakGlassPolicy().max_duration)))


def settings_to_proto(s: Settings) -> settings_pb2.Settings:
    policy = s.break_glass
    return settings_pb2.Settings(
        break_glass_enabled=s.break_glass_enabled, group_compaction=s.group_compaction,
        max_exec_sessions=s.max_exec_sessions, max_watches=s.max_watches, approver_group=s.approver_group,
        access_request_max_duration=_duration(s.access_request_max_duration),
        session_idle_timeout=_duration(s.session_idle_timeout), revision=s.revision,
        break_glass=settings_pb2.BreakGlassPolicy(role=policy.role, group=policy.group,
                                                  clusters=selector_to_proto(policy.clusters),
                                                  max_duration=_duration(policy.max_duration)))


def seconds_from_proto(msg, field: str) -> int | None:
    """A request's Duration in whole seconds; None when unset."""
    return _seconds(msg, field, 0) if msg.HasField(field) else None


def access_request_to_proto(r: AccessRequest) -> access_pb2.AccessRequest:
    return access_pb2.AccessRequest(
        id=r.id, user=r.user, role=r.role, cluster=r.cluster, duration=_duration(r.duration), reason=r.reason,
        created_at=_time_to_proto(r.created_at), state=r.state, decided_by=r.decided_by,
        decided_at=_time_to_proto(r.decided_at), decision_reason=r.decision_reason, binding=r.binding,
        expires_at=_time_to_proto(r.expires_at), revision=r.revision)


def session_to_proto(s: Session) -> sessions_pb2.Session:
    return sessions_pb2.Session(
        id=s.id, user=s.user, created_at=_time_to_proto(s.created_at), last_seen_at=_time_to_proto(s.last_seen_at),
        idle_timeout=_duration(s.idle_timeout), ended_at=_time_to_proto(s.ended_at), end_reason=s.end_reason,
        revision=s.revision)


def bootstrap_token_to_proto(t: BootstrapToken, secret: str = "") -> agents_pb2.BootstrapToken:
    return agents_pb2.BootstrapToken(id=t.id, cluster=t.cluster, expires_at=_time_to_proto(t.expires_at),
                                     secret=secret, used_at=_time_to_proto(t.used_at), used_by=t.used_by,
                                     revision=t.revision)


def agent_certificate_to_proto(c: AgentCertificate, now: str) -> agents_pb2.AgentCertificate:
    return agents_pb2.AgentCertificate(
        serial=c.serial, cluster=c.cluster, agent_id=c.agent_id, common_name=c.common_name,
        spki_sha256=c.spki_sha256, expires_at=_time_to_proto(c.expires_at), enrolled_by=c.enrolled_by,
        revoked=c.revoked, retired=c.retired, live=c.live_at(now), revision=c.revision)


def refusal_to_proto(r: Refusal) -> agents_pb2.Refusal:
    return agents_pb2.Refusal(id=r.id, at=_time_to_proto(r.at), action=r.action, cluster=r.cluster,
                              subject=r.subject, peer=r.peer, reason=r.reason)
