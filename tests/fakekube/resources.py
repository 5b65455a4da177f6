"""The resource types this fake serves: one table that discovery, openapi, RBAC and REST share."""
from __future__ import annotations

from dataclasses import dataclass, field

READ_VERBS = ("get", "list", "watch")
ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class Subresource:
    name: str
    kind: str
    verbs: tuple[str, ...]
    group: str = ""            # of the response kind, when it differs from the parent's
    version: str = ""


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    verbs: tuple[str, ...] = ALL_VERBS
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[Subresource, ...] = ()
    # Fields a fieldSelector may name, beyond metadata.name / metadata.namespace.
    field_labels: tuple[str, ...] = ()
    has_status: bool = False   # main-resource writes keep .status; the status subresource only writes it
    schema_name: str = ""      # OpenAPI definition name

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_resource(self) -> tuple[str, str]:
        return (self.group, self.plural)

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    def subresource(self, name: str) -> Subresource | None:
        return next((s for s in self.subresources if s.name == name), None)


_POD_STREAMS = (
    Subresource("attach", "PodAttachOptions", ("create", "get")),
    Subresource("exec", "PodExecOptions", ("create", "get")),
    Subresource("log", "Pod", ("get",)),
    Subresource("portforward", "PodPortForwardOptions", ("create", "get")),
    Subresource("status", "Pod", ("get", "patch", "update")),
)

RESOURCES: tuple[ResourceType, ...] = (
    ResourceType("", "v1", "namespaces", "namespace", "Namespace", False,
                 verbs=("create", "delete", "get", "list", "patch", "update", "watch"),
                 short_names=("ns",), has_status=True,
                 subresources=(Subresource("status", "Namespace", ("get", "patch", "update")),),
                 field_labels=("status.phase",), schema_name="io.k8s.api.core.v1.Namespace"),
    ResourceType("", "v1", "pods", "pod", "Pod", True, short_names=("po",), categories=("all",),
                 subresources=_POD_STREAMS, has_status=True,
                 field_labels=("spec.nodeName", "spec.restartPolicy", "spec.schedulerName",
                               "spec.serviceAccountName", "status.phase", "status.podIP"),
                 schema_name="io.k8s.api.core.v1.Pod"),
    ResourceType("", "v1", "configmaps", "configmap", "ConfigMap", True, short_names=("cm",),
                 schema_name="io.k8s.api.core.v1.ConfigMap"),
    ResourceType("", "v1", "secrets", "secret", "Secret", True, field_labels=("type",),
                 schema_name="io.k8s.api.core.v1.Secret"),
    ResourceType("", "v1", "events", "event", "Event", True, short_names=("ev",),
                 field_labels=("involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
                               "involvedObject.uid", "involvedObject.apiVersion",
                               "involvedObject.resourceVersion", "involvedObject.fieldPath",
                               "reason", "reportingComponent", "source", "type"),
                 schema_name="io.k8s.api.core.v1.Event"),
    ResourceType("apps", "v1", "deployments", "deployment", "Deployment", True, short_names=("deploy",),
                 categories=("all",), has_status=True,
                 subresources=(Subresource("scale", "Scale", ("get", "patch", "update"), "autoscaling", "v1"),
                               Subresource("status", "Deployment", ("get", "patch", "update"))),
                 schema_name="io.k8s.api.apps.v1.Deployment"),
    ResourceType("authorization.k8s.io", "v1", "selfsubjectaccessreviews", "selfsubjectaccessreview",
                 "SelfSubjectAccessReview", False, verbs=("create",),
                 schema_name="io.k8s.api.authorization.v1.SelfSubjectAccessReview"),
)


@dataclass(frozen=True)
class GroupVersion:
    group: str
    version: str
    resources: tuple[ResourceType, ...] = field(default=())

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


def group_versions() -> list[GroupVersion]:
    """Group-versions in discovery order: core first, then groups as listed."""
    order: list[tuple[str, str]] = []
    for r in RESOURCES:
        if (r.group, r.version) not in order:
            order.append((r.group, r.version))
    return [GroupVersion(g, v, tuple(r for r in RESOURCES if (r.group, r.version) == (g, v)))
            for g, v in order]


def lookup(group: str, version: str, plural: str) -> ResourceType | None:
    return next((r for r in RESOURCES if (r.group, r.version, r.plural) == (group, version, plural)), None)


def by_kind(api_version: str, kind: str) -> ResourceType | None:
    return next((r for r in RESOURCES if r.api_version == api_version and r.kind == kind), None)


def group_known(group: str, version: str) -> bool:
    return any((r.group, r.version) == (group, version) for r in RESOURCES)
