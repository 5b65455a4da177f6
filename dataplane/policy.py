"""Edge policy: the snapshot's roles and bindings (docs/policy.md) compiled into an index by the
native backend (native/policy.py), and its results turned into `Decision`s with provenance.

Rule semantics follow Kubernetes' rbac/v1 `RuleAllows` (verbs, API groups, resources with
`*/sub`, resource names, non-resource URL globs) plus two AccessPoint extensions: `namespaces`
(empty = all; cluster-scoped requests need an empty list) and `res/*` (any subresource of res).
A `CompiledPolicy` belongs to one snapshot; its decision cache dies with it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Protocol

from dataplane.identity import Identity
from native.policy import KUBECTL_DISABLED, NO_MATCH, READ_ONLY, UNKNOWN_CLUSTER, PolicyIndex

if TYPE_CHECKING:
    from dataplane.snapshot import Cluster

DECISION_CACHE_LIMIT = 100_000
# kept by group compaction whatever policy names: Kubernetes itself grants by it
ALWAYS_FORWARDED_GROUPS = frozenset({"system:authenticated"})


class RequestAttributes(Protocol):
    """What `decide` reads of `native.requestinfo.RequestInfo`."""

    is_resource_request: bool
    path: str
    verb: str
    api_group: str
    namespace: str
    resource: str
    subresource: str
    name: str


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str               # e.g. 'binding "devs-view" (role "viewer")' or 'no binding allows …'
    binding: str = ""         # provenance: the binding that decided ("" when no binding did)
    role: str = ""
    effect: str = ""          # "allow" | "deny" of that binding
    grant_kind: str = ""      # "binding" | "access_request" | "break_glass"
    grant_id: str = ""        # the access request or break-glass activation (a binding: its name)
    break_glass: bool = False  # a break-glass grant allowed the request
    explained: bool = False   # the reason is worth showing the caller (kill switch, deny binding)

    def decided_by(self) -> dict[str, str]:
        """The audit event's `decision_by` (empty when no binding decided)."""
        if not self.binding:
            return {}
        return {"binding": self.binding, "role": self.role, "effect": self.effect,
                "grant_kind": self.grant_kind, "grant_id": self.grant_id}


@dataclass(frozen=True)
class _Attributes:
    """Request attributes built here (impersonation checks); same shape as RequestInfo."""

    verb: str
    api_group: str
    resource: str
    subresource: str = ""
    name: str = ""
    namespace: str = ""
    path: str = ""
    is_resource_request: bool = True


def _binding_decision(binding: Mapping[str, Any]) -> Decision:
    grant = binding.get("grant") or {}
    kind = grant.get("kind", "binding")
    grant_id = grant.get("id") or binding["name"]
    deny = binding.get("effect", "allow") == "deny"
    name, role = binding["name"], binding["role"]
    reason = f'{"deny binding" if deny else "binding"} "{name}" (role "{role}")'
    if kind != "binding":
        reason += f' from {kind.replace("_", " ")} "{grant_id}"'
    return Decision(allowed=not deny, reason=reason, binding=name, role=role,
                    effect="deny" if deny else "allow", grant_kind=kind, grant_id=grant_id,
                    break_glass=kind == "break_glass" and not deny, explained=deny)


class CompiledPolicy:
    def __init__(self, snapshot_data: Mapping[str, Any]):
        self._index = PolicyIndex(snapshot_data, DECISION_CACHE_LIMIT)
        bindings = snapshot_data.get("bindings", ())
        # one Decision per binding, built once: a cache hit allocates nothing
        self._decisions = tuple(_binding_decision(binding) for binding in bindings)
        settings = snapshot_data.get("settings") or {}
        self.group_compaction: bool = settings.get("group_compaction", False)
        self.max_exec_sessions: int = settings.get("max_exec_sessions", 0)
        self.max_watches: int = settings.get("max_watches", 0)
        self._named_groups = frozenset(subject["name"] for binding in bindings
                                       for subject in binding.get("subjects", ()) if subject["kind"] == "group")
        self._upstream_groups = {c["name"]: frozenset(c.get("upstream_groups", ()))
                                 for c in snapshot_data.get("clusters", ())}
        # Decisions that change with the clock alone (validity windows, schedules): live streams
        # decided under this policy must be looked at again as time passes, not only on a swap.
        self.time_dependent: bool = any(
            binding.get("valid_from") or binding.get("valid_until")
            or (binding.get("conditions") or {}).get("schedule") for binding in bindings)

    @property
    def cache_size(self) -> int:
        return self._index.cache_size

    def decide(self, identity: Identity, cluster: "Cluster", info: RequestAttributes, *,
               source: str = "", now: float | None = None) -> Decision:
        """Decide `info` by `identity` on `cluster`, asked from address `source` at `now`."""
        code = self._index.decide(identity.user, identity.groups, identity.component, identity.channel,
                                  cluster.name, info, source, time.time() if now is None else now)
        if code >= 0:
            return self._decisions[code]
        if code == NO_MATCH:
            return Decision(False, f"no binding allows {describe(info)} on cluster {cluster.name!r}")
        if code == KUBECTL_DISABLED:
            return Decision(False, f'cluster "{cluster.name}" has kubectl access disabled', explained=True)
        if code == READ_ONLY:
            return Decision(False, f'cluster "{cluster.name}" is read-only', explained=True)
        assert code == UNKNOWN_CLUSTER, code
        return Decision(False, f"cluster {cluster.name!r} is not in this snapshot")

    def decide_impersonation(self, identity: Identity, cluster: "Cluster", resource: str, name: str,
                             namespace: str = "", *, source: str = "", now: float | None = None) -> Decision:
        """May `identity` send `Impersonate-*` for `resource` (users, groups, uids,
        serviceaccounts, userextras/<key>) with value `name`? Mirrors Kubernetes' checks."""
        base, _, subresource = resource.partition("/")
        if base in ("users", "groups", "serviceaccounts") and not subresource:
            api_group = ""
        elif (base == "uids" and not subresource) or (base == "userextras" and subresource):
            api_group = "authentication.k8s.io"
        else:
            return Decision(False, f"unknown impersonation resource {resource!r}")
        attributes = _Attributes(verb="impersonate", api_group=api_group, resource=base,
                                 subresource=subresource, name=name, namespace=namespace)
        return self.decide(identity, cluster, attributes, source=source, now=now)

    def upstream_groups(self, groups: tuple[str, ...], cluster: "Cluster") -> tuple[str, ...]:
        """The caller's groups to impersonate upstream: with settings.group_compaction, only those
        that some binding names or the cluster's own RBAC names (upstream_groups)."""
        if not self.group_compaction:
            return groups
        cluster_groups = self._upstream_groups.get(cluster.name, frozenset())
        return tuple(group for group in groups if group in self._named_groups or group in cluster_groups
                     or group in ALWAYS_FORWARDED_GROUPS)


def describe(info: RequestAttributes) -> str:
    """Short text of the request attributes for deny reasons and logs."""
    if not info.is_resource_request:
        return f"{info.verb} {info.path}"
    resource = f"{info.resource}/{info.subresource}" if info.subresource else info.resource
    if info.api_group:
        resource = f"{resource}.{info.api_group}"
    text = f"{info.verb} {resource}"
    if info.name:
        text += f" {info.name!r}"
    return text + (f" in namespace {info.namespace!r}" if info.namespace else " at the cluster scope")


# -- Kubernetes' Forbidden message ----------------------------------------------------------------

_GO_ESCAPES = {"\a": r"\a", "\b": r"\b", "\f": r"\f", "\n": r"\n", "\r": r"\r", "\t": r"\t",
               "\v": r"\v", "\\": "\\\\", '"': '\\"'}
# The API server replaces these so that an error never looks like HTML; quotes stay.
_HTML_SANITISER = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})


def go_quote(text: str) -> str:
    """Go's strconv.Quote (`%q`): kubectl users see exactly what the API server would print."""
    out = ['"']
    for char in text:
        if char in _GO_ESCAPES:
            out.append(_GO_ESCAPES[char])
        elif char.isprintable():  # same classes as Go's unicode.IsPrint (L, M, N, P, S, ASCII space)
            out.append(char)
        elif ord(char) < 0x80:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) <= 0xFFFF:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    out.append('"')
    return "".join(out)


def forbidden_message(identity: Identity, info: RequestAttributes, reason: str = "") -> str:
    """The message of the API server's 403 Status: apierrors.NewForbidden around
    responsewriters.forbiddenMessage (k8s.io/apiserver, endpoints/handlers/responsewriters),
    which appends the authorizer's `reason` after ": " when there is one."""
    user = go_quote(identity.user)
    if not info.is_resource_request:
        detail = f"User {user} cannot {info.verb} path {go_quote(info.path)}"
    else:
        resource = f"{info.resource}/{info.subresource}" if info.subresource else info.resource
        detail = f"User {user} cannot {info.verb} resource {go_quote(resource)} in API group {go_quote(info.api_group)}"
        detail += f" in the namespace {go_quote(info.namespace)}" if info.namespace else " at the cluster scope"
    if reason:
        detail += f": {reason}"
    detail = detail.translate(_HTML_SANITISER)
    group_resource = info.resource if not info.api_group else f"{info.resource}.{info.api_group}"
    if not info.is_resource_request or not group_resource:
        return f"forbidden: {detail}"
    if not info.name:
        return f"{group_resource} is forbidden: {detail}"
    return f"{group_resource} {go_quote(info.name)} is forbidden: {detail}"
