"""REST verbs on stored resources: get, list, create, update, patch, delete, deletecollection."""
from __future__ import annotations

import copy
import json
from typing import Any

from . import patch as patches
from .codec import decode_body, media_type, send_list, send_object
from .httpcore import Request, Response, send_json
from .requestinfo import RequestInfo
from .resources import ResourceType
from .schema import SchemaNode
from .selectors import compile_selectors
from .status import ApiError, bad_request, method_not_allowed, not_found, unknown_resource
from .store import Store
from .watch import serve_watch

_PATCH_RETRIES = 5
# Deleting these returns the object (as the real registries do); others answer a Success Status.
_RETURNS_DELETED_OBJECT = ("pods", "namespaces")


def _dry_run(request: Request, options: dict[str, Any] | None = None) -> bool:
    values = request.query.get("dryRun", []) + list((options or {}).get("dryRun") or [])
    for value in values:
        if value != "All":
            raise bad_request(f'dryRun: Unsupported value: "{value}": supported values: "All"')
    return bool(values)


def _matcher(request: Request, rtype: ResourceType):
    return compile_selectors(request.arg("labelSelector"), request.arg("fieldSelector"), rtype.field_labels)


def _check_identity(rtype: ResourceType, info: RequestInfo, obj: Any, name_required: bool) -> dict[str, Any]:
    """The body must be an object of this kind, in this namespace (and with this name)."""
    if not isinstance(obj, dict):
        raise bad_request("the body of the request must be a JSON object")
    obj.setdefault("apiVersion", rtype.api_version)
    obj.setdefault("kind", rtype.kind)
    if obj["apiVersion"] != rtype.api_version:
        raise bad_request(f"the API version in the data ({obj['apiVersion']}) does not match the expected "
                          f"API version ({rtype.api_version})")
    if obj["kind"] != rtype.kind:
        raise bad_request(f"the kind in the data ({obj['kind']}) does not match the expected kind ({rtype.kind})")
    meta = obj.get("metadata")
    if meta is None:
        meta = obj["metadata"] = {}
    if not isinstance(meta, dict):
        raise bad_request("metadata must be an object")
    if rtype.namespaced:
        if not meta.get("namespace"):       # unset or "" (protobuf bodies carry empty strings)
            meta["namespace"] = info.namespace
        if meta["namespace"] != info.namespace:
            raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
    if name_required and meta.get("name", info.name) != info.name:
        raise bad_request(f"the name of the object ({meta.get('name')}) does not match the name on the URL ({info.name})")
    if name_required:
        meta["name"] = info.name
    return obj


class ResourceHandler:
    def __init__(self, store: Store):
        self.store = store

    async def handle(self, request: Request, response: Response, info: RequestInfo, rtype: ResourceType) -> None:
        verb = info.verb
        if rtype.namespaced and not info.namespace and verb not in ("list", "watch"):
            raise unknown_resource()
        if info.subresource == "scale" and rtype.subresource("scale"):
            await self._scale(request, response, info, rtype)
            return
        if info.subresource and info.subresource != "status":
            raise unknown_resource()
        if verb not in rtype.verbs:
            raise method_not_allowed()
        if info.subresource == "status" and verb not in ("get", "update", "patch"):
            raise method_not_allowed()
        if verb == "get":
            await send_object(request, response, rtype, self._existing(rtype, info))
        elif verb == "list":
            items, rv = self.store.list(rtype, info.namespace, _matcher(request, rtype))
            await send_list(request, response, rtype, items, rv)
        elif verb == "watch":
            await serve_watch(request, response, self.store, rtype, info.namespace, _matcher(request, rtype))
        elif verb == "create":
            await self._create(request, response, info, rtype)
        elif verb == "update":
            obj = _check_identity(rtype, info, decode_body(request), name_required=True)
            updated = self.store.update(obj, status_only=info.subresource == "status", dry_run=_dry_run(request))
            await send_json(response, 200, updated)
        elif verb == "patch":
            await self._patch(request, response, info, rtype)
        elif verb == "delete":
            await self._delete(request, response, info, rtype)
        elif verb == "deletecollection":
            options = self._delete_options(request)
            items, rv = self.store.list(rtype, info.namespace, _matcher(request, rtype))
            deleted = [self.store.delete(rtype, info.namespace, item["metadata"]["name"],
                                         dry_run=_dry_run(request, options)) for item in items]
            await send_json(response, 200, {"kind": rtype.list_kind, "apiVersion": rtype.api_version,
                                            "metadata": {"resourceVersion": str(self.store.resource_version)},
                                            "items": deleted})

    def _existing(self, rtype: ResourceType, info: RequestInfo) -> dict[str, Any]:
        obj = self.store.get(rtype, info.namespace, info.name)
        if obj is None:
            raise not_found(rtype.group_resource, info.name)
        return obj

    async def _create(self, request: Request, response: Response, info: RequestInfo, rtype: ResourceType) -> None:
        obj = _check_identity(rtype, info, decode_body(request), name_required=False)
        created = self.store.create(obj, dry_run=_dry_run(request))
        await send_json(response, 201, created)

    async def _patch(self, request: Request, response: Response, info: RequestInfo, rtype: ResourceType) -> None:
        kind = media_type(request.header("content-type"))
        if kind not in patches.PATCH_TYPES:
            raise ApiError(415, "the body of the request was in an unknown format - accepted media types include: "
                                + ", ".join(patches.PATCH_TYPES), "UnsupportedMediaType")
        if kind == patches.APPLY_PATCH and not request.arg("fieldManager"):
            raise ApiError(422, "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: "
                                "is required for apply patch", "Invalid")
        body = patches.parse_apply(request.body) if kind == patches.APPLY_PATCH else decode_body(request)
        dry_run = _dry_run(request)
        schema = SchemaNode.named(rtype.schema_name)
        for attempt in range(_PATCH_RETRIES):
            current = self.store.get(rtype, info.namespace, info.name)
            if current is None:
                if kind != patches.APPLY_PATCH or info.subresource:
                    raise not_found(rtype.group_resource, info.name)
                obj = _check_identity(rtype, info, copy.deepcopy(body), name_required=True)
                await send_json(response, 201, self.store.create(obj, dry_run=dry_run))
                return
            patched = self._apply_patch(kind, current, body, schema, rtype, info)
            if not patched["metadata"].get("resourceVersion"):
                patched["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            pinned = patched["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"]
            try:
                updated = self.store.update(patched, status_only=info.subresource == "status", dry_run=dry_run)
            except ApiError as err:
                # The object moved on between our read and write: re-read and re-apply, as the real
                # server does, unless the patch itself named a resourceVersion.
                if err.reason == "Conflict" and not pinned and attempt + 1 < _PATCH_RETRIES:
                    continue
                raise
            await send_object(request, response, rtype, updated)
            return

    @staticmethod
    def _apply_patch(kind: str, current: dict[str, Any], body: Any, schema: SchemaNode, rtype: ResourceType,
                     info: RequestInfo) -> dict[str, Any]:
        if kind == patches.JSON_PATCH:
            patched = patches.json_patch(current, body)
        elif not isinstance(body, dict):
            raise bad_request("the patch must be a JSON object")
        elif kind == patches.MERGE_PATCH:
            patched = patches.merge_patch(current, body)
        elif kind == patches.STRATEGIC_PATCH:
            patched = patches.strategic_merge(current, body, schema)
        else:
            config = _check_identity(rtype, info, copy.deepcopy(body), name_required=True)
            config["metadata"].pop("resourceVersion", None)
            patched = patches.apply_merge(current, config, schema)
        if not isinstance(patched, dict) or not isinstance(patched.get("metadata"), dict):
            raise bad_request("the patched object must be an object with metadata")
        meta = patched["metadata"]
        if meta.get("name") != info.name or (rtype.namespaced and meta.get("namespace") != info.namespace):
            raise ApiError(422, f'{rtype.kind} "{info.name}" is invalid: metadata.name: Invalid value: '
                                f'"{meta.get("name")}": field is immutable', "Invalid")
        if patched.get("kind") != rtype.kind or patched.get("apiVersion") != rtype.api_version:
            raise bad_request("the patch must not change apiVersion or kind")
        return patched

    def _delete_options(self, request: Request) -> dict[str, Any]:
        if not request.body.strip():
            return {}
        try:
            options = json.loads(request.body)
        except ValueError as exc:
            raise bad_request(f"error decoding DeleteOptions: {exc}") from None
        if not isinstance(options, dict):
            raise bad_request("DeleteOptions must be an object")
        return options

    async def _delete(self, request: Request, response: Response, info: RequestInfo, rtype: ResourceType) -> None:
        options = self._delete_options(request)
        deleted = self.store.delete(rtype, info.namespace, info.name, dry_run=_dry_run(request, options),
                                    preconditions=options.get("preconditions"))
        if rtype.plural in _RETURNS_DELETED_OBJECT:
            await send_json(response, 200, deleted)
            return
        details = {"name": info.name, **({"group": rtype.group} if rtype.group else {}), "kind": rtype.plural,
                   "uid": deleted["metadata"]["uid"]}
        await send_json(response, 200, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                        "status": "Success", "details": details})

    async def _scale(self, request: Request, response: Response, info: RequestInfo, rtype: ResourceType) -> None:
        """autoscaling/v1 Scale of a deployment: `kubectl scale` patches spec.replicas here."""
        obj = self._existing(rtype, info)
        if info.verb == "patch":
            kind = media_type(request.header("content-type"))
            body = decode_body(request)
            scale = _scale_of(obj)
            if kind == patches.JSON_PATCH:
                scale = patches.json_patch(scale, body)
            elif kind in (patches.MERGE_PATCH, patches.STRATEGIC_PATCH) and isinstance(body, dict):
                scale = patches.merge_patch(scale, body)
            else:
                raise ApiError(415, f"the body of the request was in an unknown format: {kind}", "UnsupportedMediaType")
        elif info.verb == "update":
            scale = decode_body(request)
        elif info.verb == "get":
            await send_json(response, 200, _scale_of(obj))
            return
        else:
            raise method_not_allowed()
        replicas = (scale.get("spec") or {}).get("replicas") if isinstance(scale, dict) else None
        if not isinstance(replicas, int) or replicas < 0:
            raise ApiError(422, f'Scale.autoscaling "{info.name}" is invalid: spec.replicas: Invalid value: '
                                f'{replicas}: must be greater than or equal to 0', "Invalid")
        obj["spec"]["replicas"] = replicas
        await send_json(response, 200, _scale_of(self.store.update(obj, dry_run=_dry_run(request))))


def _scale_of(obj: dict[str, Any]) -> dict[str, Any]:
    labels = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return {"kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {k: obj["metadata"][k] for k in ("name", "namespace", "uid", "resourceVersion",
                                                          "creationTimestamp") if k in obj["metadata"]},
            "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 0)},
            "status": {"replicas": (obj.get("status") or {}).get("replicas", 0),
                       "selector": ",".join(f"{k}={v}" for k, v in sorted(labels.items()))}}
