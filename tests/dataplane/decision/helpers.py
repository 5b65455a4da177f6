"""Snapshot data and request attributes for the decision tests."""
from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from typing import Any

@dataclass(frozen=True)
class Attrs:
    """Request attributes with the fields of native.requestinfo.RequestInfo that policy reads."""

    verb: str
    resource: str = ""
    api_group: str = ""
    namespace: str = ""
    name: str = ""
    subresource: str = ""
    path: str = ""
    is_resource_request: bool = True
    api_prefix: str = "api"
    api_version: str = "v1"


def nonresource(verb: str, path: str) -> Attrs:
    return Attrs(verb=verb, path=path, is_resource_request=False, api_prefix="", api_version="")


def sha256_hex(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def cluster(name: str, **labels: str) -> dict[str, Any]:
    return {
        "name": name,
        "labels": labels,
        "endpoint": "https://127.0.0.1:6443",
        "tunnel": False,
        "ca_bundle": "",
        "credential": {"kind": "token", "ref": f"file:{name}.token"},
        "identity_mode": "impersonate",
        "kubectl_enabled": True,
    }


BASE: dict[str, Any] = {
    "format": "accesspoint.snapshot/v1",
    "revision": 7,
    "issued_at": "2026-11-23T08:00:00Z",
    "clusters": [cluster("sandbox", env="dev", region="eu"), cluster("prod-eu", env="prod", region="eu")],
    "roles": [
        {"name": "viewer", "rules": [{"verbs": ["get", "list", "watch"], "api_groups": ["*"],
                                      "resources": ["*"], "resource_names": [], "namespaces": [],
                                      "non_resource_urls": []}]},
    ],
    "bindings": [
        {"name": "devs-view", "role": "viewer", "subjects": [{"kind": "group", "name": "devs"}],
         "clusters": {"names": [], "selector": {"env": "dev"}}},
    ],
    "tokens": [
        {"id": "t1", "sha256": sha256_hex("bob-token"), "user": "bob", "groups": ["devs"], "component": None},
        {"id": "t2", "sha256": sha256_hex("cd-token"), "user": "argo", "groups": [], "component": "cd"},
    ],
    "revocations": {"users": [], "groups": [], "cert_serials": [], "token_ids": [], "sessions": []},
    "settings": {},
}


def snapshot_data(**overrides: Any) -> dict[str, Any]:
    """A fresh deep copy of BASE with top-level fields replaced."""
    data = copy.deepcopy(BASE)
    data.update(copy.deepcopy(overrides))
    return data


def rule(verbs, api_groups=(), resources=(), resource_names=(), namespaces=(), non_resource_urls=()):
    return {"verbs": list(verbs), "api_groups": list(api_groups), "resources": list(resources),
            "resource_names": list(resource_names), "namespaces": list(namespaces),
            "non_resource_urls": list(non_resource_urls)}
