"""Quick-start contents of the sandbox cluster."""
from __future__ import annotations

from typing import Any

from .store import Store


def _namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


BASE_NAMESPACES = [_namespace("default"), _namespace("kube-system"), _namespace("kube-public"),
                   _namespace("kube-node-lease")]

QUICKSTART: list[dict[str, Any]] = [
    {"apiVersion": "v1", "kind": "Pod",
     "metadata": {"name": "web-0", "namespace": "default", "labels": {"app": "web"},
                  "annotations": {"kubectl.kubernetes.io/default-container": "app"}},
     "spec": {"containers": [
         {"name": "app", "image": "nginx:1.27", "ports": [{"containerPort": 80, "name": "http"}]},
         {"name": "sidecar", "image": "busybox:1.36", "command": ["sh", "-c", "tail -f /dev/null"]}]}},
    {"apiVersion": "v1", "kind": "ConfigMap",
     "metadata": {"name": "web-config", "namespace": "default", "labels": {"app": "web"}},
     "data": {"greeting": "hello from the sandbox", "log-level": "info"}},
]

QUICKSTART_LOGS: dict[tuple[str, str, str], list[str]] = {
    ("default", "web-0", "app"): ["nginx: starting", "nginx: ready to serve on :80"],
    ("default", "web-0", "sidecar"): ["sidecar: started"],
}


def install(store: Store, objects: list[dict[str, Any]] | None) -> None:
    """The base namespaces, then `objects` (None: the quick-start pod, configmap and their logs)."""
    store.seed(BASE_NAMESPACES)
    store.seed(QUICKSTART if objects is None else [
        o for o in objects if not (o.get("kind") == "Namespace" and o in BASE_NAMESPACES)])
    if objects is None:
        for (namespace, pod, container), lines in QUICKSTART_LOGS.items():
            for line in lines:
                store.append_log(namespace, pod, container, line)
