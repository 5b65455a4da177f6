"""How each kind of object maps to its table: columns, and the conversions row ↔ model value.

Lists and maps are stored as canonical JSON text (sorted keys), so equal objects are equal rows.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any, Callable

from ..model import (Binding, Certificate, Cluster, ClusterSelector, Credential, Role, Rule, ServiceIdentity, Subject,
                     Token)


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
            int(c.tunnel), c.identity_mode, int(c.kubectl_enabled), c.revision)


def _cluster(row: tuple) -> Cluster:
    name, endpoint, credential, ca_bundle, labels, tunnel, identity_mode, kubectl_enabled, revision = row
    return Cluster(name=name, endpoint=endpoint, credential=Credential(**json.loads(credential)),
                   ca_bundle=ca_bundle, labels=json.loads(labels), tunnel=bool(tunnel),
                   identity_mode=identity_mode, kubectl_enabled=bool(kubectl_enabled), revision=revision)


def _role_row(r: Role) -> tuple:
    return (r.name, _json([rule.to_snapshot() for rule in r.rules]), r.revision)


def _role(row: tuple) -> Role:
    name, rules, revision = row
    return Role(name=name, revision=revision,
                rules=tuple(Rule(**{k: tuple(v) for k, v in rule.items()}) for rule in json.loads(rules)))


def _binding_row(b: Binding) -> tuple:
    return (b.name, b.role, _json([[s.kind, s.name] for s in b.subjects]), _json(list(b.clusters.names)),
            _json(b.clusters.labels), b.valid_from, b.valid_until, b.revision)


def _binding(row: tuple) -> Binding:
    name, role, subjects, names, labels, valid_from, valid_until, revision = row
    return Binding(name=name, role=role, subjects=tuple(Subject(k, n) for k, n in json.loads(subjects)),
                   clusters=ClusterSelector(names=tuple(json.loads(names)), labels=json.loads(labels)),
                   valid_from=valid_from, valid_until=valid_until, revision=revision)


def _service_row(s: ServiceIdentity) -> tuple:
    return (s.name, _json(list(s.groups)), s.description, s.revision)


def _service(row: tuple) -> ServiceIdentity:
    name, groups, description, revision = row
    return ServiceIdentity(name=name, groups=tuple(json.loads(groups)), description=description,
                           revision=revision)


def _token_row(t: Token) -> tuple:
    return (t.id, t.sha256, t.user, _json(list(t.groups)), t.component, t.description, int(t.revoked),
            t.revision)


def _token(row: tuple) -> Token:
    token_id, sha256, user, groups, component, description, revoked, revision = row
    return Token(id=token_id, sha256=sha256, user=user, groups=tuple(json.loads(groups)), component=component,
                 description=description, revoked=bool(revoked), revision=revision)


def _certificate_row(c: Certificate) -> tuple:
    return (c.serial, c.user, _json(list(c.groups)), c.cluster, c.expires_at, c.revision)


def _certificate(row: tuple) -> Certificate:
    serial, user, groups, cluster, expires_at, revision = row
    return Certificate(serial=serial, user=user, groups=tuple(json.loads(groups)), cluster=cluster,
                       expires_at=expires_at, revision=revision)


CLUSTERS = Table("clusters", "cluster",
                 ("name", "endpoint", "credential", "ca_bundle", "labels", "tunnel", "identity_mode",
                  "kubectl_enabled", "revision"), _cluster_row, _cluster)
ROLES = Table("roles", "role", ("name", "rules", "revision"), _role_row, _role)
BINDINGS = Table("bindings", "binding",
                 ("name", "role", "subjects", "cluster_names", "cluster_labels", "valid_from", "valid_until",
                  "revision"), _binding_row, _binding)
SERVICE_IDENTITIES = Table("service_identities", "service identity",
                           ("name", "groups_json", "description", "revision"), _service_row, _service)
TOKENS = Table("tokens", "token",
               ("id", "sha256", "user_name", "groups_json", "component", "description", "revoked", "revision"),
               _token_row, _token)
CERTIFICATES = Table("certificates", "certificate",
                     ("serial", "user_name", "groups_json", "cluster", "expires_at", "revision"),
                     _certificate_row, _certificate)
