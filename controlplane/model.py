"""The desired state as plain values: what the store keeps, the API exchanges and snapshots carry.

Each item knows its snapshot form (`to_snapshot`), the dict format of docs/architecture.md, so the
API can check input against the very schema the gateways enforce (validation.py).
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

REVOCATION_KINDS = ("user", "group", "cert_serial", "token", "session")
# revocation kind → the list that names it in a snapshot's "revocations"
SNAPSHOT_REVOCATION_LISTS = {"user": "users", "group": "groups", "cert_serial": "cert_serials",
                             "token": "token_ids", "session": "sessions"}


def utc_text(moment: datetime.datetime) -> str:
    """The one time format stored and signed: RFC 3339 UTC to the second (sorts as text)."""
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_text_ms(moment: datetime.datetime) -> str:
    """Audit event times: RFC 3339 UTC to the millisecond (also sorts as text)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.astimezone(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Credential:
    kind: str                 # "token" (ref) | "client_cert" (cert_ref, key_ref)
    ref: str = ""
    cert_ref: str = ""
    key_ref: str = ""

    def to_snapshot(self) -> dict[str, str]:
        if self.kind == "client_cert":
            return {"kind": self.kind, "cert_ref": self.cert_ref, "key_ref": self.key_ref}
        return {"kind": self.kind, "ref": self.ref}


# A tunnel cluster's agent dials its API server and holds its credential; the gateway uses neither
# (tunnel/gateway.py). The snapshot schema still wants both, so a tunnel cluster registered without
# them carries these stand-ins: the in-cluster API server's name and a reference nothing resolves.
TUNNEL_ENDPOINT = "https://kubernetes.default.svc"
TUNNEL_CREDENTIAL = Credential(kind="token", ref="env:ACCESSPOINT_AGENT_HOLDS_THE_CREDENTIAL")


@dataclass(frozen=True)
class Cluster:
    name: str
    endpoint: str
    credential: Credential
    ca_bundle: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    tunnel: bool = False
    identity_mode: str = "impersonate"
    kubectl_enabled: bool = True
    read_only: bool = False                   # only get/list/watch pass
    upstream_groups: tuple[str, ...] = ()     # groups the cluster's own RBAC names (group compaction keeps them)
    revision: int = 0         # the revision that last changed it (optimistic concurrency)

    def to_snapshot(self) -> dict[str, Any]:
        endpoint, credential = self.endpoint, self.credential
        if self.tunnel:
            endpoint = endpoint or TUNNEL_ENDPOINT
            credential = credential if credential.kind else TUNNEL_CREDENTIAL
        data = {"name": self.name, "endpoint": endpoint, "tunnel": self.tunnel,
                "ca_bundle": self.ca_bundle, "credential": credential.to_snapshot(),
                "labels": dict(self.labels), "identity_mode": self.identity_mode,
                "kubectl_enabled": self.kubectl_enabled}
        # docs/policy.md fields are written only when they differ from their default (see there).
        if self.read_only:
            data["read_only"] = True
        if self.upstream_groups:
            data["upstream_groups"] = list(self.upstream_groups)
        return data


@dataclass(frozen=True)
class Rule:
    verbs: tuple[str, ...]
    api_groups: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    resource_names: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    non_resource_urls: tuple[str, ...] = ()

    def to_snapshot(self) -> dict[str, list[str]]:
        return {"verbs": list(self.verbs), "api_groups": list(self.api_groups),
                "resources": list(self.resources), "resource_names": list(self.resource_names),
                "namespaces": list(self.namespaces), "non_resource_urls": list(self.non_resource_urls)}


@dataclass(frozen=True)
class Role:
    name: str
    rules: tuple[Rule, ...]
    revision: int = 0

    def to_snapshot(self) -> dict[str, Any]:
        return {"name": self.name, "rules": [rule.to_snapshot() for rule in self.rules]}


@dataclass(frozen=True)
class Subject:
    kind: str                 # "user" | "group" | "service"
    name: str


SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
CHANNELS = ("kubectl", "terminal")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
EFFECTS = ("allow", "deny")
GRANT_KINDS = ("binding", "access_request", "break_glass")


@dataclass(frozen=True)
class MatchExpression:
    key: str
    operator: str             # one of SELECTOR_OPERATORS
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        """Kubernetes label-selector semantics: NotIn and DoesNotExist match a cluster without the key."""
        if self.operator == "In":
            return labels.get(self.key) in self.values
        if self.operator == "NotIn":
            return labels.get(self.key) not in self.values
        if self.operator == "Exists":
            return self.key in labels
        return self.key not in labels

    def to_snapshot(self) -> dict[str, Any]:
        return {"key": self.key, "operator": self.operator, "values": list(self.values)}


@dataclass(frozen=True)
class ClusterSelector:
    names: tuple[str, ...] = ()               # "*" selects every cluster
    labels: dict[str, str] = field(default_factory=dict)  # every key=value must match
    expressions: tuple[MatchExpression, ...] = ()         # ANDed with labels

    def is_empty(self) -> bool:
        return not self.names and not self.labels and not self.expressions

    def selects(self, cluster: Cluster) -> bool:
        """The gateway's reading (docs/policy.md): a listed name, or labels and expressions all holding."""
        if "*" in self.names or cluster.name in self.names:
            return True
        if not self.labels and not self.expressions:
            return False
        return all(cluster.labels.get(key) == value for key, value in self.labels.items()) and \
            all(expression.matches(cluster.labels) for expression in self.expressions)

    def to_snapshot(self) -> dict[str, Any]:
        data: dict[str, Any] = {"names": list(self.names), "selector": dict(self.labels)}
        if self.expressions:
            data["match_expressions"] = [e.to_snapshot() for e in self.expressions]
        return data


@dataclass(frozen=True)
class Schedule:
    days: tuple[str, ...] = ()   # subset of WEEKDAYS; empty: every day
    start: str = ""              # "HH:MM" UTC, start < end
    end: str = ""


@dataclass(frozen=True)
class Conditions:
    """ABAC conditions of a binding; each unset one holds always."""

    source_cidrs: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()
    schedule: Schedule | None = None

    def to_snapshot(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.source_cidrs:
            data["source_cidrs"] = list(self.source_cidrs)
        if self.channels:
            data["channels"] = list(self.channels)
        if self.schedule is not None:
            data["schedule"] = {"days": list(self.schedule.days), "start": self.schedule.start,
                                "end": self.schedule.end}
        return data


@dataclass(frozen=True)
class Grant:
    """Why a binding exists: an operator wrote it (kind "binding"), or an approved access request
    or a break-glass activation (id names it) did."""

    kind: str = "binding"     # one of GRANT_KINDS
    id: str = ""
    reason: str = ""


@dataclass(frozen=True)
class Binding:
    name: str
    role: str
    subjects: tuple[Subject, ...]
    clusters: ClusterSelector
    valid_from: str = ""      # utc_text or "" (no bound)
    valid_until: str = ""
    effect: str = "allow"     # one of EFFECTS; deny beats allow
    conditions: Conditions = Conditions()
    grant: Grant = Grant()
    revision: int = 0

    def expired_at(self, moment: str) -> bool:
        """Its window has wholly passed at `moment` (it can never apply again)."""
        return bool(self.valid_until) and self.valid_until <= moment

    def to_snapshot(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "role": self.role,
                                "subjects": [{"kind": s.kind, "name": s.name} for s in self.subjects],
                                "clusters": self.clusters.to_snapshot()}
        if self.effect != "allow":
            data["effect"] = self.effect
        if self.valid_from:
            data["valid_from"] = self.valid_from
        if self.valid_until:
            data["valid_until"] = self.valid_until
        conditions = self.conditions.to_snapshot()
        if conditions:
            data["conditions"] = conditions
        if self.grant.kind != "binding":
            data["grant"] = {"kind": self.grant.kind, "id": self.grant.id, "reason": self.grant.reason}
        return data


@dataclass(frozen=True)
class ServiceIdentity:
    name: str
    groups: tuple[str, ...] = ()
    description: str = ""
    revision: int = 0

    @property
    def user(self) -> str:
        """The user name a service's token authenticates as (and the cluster sees)."""
        return f"service:{self.name}"


@dataclass(frozen=True)
class Token:
    id: str
    sha256: str               # hex digest of the token; the token itself is never stored
    user: str
    groups: tuple[str, ...] = ()
    component: str = ""       # the service identity's name for a service token
    description: str = ""
    channel: str = "kubectl"  # one of CHANNELS: the browser terminal's tokens say "terminal"
    session: str = ""         # the console session it is bound to, if any
    revision: int = 0         # revision that issued it
    revoked: bool = False

    def to_snapshot(self) -> dict[str, Any]:
        data = {"id": self.id, "sha256": self.sha256, "user": self.user,
                "groups": list(self.groups), "component": self.component or None}
        if self.channel != "kubectl":
            data["channel"] = self.channel
        if self.session:
            data["session"] = self.session
        return data


@dataclass(frozen=True)
class Revocation:
    kind: str                 # one of REVOCATION_KINDS
    value: str
    reason: str = ""
    revision: int = 0


@dataclass(frozen=True)
class AuditEntry:
    revision: int             # after; the revision before is revision - 1 (one counter, no gaps)
    actor: str
    action: str               # e.g. "clusters.register"
    target: str               # e.g. "cluster/sandbox"
    at: str


@dataclass(frozen=True)
class Certificate:
    """A client certificate the control plane signed (the certificate itself is not kept)."""

    serial: str               # lower-case hex: the form revocations and gateways compare
    user: str
    groups: tuple[str, ...]
    cluster: str              # the cluster its kubeconfig points at
    expires_at: str           # utc_text
    session: str = ""         # the console session it is bound to (URI SAN), if any
    revision: int = 0         # the revision that recorded it
    revoked: bool = False     # derived: a cert_serial revocation names it


@dataclass(frozen=True)
class BootstrapToken:
    """A one-time token an agent exchanges for its certificate (only its SHA-256 is stored)."""

    id: str
    sha256: str
    cluster: str
    expires_at: str           # utc_text
    used_at: str = ""         # when an enrollment spent it
    used_by: str = ""         # the serial of the certificate it bought
    revision: int = 0


@dataclass(frozen=True)
class AgentCertificate:
    """A tunnel agent's client certificate, as recorded at enrollment or renewal."""

    serial: str               # lower-case hex, as `cert_serial` revocations name it
    cluster: str
    agent_id: str             # stays the same across renewals (the CN names it)
    common_name: str
    spki_sha256: str          # hex: the snapshot's `spki-sha256:` identity
    expires_at: str           # utc_text
    enrolled_by: str          # "bootstrap/<token id>" or "renewal/<serial>"
    retired: bool = False     # its cluster was deregistered: never valid again, even for a namesake
    revision: int = 0
    revoked: bool = False     # derived: a cert_serial revocation names it

    def live_at(self, moment: str) -> bool:
        return not self.retired and not self.revoked and self.expires_at > moment


@dataclass(frozen=True)
class Refusal:
    """A refused call that is no mutation (an agent's enrollment or renewal): audited apart from
    the revision-bumping mutation audit, so a refusal never makes a revision."""

    id: str
    at: str                   # RFC 3339 UTC to the millisecond
    action: str               # e.g. "agents.enroll"
    cluster: str              # as the caller named it
    subject: str              # what it presented: "bootstrap/<id>", "certificate/<serial>", "unknown …"
    peer: str                 # the caller's address as gRPC saw it
    reason: str               # the message the caller got


@dataclass(frozen=True)
class GatewayEvent:
    """One request as a gateway audited it; the columns the audit query filters on, plus the
    whole event as the gateway wrote it."""

    id: str                   # the gateway's request id: what makes a replay a no-op
    time: str                 # RFC 3339 UTC to the millisecond (sorts as text)
    user: str
    cluster: str
    verb: str
    decision: str             # "allow" | "deny" | "error"
    code: int
    event: str                # the JSON line


@dataclass(frozen=True)
class EventQuery:
    """Filters of the audit query: empty means any; times as GatewayEvent.time."""

    user: str = ""
    cluster: str = ""
    verb: str = ""
    decision: str = ""
    since: str = ""           # inclusive
    until: str = ""           # exclusive
    limit: int = 100


@dataclass(frozen=True)
class BreakGlassPolicy:
    """Who may self-activate which role on which clusters, for how long at most."""

    role: str = ""            # "": break-glass is not configured
    group: str = ""           # members may activate
    clusters: ClusterSelector = ClusterSelector()
    max_duration: int = 3600  # seconds


@dataclass(frozen=True)
class Settings:
    """Fleet-wide policy settings: the first four travel in the snapshot, the rest is the control
    plane's own policy (who approves access requests, break-glass, console sessions)."""

    break_glass_enabled: bool = True
    group_compaction: bool = False
    max_exec_sessions: int = 0               # per principal per gateway worker; 0: no cap
    max_watches: int = 0
    approver_group: str = ""                 # members approve or deny access requests; "": nobody
    access_request_max_duration: int = 8 * 3600   # seconds
    break_glass: BreakGlassPolicy = BreakGlassPolicy()
    session_idle_timeout: int = 3600         # seconds a console session lives without a touch
    revision: int = 0

    def to_snapshot(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if not self.break_glass_enabled:
            data["break_glass_enabled"] = False
        if self.group_compaction:
            data["group_compaction"] = True
        if self.max_exec_sessions:
            data["max_exec_sessions"] = self.max_exec_sessions
        if self.max_watches:
            data["max_watches"] = self.max_watches
        return data


ACCESS_REQUEST_STATES = ("pending", "approved", "denied")


@dataclass(frozen=True)
class AccessRequest:
    id: str
    user: str
    role: str
    cluster: str
    duration: int             # seconds
    reason: str
    created_at: str
    state: str = "pending"    # one of ACCESS_REQUEST_STATES
    decided_by: str = ""      # the approver's user name
    decided_at: str = ""
    decision_reason: str = ""
    binding: str = ""         # the binding an approval wrote
    expires_at: str = ""      # its valid_until
    revision: int = 0


@dataclass(frozen=True)
class Session:
    """A console session: a person's login to the portal. Credentials bound to it work only
    while it is active; logout and the idle timeout end it and revoke it fleet-wide."""

    id: str
    user: str
    created_at: str
    last_seen_at: str
    idle_timeout: int         # seconds
    ended_at: str = ""
    end_reason: str = ""      # "logout" | "idle timeout"
    revision: int = 0

    def idle_until(self) -> str:
        seen = datetime.datetime.fromisoformat(self.last_seen_at)
        return utc_text(seen + datetime.timedelta(seconds=self.idle_timeout))


@dataclass(frozen=True)
class State:
    """Everything in the store at one revision: the input of a snapshot."""

    revision: int
    committed_at: str
    clusters: tuple[Cluster, ...]
    roles: tuple[Role, ...]
    bindings: tuple[Binding, ...]
    tokens: tuple[Token, ...]
    revocations: tuple[Revocation, ...]
    settings: Settings = Settings()
    agent_certificates: tuple[AgentCertificate, ...] = ()   # with `revoked` derived
