"""/openapi/v2 and /openapi/v3 documents rendered from `schema.DEFINITIONS` and the resource table.

The PATCH operations carry `x-kubernetes-group-version-kind`, the four patch content types and
the `fieldValidation` query parameter: kubectl reads exactly these to choose strategic merge
patches and server-side field validation without falling back to /openapi/v2.
"""
from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from typing import Any

from .patch import PATCH_TYPES
from .resources import GroupVersion, ResourceType, group_versions
from .schema import DEFINITIONS, META

VERSION = "v1.32.4"
_COMMON = (META + "Status", META + "DeleteOptions", META + "Patch", META + "WatchEvent")


def _rewrite_refs(node: Any, prefix: str, wrap: bool) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            target = {"$ref": prefix + node["$ref"]}
            rest = {k: _rewrite_refs(v, prefix, wrap) for k, v in node.items() if k != "$ref"}
            # v3 documents wrap references in allOf so that siblings (defaults, extensions) are legal.
            return {"allOf": [target], **rest} if wrap else {**target, **rest}
        return {k: _rewrite_refs(v, prefix, wrap) for k, v in node.items()}
    if isinstance(node, list):
        return [_rewrite_refs(v, prefix, wrap) for v in node]
    return node


def _reachable(roots: list[str]) -> list[str]:
    seen: list[str] = []
    stack = list(roots)
    while stack:
        name = stack.pop()
        if name in seen or name not in DEFINITIONS:
            continue
        seen.append(name)
        stack.extend(_refs(DEFINITIONS[name]))
    return sorted(seen)


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if "$ref" in node else []
        return own + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def _query(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "description": description, "schema": {"type": "string"},
            "uniqueItems": True}


_DRY_RUN = _query("dryRun", "When present, indicates that modifications should not be persisted.")
_FIELD_MANAGER = _query("fieldManager", "fieldManager is a name associated with the actor or entity that is making these changes.")
_FIELD_VALIDATION = _query("fieldValidation", "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields: Ignore, Warn or Strict.")
_FORCE = {"name": "force", "in": "query", "description": "Force is going to \"force\" Apply requests.",
          "schema": {"type": "boolean"}, "uniqueItems": True}


def _operation(r: ResourceType, action: str, verb_id: str, response: str, params: list[dict[str, Any]],
               body: tuple[str, ...] = ()) -> dict[str, Any]:
    group_id = "".join(p.capitalize() for p in (r.group.split(".")[0] if r.group else "core", r.version))
    if verb_id == "listForAllNamespaces":
        operation_id = f"list{group_id}{r.kind}ForAllNamespaces"
    else:
        operation_id = f"{verb_id}{group_id}{'Namespaced' if r.namespaced else ''}{r.kind}"
    op: dict[str, Any] = {
        "description": f"{action} {r.kind}",
        "operationId": operation_id,
        "parameters": params,
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": response}}}},
                      "401": {"description": "Unauthorized"}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind},
        "tags": [group_id[0].lower() + group_id[1:]],
    }
    if body:
        schema = {"$ref": META + "Patch"} if action == "patch" else {"$ref": response}
        op["requestBody"] = {"content": {t: {"schema": schema} for t in body}, "required": True}
    return op


def _paths(gv: GroupVersion) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    base = f"/apis/{gv.group}/{gv.version}" if gv.group else f"/api/{gv.version}"
    for r in gv.resources:
        kind, listkind = r.schema_name, r.schema_name + "List"
        collection = f"{base}/namespaces/{{namespace}}/{r.plural}" if r.namespaced else f"{base}/{r.plural}"
        item = collection + "/{name}"
        if r.verbs == ("create",):
            paths[collection] = {"post": _operation(r, "post", "create", kind,
                                                    [_DRY_RUN, _FIELD_MANAGER, _FIELD_VALIDATION],
                                                    ("*/*",))}
            continue
        paths[collection] = {
            "get": _operation(r, "list", "list", listkind, [_query("labelSelector", "A selector."),
                                                          _query("fieldSelector", "A selector.")]),
            "post": _operation(r, "post", "create", kind, [_DRY_RUN, _FIELD_MANAGER, _FIELD_VALIDATION],
                               ("*/*",)),
        }
        if "deletecollection" in r.verbs:
            paths[collection]["delete"] = _operation(r, "deletecollection", "deleteCollection", META + "Status",
                                                     [_DRY_RUN], ("*/*",))
        paths[item] = {
            "get": _operation(r, "get", "read", kind, []),
            "put": _operation(r, "put", "replace", kind, [_DRY_RUN, _FIELD_MANAGER, _FIELD_VALIDATION], ("*/*",)),
            "patch": _operation(r, "patch", "patch", kind,
                                [_DRY_RUN, _FIELD_MANAGER, _FIELD_VALIDATION, _FORCE], PATCH_TYPES),
            "delete": _operation(r, "delete", "delete", META + "Status", [_DRY_RUN], ("*/*",)),
        }
        if r.namespaced:
            paths[f"{base}/{r.plural}"] = {"get": _operation(r, "list", "listForAllNamespaces", listkind, [])}
        for sub in r.subresources:
            if sub.name == "status":
                paths[item + "/status"] = {
                    "get": _operation(r, "get", "read", kind, []),
                    "patch": _operation(r, "patch", "patch", kind, [_FIELD_MANAGER, _FIELD_VALIDATION, _FORCE],
                                        PATCH_TYPES),
                }
    return paths


def _gv_key(gv: GroupVersion) -> str:
    return f"apis/{gv.group}/{gv.version}" if gv.group else f"api/{gv.version}"


@lru_cache(maxsize=None)
def v3_documents() -> dict[str, bytes]:
    """Serialized v3 documents by index key ("api/v1", "apis/apps/v1")."""
    docs = {}
    for gv in group_versions():
        paths = _paths(gv)
        roots = [r.schema_name for r in gv.resources] + [r.schema_name + "List" for r in gv.resources] + list(_COMMON)
        schemas = {name: DEFINITIONS[name] for name in _reachable(roots)}
        doc = {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": VERSION},
               "paths": _rewrite_refs(paths, "#/components/schemas/", wrap=False),
               "components": {"schemas": _rewrite_refs(schemas, "#/components/schemas/", wrap=True)}}
        docs[_gv_key(gv)] = json.dumps(doc, sort_keys=True).encode()
    return docs


def etag(body: bytes) -> str:
    return hashlib.sha512(body).hexdigest().upper()


@lru_cache(maxsize=None)
def v3_index() -> bytes:
    paths = {key: {"serverRelativeURL": f"/openapi/v3/{key}?hash={etag(body)}"}
             for key, body in v3_documents().items()}
    return json.dumps({"paths": paths}, sort_keys=True).encode()


def _v2_operation(op: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in op.items() if k not in ("requestBody", "responses", "parameters")}
    params = [{k: v for k, v in p.items() if k != "schema"} | {"type": p["schema"]["type"]}
              for p in op["parameters"]]
    if "requestBody" in op:
        content = op["requestBody"]["content"]
        out["consumes"] = list(content)
        params.append({"name": "body", "in": "body", "required": True,
                       "schema": next(iter(content.values()))["schema"]})
    out["parameters"] = params
    out["produces"] = ["application/json", "application/yaml", "application/vnd.kubernetes.protobuf"]
    out["schemes"] = ["https"]
    out["responses"] = {"200": {"description": "OK",
                                "schema": op["responses"]["200"]["content"]["application/json"]["schema"]},
                        "401": {"description": "Unauthorized"}}
    return out


@lru_cache(maxsize=None)
def v2_document() -> bytes:
    paths: dict[str, Any] = {}
    for gv in group_versions():
        for path, ops in _paths(gv).items():
            paths[path] = {method: _v2_operation(op) for method, op in ops.items()}
    doc = {"swagger": "2.0", "info": {"title": "Kubernetes", "version": VERSION},
           "paths": _rewrite_refs(paths, "#/definitions/", wrap=False),
           "definitions": _rewrite_refs(DEFINITIONS, "#/definitions/", wrap=False),
           "securityDefinitions": {"BearerToken": {"type": "apiKey", "name": "authorization", "in": "header"}},
           "security": [{"BearerToken": []}]}
    return json.dumps(doc, sort_keys=True).encode()
