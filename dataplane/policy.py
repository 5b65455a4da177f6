"""Edge RBAC: the snapshot's roles and bindings compiled into a per-cluster, per-subject index.

Rule semantics follow Kubernetes' rbac/v1 `RuleAllows` (verbs, API groups, resources with
`*/sub`, resource names, non-resource URL globs) plus two AccessPoint extensions: `namespaces`
(empty = all; cluster-scoped requests need an empty list) and `res/*` (any subresource of res).
A `CompiledPolicy` belongs to one snapshot; its decision cache dies with it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Protocol

from dataplane.identity import Identity

if TYPE_CHECKING:
    from dataplane.snapshot import Cluster

DECISION_CACHE_LIMIT = 100_000
ALL = "*"


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
    reason: str               # e.g. 'binding "devs-view" (role "viewer")' or 'no rule allows'
    binding: str = ""
    role: str = ""


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


@dataclass(frozen=True)
class Rule:
    verbs: frozenset[str]
    api_groups: frozenset[str]
    resources: frozenset[str]
    resource_names: frozenset[str]
    namespaces: frozenset[str]
    non_resource_urls: tuple[str, ...]

    @classmethod
    def from_data(cls, rule: Mapping[str, Any]) -> "Rule":
        return cls(
            verbs=frozenset(rule.get("verbs", ())),
            api_groups=frozenset(rule.get("api_groups", ())),
            resources=frozenset(rule.get("resources", ())),
            resource_names=frozenset(rule.get("resource_names", ())),
            namespaces=frozenset(rule.get("namespaces", ())),
            non_resource_urls=tuple(rule.get("non_resource_urls", ())),
        )

    def allows(self, info: RequestAttributes) -> bool:
        if not (ALL in self.verbs or info.verb in self.verbs):
            return False
        if not info.is_resource_request:
            return self._url_matches(info.path)
        return (
            (ALL in self.api_groups or info.api_group in self.api_groups)
            and self._resource_matches(info.resource, info.subresource)
            # As in Kubernetes: a named rule never matches a request without a name (create, list).
            and (not self.resource_names or info.name in self.resource_names)
            and self._namespace_matches(info.namespace)
        )

    def _resource_matches(self, resource: str, subresource: str) -> bool:
        resources = self.resources
        if ALL in resources:
            return True
        if not subresource:
            return resource in resources
        return (
            f"{resource}/{subresource}" in resources
            or f"*/{subresource}" in resources
            or f"{resource}/*" in resources
        )

    def _namespace_matches(self, namespace: str) -> bool:
        if not self.namespaces:
            return True
        # A namespace-restricted rule must not grant cluster-scoped requests (that would reach
        # every namespace at once, e.g. list pods across all namespaces).
        return bool(namespace) and (ALL in self.namespaces or namespace in self.namespaces)

    def _url_matches(self, path: str) -> bool:
        for pattern in self.non_resource_urls:
            if pattern == ALL or pattern == path:
                return True
            if pattern.endswith(ALL) and path.startswith(pattern.rstrip(ALL)):
                return True
        return False


@dataclass(frozen=True)
class _Grant:
    """One binding as it applies on a cluster: its order in the snapshot decides ties."""

    order: int
    binding: str
    role: str
    rules: tuple[Rule, ...]


def selector_matches(selector: Mapping[str, Any], cluster: "Cluster") -> bool:
    """A binding's `clusters` selector: listed names (`*` = all) or every label key=value."""
    names = selector.get("names") or ()
    if ALL in names or cluster.name in names:
        return True
    labels = selector.get("selector") or {}
    # An empty selector selects nothing: granting every cluster must be spelled `names: ["*"]`.
    return bool(labels) and all(cluster.labels.get(key) == value for key, value in labels.items())


class CompiledPolicy:
    def __init__(self, snapshot_data: Mapping[str, Any], clusters: Mapping[str, "Cluster"]):
        roles = {role["name"]: tuple(Rule.from_data(r) for r in role.get("rules", ()))
                 for role in snapshot_data.get("roles", ())}
        # cluster name → subject key ("user:bob", "group:devs", "service:cd") → grants in order
        self._index: dict[str, dict[str, list[_Grant]]] = {name: {} for name in clusters}
        for order, binding in enumerate(snapshot_data.get("bindings", ())):
            grant = _Grant(order, binding["name"], binding["role"], roles[binding["role"]])
            selector = binding.get("clusters") or {}
            for cluster in clusters.values():
                if not selector_matches(selector, cluster):
                    continue
                by_subject = self._index[cluster.name]
                for subject in binding.get("subjects", ()):
                    by_subject.setdefault(f"{subject['kind']}:{subject['name']}", []).append(grant)
        self._cache: dict[tuple, Decision] = {}

    def decide(self, identity: Identity, cluster: "Cluster", info: RequestAttributes) -> Decision:
        key = (
            identity.user, identity.groups, identity.component, cluster.name,
            info.is_resource_request, info.verb, info.api_group, info.resource, info.subresource,
            info.namespace, info.name, "" if info.is_resource_request else info.path,
        )
        decision = self._cache.get(key)
        if decision is None:
            decision = self._evaluate(identity, cluster, info)
            if len(self._cache) >= DECISION_CACHE_LIMIT:
                self._cache.clear()
            self._cache[key] = decision
        return decision

    def decide_impersonation(self, identity: Identity, cluster: "Cluster", resource: str, name: str,
                             namespace: str = "") -> Decision:
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
        return self.decide(identity, cluster, attributes)

    def _evaluate(self, identity: Identity, cluster: "Cluster", info: RequestAttributes) -> Decision:
        by_subject = self._index.get(cluster.name)
        if by_subject is None:
            return Decision(False, f"cluster {cluster.name!r} is not in this snapshot")
        grants: list[_Grant] = []
        for subject in subject_keys(identity):
            grants.extend(by_subject.get(subject, ()))
        grants.sort(key=lambda grant: grant.order)  # the first binding in snapshot order names the allow
        for grant in grants:
            if any(rule.allows(info) for rule in grant.rules):
                return Decision(True, f'binding "{grant.binding}" (role "{grant.role}")',
                                grant.binding, grant.role)
        return Decision(False, f"no binding allows {describe(info)} on cluster {cluster.name!r}")


def subject_keys(identity: Identity) -> list[str]:
    keys = [f"user:{identity.user}"]
    keys += [f"group:{group}" for group in identity.groups]
    if identity.component:
        keys.append(f"service:{identity.component}")
    return keys


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


def forbidden_message(identity: Identity, info: RequestAttributes) -> str:
    """The message of the API server's 403 Status: apierrors.NewForbidden around
    responsewriters.forbiddenMessage (k8s.io/apiserver, endpoints/handlers/responsewriters)."""
    user = go_quote(identity.user)
    if not info.is_resource_request:
        detail = f"User {user} cannot {info.verb} path {go_quote(info.path)}"
    else:
        resource = f"{info.resource}/{info.subresource}" if info.subresource else info.resource
        detail = f"User {user} cannot {info.verb} resource {go_quote(resource)} in API group {go_quote(info.api_group)}"
        detail += f" in the namespace {go_quote(info.namespace)}" if info.namespace else " at the cluster scope"
    detail = detail.translate(_HTML_SANITISER)
    group_resource = info.resource if not info.api_group else f"{info.resource}.{info.api_group}"
    if not info.is_resource_request or not group_resource:
        return f"forbidden: {detail}"
    if not info.name:
        return f"{group_resource} is forbidden: {detail}"
    return f"{group_resource} {go_quote(info.name)} is forbidden: {detail}"
