"""Discovery documents: legacy (/api, /apis, /api/v1, /apis/<g>/<v>) and aggregated (apidiscovery.k8s.io/v2)."""
from __future__ import annotations

from typing import Any

from .resources import GroupVersion, ResourceType, group_versions

AGGREGATED_TYPE = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"


def wants_aggregated(accept: str) -> bool:
    """True when the Accept header lists the v2 APIGroupDiscoveryList media type."""
    for item in accept.split(","):
        params = {k.strip(): v.strip() for k, _, v in (p.partition("=") for p in item.split(";")[1:])}
        if (params.get("g") == "apidiscovery.k8s.io" and params.get("v") == "v2"
                and params.get("as") == "APIGroupDiscoveryList"):
            return True
    return False


def api_versions(server_address: str) -> dict[str, Any]:
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]}


def _gv(gv: GroupVersion) -> dict[str, str]:
    return {"groupVersion": gv.group_version, "version": gv.version}


def api_group_list() -> dict[str, Any]:
    groups = [{"name": gv.group, "versions": [_gv(gv)], "preferredVersion": _gv(gv)}
              for gv in group_versions() if gv.group]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(group: str) -> dict[str, Any] | None:
    for gv in group_versions():
        if gv.group == group and group:
            return {"kind": "APIGroup", "apiVersion": "v1", "name": group,
                    "versions": [_gv(gv)], "preferredVersion": _gv(gv)}
    return None


def _legacy_resource(r: ResourceType) -> list[dict[str, Any]]:
    main: dict[str, Any] = {"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
                            "kind": r.kind, "verbs": list(r.verbs)}
    if r.short_names:
        main["shortNames"] = list(r.short_names)
    if r.categories:
        main["categories"] = list(r.categories)
    subs = [{"name": f"{r.plural}/{s.name}", "singularName": "", "namespaced": r.namespaced,
             "kind": s.kind, "verbs": list(s.verbs)} for s in r.subresources]
    return [main, *subs]


def api_resource_list(group: str, version: str) -> dict[str, Any] | None:
    for gv in group_versions():
        if (gv.group, gv.version) == (group, version):
            resources = [entry for r in gv.resources for entry in _legacy_resource(r)]
            return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv.group_version,
                    "resources": resources}
    return None


def _aggregated_resource(r: ResourceType) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": r.plural, "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": "Namespaced" if r.namespaced else "Cluster", "singularResource": r.singular,
        "verbs": list(r.verbs),
    }
    if r.short_names:
        entry["shortNames"] = list(r.short_names)
    if r.categories:
        entry["categories"] = list(r.categories)
    if r.subresources:
        entry["subresources"] = [{"subresource": s.name, "responseKind": {
            "group": s.group or r.group, "version": s.version or r.version, "kind": s.kind},
            "verbs": list(s.verbs)} for s in r.subresources]
    return entry


def aggregated(legacy: bool) -> dict[str, Any]:
    """APIGroupDiscoveryList for /api (legacy=True: the core group) or /apis (every named group)."""
    items = []
    for gv in group_versions():
        if (gv.group == "") != legacy:
            continue
        items.append({"metadata": {"name": gv.group, "creationTimestamp": None},
                      "versions": [{"version": gv.version, "freshness": "Current",
                                    "resources": [_aggregated_resource(r) for r in gv.resources]}]})
    return {"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2",
            "metadata": {}, "items": items}
