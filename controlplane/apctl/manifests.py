"""Declared policy for `apctl apply|delete -f`: multi-document YAML, one object per document, its
`kind` (Cluster, Role, Binding) beside the fields of the API message of that kind:

    kind: Cluster
    name: sandbox
    endpoint: https://127.0.0.1:6443
    credential: {kind: token, ref: file:sandbox.token}
    labels: {env: dev}
    ---
    kind: Binding
    name: devs-view
    role: viewer
    subjects: [{kind: group, name: devs}]
    clusters: {selector: {env: dev}}

Apply is idempotent: each object is created, updated (guarded by the revision just read) or left
alone when the store already holds the same, compared through the server's own conversion to
model values so defaults (identity_mode, kubectl_enabled) never look like changes.
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any, Callable

import grpc
import yaml
from google.protobuf import json_format
from google.protobuf.message import Message

from ..api import convert
from ..api.v1 import bindings_pb2, clusters_pb2, roles_pb2
from .connection import Client, UsageError


@dataclass(frozen=True)
class Kind:
    name: str                                   # as written in manifests: "Cluster"
    noun: str                                   # as printed: "cluster/sandbox created"
    message: type[Message]
    model: Callable[[Any], Any]                 # API message → model value (for "unchanged")
    get: Callable[[Client, str], Message]
    create: Callable[[Client, Message], Message]
    update: Callable[[Client, Message, int], Message]
    delete: Callable[[Client, str], Any]


KINDS = [   # in dependency order: apply goes forwards, delete backwards
    Kind("Cluster", "cluster", clusters_pb2.Cluster, convert.cluster_from_proto,
         get=lambda c, name: c.call(c.clusters.GetCluster, clusters_pb2.GetClusterRequest(name=name)),
         create=lambda c, m: c.call(c.clusters.RegisterCluster, clusters_pb2.RegisterClusterRequest(cluster=m)),
         update=lambda c, m, rev: c.call(c.clusters.UpdateCluster,
                                         clusters_pb2.UpdateClusterRequest(cluster=m, expected_revision=rev)),
         delete=lambda c, name: c.call(c.clusters.DeregisterCluster, clusters_pb2.DeregisterClusterRequest(name=name))),
    Kind("Role", "role", roles_pb2.Role, convert.role_from_proto,
         get=lambda c, name: c.call(c.roles.GetRole, roles_pb2.GetRoleRequest(name=name)),
         create=lambda c, m: c.call(c.roles.CreateRole, roles_pb2.CreateRoleRequest(role=m)),
         update=lambda c, m, rev: c.call(c.roles.UpdateRole,
                                         roles_pb2.UpdateRoleRequest(role=m, expected_revision=rev)),
         delete=lambda c, name: c.call(c.roles.DeleteRole, roles_pb2.DeleteRoleRequest(name=name))),
    Kind("Binding", "binding", bindings_pb2.Binding, convert.binding_from_proto,
         get=lambda c, name: c.call(c.bindings.GetBinding, bindings_pb2.GetBindingRequest(name=name)),
         create=lambda c, m: c.call(c.bindings.CreateBinding, bindings_pb2.CreateBindingRequest(binding=m)),
         update=lambda c, m, rev: c.call(c.bindings.UpdateBinding,
                                         bindings_pb2.UpdateBindingRequest(binding=m, expected_revision=rev)),
         delete=lambda c, name: c.call(c.bindings.DeleteBinding, bindings_pb2.DeleteBindingRequest(name=name))),
]
BY_NAME = {kind.name: kind for kind in KINDS}
BY_NOUN = {kind.noun: kind for kind in KINDS} | {kind.noun + "s": kind for kind in KINDS}


def _plain(value: Any) -> Any:
    """YAML reads unquoted times as datetimes; the API's JSON mapping wants RFC 3339 text."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, datetime.datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=datetime.timezone.utc)
        return moment.isoformat().replace("+00:00", "Z")
    return value


def load(text: str, source: str) -> list[tuple[Kind, Message]]:
    """Every object of a manifest, checked for shape before anything is sent; UsageError names
    the document and the problem."""
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UsageError(f"{source}: not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    objects: list[tuple[Kind, Message]] = []
    seen: set[tuple[str, str]] = set()
    for number, document in enumerate(documents, 1):
        if document is None:
            continue   # an empty document (a trailing ---)
        where = f"{source}: document {number}"
        if not isinstance(document, dict):
            raise UsageError(f"{where}: expected a mapping with a kind")
        fields = dict(document)
        kind = BY_NAME.get(fields.pop("kind", None))
        if kind is None:
            raise UsageError(f"{where}: kind must be one of {', '.join(BY_NAME)}")
        try:
            message = json_format.ParseDict(_plain(fields), kind.message())
        except json_format.ParseError as exc:
            raise UsageError(f"{where} ({kind.name}): {str(exc).splitlines()[0]}") from None
        if not message.name:
            raise UsageError(f"{where} ({kind.name}): name is required")
        if (kind.name, message.name) in seen:
            raise UsageError(f"{where}: {kind.noun}/{message.name} is declared twice")
        seen.add((kind.name, message.name))
        objects.append((kind, message))
    if not objects:
        raise UsageError(f"{source}: no objects")
    return sorted(objects, key=lambda item: KINDS.index(item[0]))


def apply_one(client: Client, kind: Kind, desired: Message) -> str:
    """Create, update or leave the object; returns what happened ("created", …)."""
    try:
        current = kind.get(client, desired.name)
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.NOT_FOUND:
            raise
        kind.create(client, desired)
        return "created"
    if kind.model(current) == kind.model(desired):
        return "unchanged"
    kind.update(client, desired, current.revision)
    return "configured"
