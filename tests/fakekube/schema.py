"""The object schemas (OpenAPI definitions) of the served kinds, and a walker for patch metadata.

One source of truth: `openapi.py` renders these as /openapi/v2 and /openapi/v3 documents, and
`patch.py` reads the same `x-kubernetes-patch-*` extensions to merge strategic patches. References
are written neutrally as {"$ref": "<definition name>"}; the renderers turn them into JSON pointers.
Small on purpose: the fields kubectl and the tests touch, with the real names and extensions.
"""
from __future__ import annotations

from typing import Any

CORE = "io.k8s.api.core.v1."
APPS = "io.k8s.api.apps.v1."
AUTHZ = "io.k8s.api.authorization.v1."
META = "io.k8s.apimachinery.pkg.apis.meta.v1."
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"

S: dict[str, Any] = {"type": "string"}
I: dict[str, Any] = {"type": "integer", "format": "int32"}
I64: dict[str, Any] = {"type": "integer", "format": "int64"}
B: dict[str, Any] = {"type": "boolean"}
STRINGS: dict[str, Any] = {"type": "array", "items": S}


def ref(name: str) -> dict[str, Any]:
    return {"$ref": name}


def obj(description: str, props: dict[str, Any], required: tuple[str, ...] = (),
        gvk: tuple[str, str, str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"description": description, "type": "object", "properties": props}
    if required:
        schema["required"] = list(required)
    if gvk:
        schema["x-kubernetes-group-version-kind"] = [{"group": gvk[0], "version": gvk[1], "kind": gvk[2]}]
    return schema


def mapof(value: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": value}


def listof(item: dict[str, Any], merge_key: str = "", strategy: str = "",
           map_keys: tuple[str, ...] = (), list_type: str = "") -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "array", "items": item}
    if merge_key:
        schema["x-kubernetes-patch-merge-key"] = merge_key
    if strategy:
        schema["x-kubernetes-patch-strategy"] = strategy
    if map_keys:
        schema["x-kubernetes-list-map-keys"] = list(map_keys)
        schema["x-kubernetes-list-type"] = "map"
    elif list_type:
        schema["x-kubernetes-list-type"] = list_type
    return schema


def keyed(name: str, key: str, map_keys: tuple[str, ...] | None = None, strategy: str = "merge") -> dict[str, Any]:
    """A list merged by `key` in strategic merge patches (containers by name, ...)."""
    return listof(ref(name), merge_key=key, strategy=strategy, map_keys=map_keys or (key,))


def resource(kind_name: str, gvk: tuple[str, str, str], description: str, **props: Any) -> dict[str, Any]:
    base = {"apiVersion": S, "kind": S, "metadata": ref(META + "ObjectMeta")}
    return obj(description, {**base, **props}, gvk=gvk)


def list_type(item: str, gvk: tuple[str, str, str]) -> dict[str, Any]:
    return obj(f"{gvk[2]} is a list of {item.rsplit('.', 1)[1]}.",
               {"apiVersion": S, "kind": S, "metadata": ref(META + "ListMeta"), "items": listof(ref(item))},
               required=("items",), gvk=gvk)


_HANDLER = {"exec": ref(CORE + "ExecAction"), "httpGet": ref(CORE + "HTTPGetAction"),
            "tcpSocket": ref(CORE + "TCPSocketAction")}
_TIME = ref(META + "Time")

DEFINITIONS: dict[str, dict[str, Any]] = {
    META + "Time": {"description": "Time is RFC 3339 date and time.", "type": "string", "format": "date-time"},
    QUANTITY: {"description": "Quantity is a fixed-point number: 100m, 1Gi.", "type": "string"},
    INT_OR_STRING: {"description": "IntOrString holds an int32 or a string.", "type": "string",
                    "format": "int-or-string"},
    META + "Patch": {"description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body.",
                     "type": "object"},
    META + "FieldsV1": {"description": "FieldsV1 stores a set of fields in a data structure like a Trie.",
                        "type": "object"},
    META + "ObjectMeta": obj("ObjectMeta is metadata that all persisted resources must have.", {
        "name": S, "generateName": S, "namespace": S, "uid": S, "resourceVersion": S, "generation": I64,
        "creationTimestamp": _TIME, "deletionTimestamp": _TIME, "deletionGracePeriodSeconds": I64,
        "labels": mapof(S), "annotations": mapof(S),
        "ownerReferences": keyed(META + "OwnerReference", "uid"),
        "finalizers": listof(S, strategy="merge", list_type="set"),
        "managedFields": listof(ref(META + "ManagedFieldsEntry"), list_type="atomic"),
    }),
    META + "OwnerReference": obj("OwnerReference identifies an owning object.", {
        "apiVersion": S, "kind": S, "name": S, "uid": S, "controller": B, "blockOwnerDeletion": B,
    }, required=("apiVersion", "kind", "name", "uid")),
    META + "ManagedFieldsEntry": obj("ManagedFieldsEntry records a field manager's fields.", {
        "manager": S, "operation": S, "apiVersion": S, "time": _TIME, "fieldsType": S,
        "fieldsV1": ref(META + "FieldsV1"), "subresource": S,
    }),
    META + "ListMeta": obj("ListMeta describes metadata that synthetic resources must have.", {
        "resourceVersion": S, "continue": S, "remainingItemCount": I64, "selfLink": S,
    }),
    META + "LabelSelector": obj("A label selector.", {
        "matchLabels": mapof(S),
        "matchExpressions": listof(ref(META + "LabelSelectorRequirement"), list_type="atomic"),
    }),
    META + "LabelSelectorRequirement": obj("A label selector requirement.", {
        "key": S, "operator": S, "values": listof(S, list_type="atomic"),
    }, required=("key", "operator")),
    META + "Status": obj("Status is a return value for calls that don't return other objects.", {
        "apiVersion": S, "kind": S, "metadata": ref(META + "ListMeta"), "status": S, "message": S,
        "reason": S, "details": ref(META + "StatusDetails"), "code": I,
    }, gvk=("", "v1", "Status")),
    META + "StatusDetails": obj("StatusDetails is a set of additional properties of a Status.", {
        "name": S, "group": S, "kind": S, "uid": S, "retryAfterSeconds": I,
        "causes": listof(ref(META + "StatusCause"), list_type="atomic"),
    }),
    META + "StatusCause": obj("StatusCause provides more information about a failure.",
                              {"reason": S, "message": S, "field": S}),
    META + "Preconditions": obj("Preconditions must be fulfilled before an operation is carried out.",
                                {"uid": S, "resourceVersion": S}),
    META + "DeleteOptions": obj("DeleteOptions may be provided when deleting an API object.", {
        "apiVersion": S, "kind": S, "gracePeriodSeconds": I64, "orphanDependents": B,
        "propagationPolicy": S, "dryRun": listof(S, list_type="atomic"),
        "preconditions": ref(META + "Preconditions"),
    }, gvk=("", "v1", "DeleteOptions")),
    META + "WatchEvent": obj("Event represents a single event to a watched resource.",
                             {"type": S, "object": {"type": "object"}}, required=("type", "object"),
                             gvk=("", "v1", "WatchEvent")),

    CORE + "Namespace": resource("Namespace", ("", "v1", "Namespace"),
                                 "Namespace provides a scope for Names.",
                                 spec=ref(CORE + "NamespaceSpec"), status=ref(CORE + "NamespaceStatus")),
    CORE + "NamespaceSpec": obj("NamespaceSpec describes the attributes on a Namespace.",
                                {"finalizers": listof(S, list_type="atomic")}),
    CORE + "NamespaceStatus": obj("NamespaceStatus is information about the current status of a Namespace.",
                                  {"phase": S, "conditions": keyed(CORE + "NamespaceCondition", "type")}),
    CORE + "NamespaceCondition": obj("NamespaceCondition contains details about state of namespace.", {
        "type": S, "status": S, "reason": S, "message": S, "lastTransitionTime": _TIME}),
    CORE + "NamespaceList": list_type(CORE + "Namespace", ("", "v1", "NamespaceList")),

    CORE + "Pod": resource("Pod", ("", "v1", "Pod"), "Pod is a collection of containers that can run on a host.",
                           spec=ref(CORE + "PodSpec"), status=ref(CORE + "PodStatus")),
    CORE + "PodList": list_type(CORE + "Pod", ("", "v1", "PodList")),
    CORE + "PodSpec": obj("PodSpec is a description of a pod.", {
        "containers": keyed(CORE + "Container", "name"),
        "initContainers": keyed(CORE + "Container", "name"),
        "ephemeralContainers": keyed(CORE + "Container", "name"),
        "volumes": keyed(CORE + "Volume", "name", strategy="merge,retainKeys"),
        "imagePullSecrets": keyed(CORE + "LocalObjectReference", "name"),
        "tolerations": listof(ref(CORE + "Toleration"), list_type="atomic"),
        "topologySpreadConstraints": listof(ref(CORE + "TopologySpreadConstraint"), merge_key="topologyKey",
                                            strategy="merge", map_keys=("topologyKey", "whenUnsatisfiable")),
        "readinessGates": listof(obj("PodReadinessGate.", {"conditionType": S}), list_type="atomic"),
        "nodeSelector": mapof(S), "affinity": ref(CORE + "Affinity"),
        "securityContext": ref(CORE + "PodSecurityContext"),
        "restartPolicy": S, "terminationGracePeriodSeconds": I64, "activeDeadlineSeconds": I64,
        "dnsPolicy": S, "serviceAccountName": S, "serviceAccount": S, "automountServiceAccountToken": B,
        "nodeName": S, "hostNetwork": B, "hostPID": B, "hostIPC": B, "shareProcessNamespace": B,
        "hostname": S, "subdomain": S, "schedulerName": S, "priorityClassName": S, "priority": I,
        "preemptionPolicy": S, "enableServiceLinks": B, "runtimeClassName": S,
    }, required=("containers",)),
    CORE + "Container": obj("A single application container that you want to run within a pod.", {
        "name": S, "image": S, "command": listof(S, list_type="atomic"), "args": listof(S, list_type="atomic"),
        "workingDir": S,
        "ports": listof(ref(CORE + "ContainerPort"), merge_key="containerPort", strategy="merge",
                        map_keys=("containerPort", "protocol")),
        "env": keyed(CORE + "EnvVar", "name"),
        "envFrom": listof(ref(CORE + "EnvFromSource"), list_type="atomic"),
        "resources": ref(CORE + "ResourceRequirements"),
        "volumeMounts": keyed(CORE + "VolumeMount", "mountPath"),
        "livenessProbe": ref(CORE + "Probe"), "readinessProbe": ref(CORE + "Probe"),
        "startupProbe": ref(CORE + "Probe"), "lifecycle": ref(CORE + "Lifecycle"),
        "securityContext": ref(CORE + "SecurityContext"),
        "terminationMessagePath": S, "terminationMessagePolicy": S, "imagePullPolicy": S,
        "stdin": B, "stdinOnce": B, "tty": B,
    }, required=("name",)),
    CORE + "ContainerPort": obj("ContainerPort represents a network port in a single container.", {
        "name": S, "hostPort": I, "containerPort": I, "protocol": S, "hostIP": S}, required=("containerPort",)),
    CORE + "EnvVar": obj("EnvVar represents an environment variable present in a Container.", {
        "name": S, "value": S, "valueFrom": ref(CORE + "EnvVarSource")}, required=("name",)),
    CORE + "EnvVarSource": obj("EnvVarSource represents a source for the value of an EnvVar.", {
        "fieldRef": obj("ObjectFieldSelector.", {"apiVersion": S, "fieldPath": S}),
        "resourceFieldRef": obj("ResourceFieldSelector.", {"containerName": S, "resource": S,
                                                           "divisor": ref(QUANTITY)}),
        "configMapKeyRef": obj("ConfigMapKeySelector.", {"name": S, "key": S, "optional": B}),
        "secretKeyRef": obj("SecretKeySelector.", {"name": S, "key": S, "optional": B}),
    }),
    CORE + "EnvFromSource": obj("EnvFromSource represents the source of a set of ConfigMaps or Secrets.", {
        "prefix": S, "configMapRef": obj("ConfigMapEnvSource.", {"name": S, "optional": B}),
        "secretRef": obj("SecretEnvSource.", {"name": S, "optional": B})}),
    CORE + "ResourceRequirements": obj("ResourceRequirements describes the compute resource requirements.", {
        "limits": mapof(ref(QUANTITY)), "requests": mapof(ref(QUANTITY)),
        "claims": listof(obj("ResourceClaim.", {"name": S, "request": S}), map_keys=("name",))}),
    CORE + "VolumeMount": obj("VolumeMount describes a mounting of a Volume within a container.", {
        "name": S, "mountPath": S, "readOnly": B, "subPath": S, "subPathExpr": S, "mountPropagation": S},
        required=("name", "mountPath")),
    CORE + "Volume": obj("Volume represents a named volume in a pod.", {
        "name": S,
        "emptyDir": obj("EmptyDirVolumeSource.", {"medium": S, "sizeLimit": ref(QUANTITY)}),
        "configMap": obj("ConfigMapVolumeSource.", {"name": S, "items": listof(ref(CORE + "KeyToPath"),
                                                                               list_type="atomic"),
                                                    "defaultMode": I, "optional": B}),
        "secret": obj("SecretVolumeSource.", {"secretName": S, "items": listof(ref(CORE + "KeyToPath"),
                                                                               list_type="atomic"),
                                              "defaultMode": I, "optional": B}),
        "hostPath": obj("HostPathVolumeSource.", {"path": S, "type": S}),
        "persistentVolumeClaim": obj("PersistentVolumeClaimVolumeSource.", {"claimName": S, "readOnly": B}),
    }, required=("name",)),
    CORE + "KeyToPath": obj("Maps a string key to a path within a volume.", {"key": S, "path": S, "mode": I}),
    CORE + "LocalObjectReference": obj("LocalObjectReference lets you locate the referenced object.", {"name": S}),
    CORE + "Toleration": obj("The pod this Toleration is attached to tolerates any matching taint.", {
        "key": S, "operator": S, "value": S, "effect": S, "tolerationSeconds": I64}),
    CORE + "TopologySpreadConstraint": obj("How to spread matching pods among the given topology.", {
        "maxSkew": I, "topologyKey": S, "whenUnsatisfiable": S, "labelSelector": ref(META + "LabelSelector"),
        "minDomains": I}),
    CORE + "Affinity": obj("Affinity is a group of affinity scheduling rules.", {
        "nodeAffinity": {"type": "object"}, "podAffinity": {"type": "object"},
        "podAntiAffinity": {"type": "object"}}),
    CORE + "PodSecurityContext": obj("PodSecurityContext holds pod-level security attributes.", {
        "runAsUser": I64, "runAsGroup": I64, "runAsNonRoot": B, "fsGroup": I64,
        "supplementalGroups": listof(I64, list_type="atomic"), "seccompProfile": ref(CORE + "SeccompProfile")}),
    CORE + "SecurityContext": obj("SecurityContext holds security configuration applied to a container.", {
        "capabilities": obj("Capabilities.", {"add": listof(S, list_type="atomic"),
                                              "drop": listof(S, list_type="atomic")}),
        "privileged": B, "runAsUser": I64, "runAsGroup": I64, "runAsNonRoot": B,
        "readOnlyRootFilesystem": B, "allowPrivilegeEscalation": B,
        "seccompProfile": ref(CORE + "SeccompProfile")}),
    CORE + "SeccompProfile": obj("SeccompProfile defines a pod/container's seccomp profile settings.",
                                 {"type": S, "localhostProfile": S}, required=("type",)),
    CORE + "ExecAction": obj("ExecAction describes a \"run in container\" action.",
                             {"command": listof(S, list_type="atomic")}),
    CORE + "HTTPGetAction": obj("HTTPGetAction describes an action based on HTTP Get requests.", {
        "path": S, "port": ref(INT_OR_STRING), "host": S, "scheme": S,
        "httpHeaders": listof(obj("HTTPHeader.", {"name": S, "value": S}), list_type="atomic")},
        required=("port",)),
    CORE + "TCPSocketAction": obj("TCPSocketAction describes an action based on opening a socket.",
                                  {"port": ref(INT_OR_STRING), "host": S}, required=("port",)),
    CORE + "Probe": obj("Probe describes a health check to be performed against a container.", {
        **_HANDLER, "grpc": obj("GRPCAction.", {"port": I, "service": S}),
        "initialDelaySeconds": I, "timeoutSeconds": I, "periodSeconds": I, "successThreshold": I,
        "failureThreshold": I, "terminationGracePeriodSeconds": I64}),
    CORE + "Lifecycle": obj("Lifecycle describes actions to take in response to container lifecycle events.", {
        "postStart": obj("LifecycleHandler.", dict(_HANDLER)), "preStop": obj("LifecycleHandler.", dict(_HANDLER))}),
    CORE + "PodStatus": obj("PodStatus represents information about the status of a pod.", {
        "phase": S, "message": S, "reason": S, "hostIP": S, "podIP": S, "startTime": _TIME, "qosClass": S,
        "conditions": keyed(CORE + "PodCondition", "type"),
        "podIPs": listof(obj("PodIP.", {"ip": S}), merge_key="ip", strategy="merge", map_keys=("ip",)),
        "containerStatuses": listof(ref(CORE + "ContainerStatus"), list_type="atomic"),
        "initContainerStatuses": listof(ref(CORE + "ContainerStatus"), list_type="atomic"),
    }),
    CORE + "PodCondition": obj("PodCondition contains details for the current condition of this pod.", {
        "type": S, "status": S, "lastProbeTime": _TIME, "lastTransitionTime": _TIME, "reason": S,
        "message": S}, required=("type", "status")),
    CORE + "ContainerStatus": obj("ContainerStatus contains details for the current status of this container.", {
        "name": S, "state": ref(CORE + "ContainerState"), "lastState": ref(CORE + "ContainerState"),
        "ready": B, "started": B, "restartCount": I, "image": S, "imageID": S, "containerID": S}),
    CORE + "ContainerState": obj("ContainerState holds a possible state of container.", {
        "running": obj("ContainerStateRunning.", {"startedAt": _TIME}),
        "waiting": obj("ContainerStateWaiting.", {"reason": S, "message": S}),
        "terminated": obj("ContainerStateTerminated.", {
            "exitCode": I, "signal": I, "reason": S, "message": S, "startedAt": _TIME, "finishedAt": _TIME,
            "containerID": S})}),

    CORE + "ConfigMap": resource("ConfigMap", ("", "v1", "ConfigMap"),
                                 "ConfigMap holds configuration data for pods to consume.",
                                 data=mapof(S), binaryData=mapof({"type": "string", "format": "byte"}),
                                 immutable=B),
    CORE + "ConfigMapList": list_type(CORE + "ConfigMap", ("", "v1", "ConfigMapList")),
    CORE + "Secret": resource("Secret", ("", "v1", "Secret"), "Secret holds secret data of a certain type.",
                              data=mapof({"type": "string", "format": "byte"}), stringData=mapof(S),
                              type=S, immutable=B),
    CORE + "SecretList": list_type(CORE + "Secret", ("", "v1", "SecretList")),
    CORE + "Event": resource("Event", ("", "v1", "Event"), "Event is a report of an event somewhere in the cluster.",
                             involvedObject=ref(CORE + "ObjectReference"), reason=S, message=S,
                             source=obj("EventSource.", {"component": S, "host": S}),
                             firstTimestamp=_TIME, lastTimestamp=_TIME, count=I, type=S,
                             eventTime={"type": "string", "format": "date-time"},
                             reportingComponent=S, reportingInstance=S, action=S,
                             related=ref(CORE + "ObjectReference")),
    CORE + "EventList": list_type(CORE + "Event", ("", "v1", "EventList")),
    CORE + "ObjectReference": obj("ObjectReference contains enough information to inspect the referred object.", {
        "kind": S, "namespace": S, "name": S, "uid": S, "apiVersion": S, "resourceVersion": S, "fieldPath": S}),
    CORE + "PodTemplateSpec": obj("PodTemplateSpec describes the data a pod should have when created.", {
        "metadata": ref(META + "ObjectMeta"), "spec": ref(CORE + "PodSpec")}),

    APPS + "Deployment": resource("Deployment", ("apps", "v1", "Deployment"),
                                  "Deployment enables declarative updates for Pods and ReplicaSets.",
                                  spec=ref(APPS + "DeploymentSpec"), status=ref(APPS + "DeploymentStatus")),
    APPS + "DeploymentList": list_type(APPS + "Deployment", ("apps", "v1", "DeploymentList")),
    APPS + "DeploymentSpec": obj("DeploymentSpec is the specification of the desired behavior of the Deployment.", {
        "replicas": I, "selector": ref(META + "LabelSelector"), "template": ref(CORE + "PodTemplateSpec"),
        "strategy": {**ref(APPS + "DeploymentStrategy"), "x-kubernetes-patch-strategy": "retainKeys"},
        "minReadySeconds": I, "revisionHistoryLimit": I, "paused": B, "progressDeadlineSeconds": I,
    }, required=("selector", "template")),
    APPS + "DeploymentStrategy": obj("DeploymentStrategy describes how to replace existing pods with new ones.", {
        "type": S, "rollingUpdate": obj("RollingUpdateDeployment.", {
            "maxUnavailable": ref(INT_OR_STRING), "maxSurge": ref(INT_OR_STRING)})}),
    APPS + "DeploymentStatus": obj("DeploymentStatus is the most recently observed status of the Deployment.", {
        "observedGeneration": I64, "replicas": I, "updatedReplicas": I, "readyReplicas": I,
        "availableReplicas": I, "unavailableReplicas": I,
        "conditions": keyed(APPS + "DeploymentCondition", "type")}),
    APPS + "DeploymentCondition": obj("DeploymentCondition describes the state of a deployment at a certain point.", {
        "type": S, "status": S, "lastUpdateTime": _TIME, "lastTransitionTime": _TIME, "reason": S,
        "message": S}),

    AUTHZ + "SelfSubjectAccessReview": resource(
        "SelfSubjectAccessReview", ("authorization.k8s.io", "v1", "SelfSubjectAccessReview"),
        "SelfSubjectAccessReview checks whether or the current user can perform an action.",
        spec=ref(AUTHZ + "SelfSubjectAccessReviewSpec"), status=ref(AUTHZ + "SubjectAccessReviewStatus")),
    AUTHZ + "SelfSubjectAccessReviewSpec": obj("SelfSubjectAccessReviewSpec is a description of the access request.", {
        "resourceAttributes": obj("ResourceAttributes.", {
            "namespace": S, "verb": S, "group": S, "version": S, "resource": S, "subresource": S, "name": S}),
        "nonResourceAttributes": obj("NonResourceAttributes.", {"path": S, "verb": S})}),
    AUTHZ + "SubjectAccessReviewStatus": obj("SubjectAccessReviewStatus.", {
        "allowed": B, "denied": B, "reason": S, "evaluationError": S}, required=("allowed",)),
}


def _resolve(node: dict[str, Any] | None) -> dict[str, Any] | None:
    while node is not None and "$ref" in node:
        node = DEFINITIONS.get(node["$ref"])
    return node


class SchemaNode:
    """A position in a schema, for patch merging: which lists merge by which key."""

    def __init__(self, node: dict[str, Any] | None):
        self.node = _resolve(node)
        self.extensions = node or {}           # extensions may sit beside a $ref (strategy: retainKeys)

    @classmethod
    def named(cls, definition: str) -> "SchemaNode":
        return cls(ref(definition) if definition in DEFINITIONS else None)

    def field(self, key: str) -> "SchemaNode":
        if not self.node:
            return SchemaNode(None)
        props = self.node.get("properties") or {}
        if key in props:
            return SchemaNode(props[key])
        extra = self.node.get("additionalProperties")
        return SchemaNode(extra if isinstance(extra, dict) else None)

    def items(self) -> "SchemaNode":
        return SchemaNode((self.node or {}).get("items"))

    def _extension(self, name: str) -> Any:
        return self.extensions.get(name, (self.node or {}).get(name))

    @property
    def merge_key(self) -> str:
        return self._extension("x-kubernetes-patch-merge-key") or ""

    @property
    def strategies(self) -> set[str]:
        return set(filter(None, (self._extension("x-kubernetes-patch-strategy") or "").split(",")))

    @property
    def list_map_keys(self) -> list[str]:
        return list(self._extension("x-kubernetes-list-map-keys") or [])

    @property
    def list_type(self) -> str:
        return self._extension("x-kubernetes-list-type") or ""
