"""What the fake API server serves, and the certificates the upstream presents.

The bodies are shaped like the real thing: a ~1.5 KB Pod and a ~100 KB PodList.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from dataplane.pki import CertificateAuthority

POD_PATH = "/api/v1/namespaces/default/pods/web-0"
POD_LIST_PATH = "/api/v1/namespaces/default/pods"
POD_LIST_TARGET_BYTES = 100_000


def pod(name: str, resource_version: int) -> dict:
    return {
        "kind": "Pod", "apiVersion": "v1",
        "metadata": {
            "name": name, "namespace": "default", "uid": f"6b1c2a4e-8f0d-4b7a-9c3e-{resource_version:012d}",
            "resourceVersion": str(resource_version), "creationTimestamp": "2026-11-23T08:00:00Z",
            "labels": {"app": "web", "pod-template-hash": "5d4f8c7b9", "tier": "frontend"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d4f8c7b9",
                                 "uid": "0f3c1f5e-2a43-4d0e-9a5e-7f1c3b2e6d11", "controller": True,
                                 "blockOwnerDeletion": True}],
        },
        "spec": {
            "containers": [{
                "name": "app", "image": "registry.example.com/web:1.27.3",
                "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
                "terminationMessagePath": "/dev/termination-log", "imagePullPolicy": "IfNotPresent",
            }],
            "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default", "nodeName": "node-3", "schedulerName": "default-scheduler",
        },
        "status": {
            "phase": "Running", "hostIP": "10.0.3.17", "podIP": "10.244.3.25", "qosClass": "Burstable",
            "startTime": "2026-11-23T08:00:02Z",
            "conditions": [{"type": t, "status": "True"} for t in ("Initialized", "Ready", "PodScheduled")],
            "containerStatuses": [{"name": "app", "ready": True, "restartCount": 0, "started": True,
                                   "image": "registry.example.com/web:1.27.3",
                                   "containerID": "containerd://" + "cd" * 32,
                                   "state": {"running": {"startedAt": "2026-11-23T08:00:04Z"}}}],
        },
    }


def pod_body() -> bytes:
    return json.dumps(pod("web-0", 1001)).encode()


def pod_list_body() -> bytes:
    items, size, index = [], 0, 0
    while size < POD_LIST_TARGET_BYTES:
        item = pod(f"web-{index}", 1001 + index)
        items.append(item)
        size += len(json.dumps(item)) + 1
        index += 1
    return json.dumps({"kind": "PodList", "apiVersion": "v1",
                       "metadata": {"resourceVersion": "5000"}, "items": items}).encode()


@dataclass(frozen=True)
class UpstreamFiles:
    docroot: Path
    ca_pem: bytes
    ca: Path
    cert: Path
    key: Path


def write_upstream_files(root: Path) -> UpstreamFiles:
    """Bodies under `root/docroot`, and a CA + server certificate (localhost, 127.0.0.1)."""
    docroot = root / "docroot"
    docroot.mkdir(parents=True)
    (docroot / "pod.json").write_bytes(pod_body())
    (docroot / "pods.json").write_bytes(pod_list_body())
    ca = CertificateAuthority.create("bench upstream CA")
    ca_path, cert, key = root / "upstream-ca.crt", root / "upstream.crt", root / "upstream.key"
    ca_path.write_bytes(ca.cert_pem)
    ca.issue_server(["localhost", "127.0.0.1"]).write(cert, key)
    return UpstreamFiles(docroot=docroot, ca_pem=ca.cert_pem, ca=ca_path, cert=cert, key=key)
