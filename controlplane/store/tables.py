"""How each kind of object maps to its table: columns, and the conversions row ↔ model value.

Lists and maps are stored as canonical JSON text (sorted keys), so equal objects are equal rows.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any, Callable

from ..model import (AccessRequest, AgentCertificate, Binding, BootstrapToken, BreakGlassPolicy, Certificate, Cluster,
                     ClusterSelector, Conditions, Credential, Grant, MatchExpression, Refusal, Role, Rule, Schedule,
                     ServiceIdentity, Session, Settings, Subject, Token)


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class Table:
    name: str
    noun: str                          # names the object in messages and audit targets
    columns: tuple[str, ...]           # the first is the key; the last is "revision"
    to_row: Callable[[Any], tuple]
    from_row: Callable[[tuple], Any]

    def row(self, obj: Any, revision: int) -> tuple:
        return self.to_row(replace(obj, revision=revision))


def _cluster_row(c: Cluster) -> tuple:
    return (c.name, c.endpoint, _json(c.credential.to_snapshot()), c.ca_bundle, _json(c.labels),
            int(c.tunnel), c.identity_mode, int(c.kubectl_enabled), int(c.read_only), _json(list(c.upstream_groups)),
            c.revision)


def _cluster(row: tuple) -> Cluster:
    (name, endpoint, credential, ca_bundle, labels, tunnel, identity_mode, kubectl_enabled, read_only,
     upstream_groups, revision) = row
    return Cluster(name=name, endpoint=endpoint, credential=Credential(**json.loads(credential)),
                   ca_bundle=ca_bundle, labels=json.loads(labels), tunnel=bool(tunnel),
                   identity_mode=identity_mode, kubectl_enabled=bool(kubectl_enabled), read_only=bool(read_only),
                   upstream_groups=tuple(json.loads(upstream_groups)), revision=revision)


def _role_row(r: Role) -> tuple:
    return (r.name, _json([rule.to_snapshot() for rule in r.rules]), r.revision)


def _role(row: tuple) -> Role:
    name, rules, revision = row
    return Role(name=name, revision=revision,
                rules=tuple(Rule(**{k: tuple(v) for k, v in rule.items()}) for rule in json.loads(rules)))


def _binding_row(b: Binding) -> tuple:
    grant = {} if b.grant == Grant() else {"kind": b.grant.kind, "id": b.grant.id, "reason": b.grant.reason}
    return (b.name, b.role, _json([[s.kind, s.name] for s in b.subjects]), _json(list(b.clusters.names)),
            _json(b.clusters.labels), b.valid_from, b.valid_until, b.effect,
            _json([e.to_snapshot() for e in b.clusters.expressions]), _json(b.conditions.to_snapshot()),
            _json(grant), b.revision)


def conditions_from_snapshot(data: dict[str, Any]) -> Conditions:
    schedule = data.get("schedule")
    return Conditions(source_cidrs=tuple(data.get("source_cidrs", ())), channels=tuple(data.get("channels", ())),
                      schedule=Schedule(days=tuple(schedule["days"]), start=schedule["start"], end=schedule["end"])
                      if schedule is not None else None)


def _selector(names: list[str], labels: dict[str, str], expressions: list[dict[str, Any]]) -> ClusterSelector:
    return ClusterSelector(names=tuple(names), labels=labels, expressions=tuple(
        MatchExpression(e["key"], e["operator"], tuple(e["values"])) for e in expressions))


def _binding(row: tuple) -> Binding:
    (name, role, subjects, names, labels, valid_from, valid_until, effect, expressions, conditions, grant,
     revision) = row
    return Binding(name=name, role=role, subjects=tuple(Subject(k, n) for k, n in json.loads(subjects)),
                   clusters=_selector(json.loads(names), json.loads(labels), json.loads(expressions)),
                   valid_from=valid_from, valid_until=valid_until, effect=effect,
                   conditions=conditions_from_snapshot(json.loads(conditions)), grant=Grant(**json.loads(grant)),
                   revision=revision)


def _service_row(s: ServiceIdentity) -> tuple:
    return (s.name, _json(list(s.groups)), s.description, s.revision)


def _service(row: tuple) -> ServiceIdentity:
    name, groups, description, revision = row
    return ServiceIdentity(name=name, groups=tuple(json.loads(groups)), description=description,
                           revision=revision)


def _token_row(t: Token) -> tuple:
    return (t.id, t.sha256, t.user, _json(list(t.groups)), t.component, t.description, int(t.revoked),
            t.channel, t.session, t.revision)


def _token(row: tuple) -> Token:
    token_id, sha256, user, groups, component, description, revoked, channel, session, revision = row
    return Token(id=token_id, sha256=sha256, user=user, groups=tuple(json.loads(groups)), component=component,
                 description=description, revoked=bool(revoked), channel=channel, session=session,
                 revision=revision)


def _certificate_row(c: Certificate) -> tuple:
    return (c.serial, c.user, _json(list(c.groups)), c.cluster, c.expires_at, c.session, c.revision)


def _certificate(row: tuple) -> Certificate:
    serial, user, groups, cluster, expires_at, session, revision = row
    return Certificate(serial=serial, user=user, groups=tuple(json.loads(groups)), cluster=cluster,
                       expires_at=expires_at, session=session, revision=revision)


def settings_to_json(s: Settings) -> str:
    policy = s.break_glass
    return _json({"break_glass_enabled": s.break_glass_enabled, "group_compaction": s.group_compaction,
                  "max_exec_sessions": s.max_exec_sessions, "max_watches": s.max_watches,
                  "approver_group": s.approver_group, "access_request_max_duration": s.access_request_max_duration,
                  "session_idle_timeout": s.session_idle_timeout,
                  "break_glass": {"role": policy.role, "group": policy.group, "max_duration": policy.max_duration,
                                  "clusters": {"names": list(policy.clusters.names),
                                               "selector": policy.clusters.labels,
                                               "match_expressions": [e.to_snapshot()
                                                                     for e in policy.clusters.expressions]}}})


def settings_from_json(text: str, revision: int) -> Settings:
    data = json.loads(text)
    policy = data.pop("break_glass", None)
    if policy is not None:
        clusters = policy.pop("clusters")
        data["break_glass"] = BreakGlassPolicy(**policy, clusters=_selector(
            clusters["names"], clusters["selector"], clusters["match_expressions"]))
    return Settings(**data, revision=revision)


def _access_request_row(r: AccessRequest) -> tuple:
    return (r.id, r.user, r.role, r.cluster, r.duration, r.reason, r.created_at, r.state, r.decided_by,
            r.decided_at, r.decision_reason, r.binding, r.expires_at, r.revision)


def _session_row(s: Session) -> tuple:
    return (s.id, s.user, s.created_at, s.last_seen_at, s.idle_timeout, s.ended_at, s.end_reason, s.revision)


CLUSTERS = Table("clusters", "cluster",
                 ("name", "endpoint", "credential", "ca_bundle", "labels", "tunnel", "identity_mode",
                  "kubectl_enabled", "read_only", "upstream_groups", "revision"), _cluster_row, _cluster)
ROLES = Table("roles", "role", ("name", "rules", "revision"), _role_row, _role)
BINDINGS = Table("bindings", "binding",
                 ("name", "role", "subjects", "cluster_names", "cluster_labels", "valid_from", "valid_until",
                  "effect", "cluster_expressions", "conditions", "grant_json", "revision"), _binding_row, _binding)
SERVICE_IDENTITIES = Table("service_identities", "service identity",
                           ("name", "groups_json", "description", "revision"), _service_row, _service)
TOKENS = Table("tokens", "token",
               ("id", "sha256", "user_name", "groups_json", "component", "description", "revoked", "channel",
                "session", "revision"),
               _token_row, _token)
CERTIFICATES = Table("certificates", "certificate",
                     ("serial", "user_name", "groups_json", "cluster", "expires_at", "session", "revision"),
                     _certificate_row, _certificate)
ACCESS_REQUESTS = Table("access_requests", "access request",
                        ("id", "user_name", "role", "cluster", "duration", "reason", "created_at", "state",
                         "decided_by", "decided_at", "decision_reason", "binding", "expires_at", "revision"),
                        _access_request_row, lambda row: AccessRequest(*row))
SESSIONS = Table("sessions", "session",
                 ("id", "user_name", "created_at", "last_seen_at", "idle_timeout", "ended_at", "end_reason",
                  "revision"), _session_row, lambda row: Session(*row))
BOOTSTRAP_TOKENS = Table("bootstrap_tokens", "bootstrap token",
                         ("id", "sha256", "cluster", "expires_at", "used_at", "used_by", "revision"),
                         lambda t: (t.id, t.sha256, t.cluster, t.expires_at, t.used_at, t.used_by, t.revision),
                         lambda row: BootstrapToken(*row))
AGENT_CERTIFICATES = Table("agent_certificates", "agent certificate",
                           ("serial", "cluster", "agent_id", "common_name", "spki_sha256", "expires_at",
                            "enrolled_by", "retired", "revision"),
                           lambda c: (c.serial, c.cluster, c.agent_id, c.common_name, c.spki_sha256, c.expires_at,
                                      c.enrolled_by, int(c.retired), c.revision),
                           lambda row: AgentCertificate(*row[:7], retired=bool(row[7]), revision=row[8]))
REFUSALS = Table("refusals", "refusal", ("id", "at", "action", "cluster", "subject", "peer", "reason"),
                 lambda r: (r.id, r.at, r.action, r.cluster, r.subject, r.peer, r.reason),
                 lambda row: Refusal(*row))
