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
    revision: int = 0         # the revision that last changed it (optimistic concurrency)

    def to_snapshot(self) -> dict[str, Any]:
        return {"name": self.name, "endpoint": self.endpoint, "tunnel": self.tunnel,
                "ca_bundle": self.ca_bundle, "credential": self.credential.to_snapshot(),
                "labels": dict(self.labels), "identity_mode": self.identity_mode,
                "kubectl_enabled": self.kubectl_enabled}


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


@dataclass(frozen=True)
class ClusterSelector:
    names: tuple[str, ...] = ()               # "*" selects every cluster
    labels: dict[str, str] = field(default_factory=dict)  # every key=value must match


@dataclass(frozen=True)
class Binding:
    name: str
    role: str
    subjects: tuple[Subject, ...]
    clusters: ClusterSelector
    valid_from: str = ""      # utc_text or "" (no bound)
    valid_until: str = ""
    revision: int = 0

    def active_at(self, moment: str) -> bool:
        return (not self.valid_from or self.valid_from <= moment) and \
               (not self.valid_until or moment < self.valid_until)

    def to_snapshot(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role,
                "subjects": [{"kind": s.kind, "name": s.name} for s in self.subjects],
                "clusters": {"names": list(self.clusters.names), "selector": dict(self.clusters.labels)}}


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
    revision: int = 0         # revision that issued it
    revoked: bool = False

    def to_snapshot(self) -> dict[str, Any]:
        return {"id": self.id, "sha256": self.sha256, "user": self.user,
                "groups": list(self.groups), "component": self.component or None}


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
    revision: int = 0         # the revision that recorded it
    revoked: bool = False     # derived: a cert_serial revocation names it


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
class State:
    """Everything in the store at one revision: the input of a snapshot."""

    revision: int
    committed_at: str
    clusters: tuple[Cluster, ...]
    roles: tuple[Role, ...]
    bindings: tuple[Binding, ...]
    tokens: tuple[Token, ...]
    revocations: tuple[Revocation, ...]
