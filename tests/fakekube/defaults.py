"""What the API server and the (absent) controllers would fill in: pod status, namespace phase, ..."""
from __future__ import annotations

import datetime
import itertools
from typing import Any

_pod_ips = itertools.count(10)
NODE_NAME = "fakekube-node"


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in spec.get("containers") or [] if isinstance(c, dict)]


def _default_ports(spec: dict[str, Any]) -> None:
    for container in _containers(spec) + list(spec.get("initContainers") or []):
        for port in container.get("ports") or []:
            if isinstance(port, dict):
                port.setdefault("protocol", "TCP")


def _running_pod_status(spec: dict[str, Any]) -> dict[str, Any]:
    """Every pod is scheduled and running at once: the fake has no kubelet to wait for."""
    started = now()
    statuses = [{
        "name": c.get("name", ""), "ready": True, "started": True, "restartCount": 0,
        "image": c.get("image", ""), "imageID": "", "containerID": f"fake://{c.get('name', '')}",
        "state": {"running": {"startedAt": started}}, "lastState": {},
    } for c in _containers(spec)]
    conditions = [{"type": t, "status": "True", "lastProbeTime": None, "lastTransitionTime": started}
                  for t in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")]
    ip = f"10.244.0.{next(_pod_ips) % 250 + 2}"
    return {"phase": "Running", "conditions": conditions, "hostIP": "10.0.0.10", "hostIPs": [{"ip": "10.0.0.10"}],
            "podIP": ip, "podIPs": [{"ip": ip}], "startTime": started, "containerStatuses": statuses,
            "qosClass": "BestEffort"}


def on_create(kind: str, obj: dict[str, Any]) -> None:
    meta = obj["metadata"]
    if kind == "Namespace":
        meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
        obj["status"] = {"phase": "Active"}
    elif kind == "Pod":
        spec = obj.setdefault("spec", {})
        _default_ports(spec)
        spec.setdefault("restartPolicy", "Always")
        spec.setdefault("dnsPolicy", "ClusterFirst")
        spec.setdefault("schedulerName", "default-scheduler")
        spec.setdefault("terminationGracePeriodSeconds", 30)
        spec.setdefault("nodeName", NODE_NAME)
        for container in _containers(spec):
            container.setdefault("imagePullPolicy", "IfNotPresent")
            container.setdefault("terminationMessagePath", "/dev/termination-log")
            container.setdefault("terminationMessagePolicy", "File")
            container.setdefault("resources", {})
        obj["status"] = _running_pod_status(spec)
    elif kind == "Deployment":
        meta["generation"] = 1
        _deployment_status(obj)
    elif kind == "Secret":
        obj.setdefault("type", "Opaque")


def on_update(kind: str, old: dict[str, Any], new: dict[str, Any]) -> None:
    if kind == "Pod":
        _default_ports(new.get("spec") or {})
    if kind == "Deployment":
        generation = old["metadata"].get("generation", 1)
        if new.get("spec") != old.get("spec"):
            generation += 1
        new["metadata"]["generation"] = generation
        _deployment_status(new)


def _deployment_status(obj: dict[str, Any]) -> None:
    """As if the deployment controller had rolled out every replica instantly."""
    spec = obj.setdefault("spec", {})
    replicas = spec.setdefault("replicas", 1)
    obj["status"] = {"observedGeneration": obj["metadata"].get("generation", 1), "replicas": replicas,
                     "updatedReplicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas,
                     "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                                     "message": "Deployment has minimum availability.",
                                     "lastUpdateTime": now(), "lastTransitionTime": now()}]}
