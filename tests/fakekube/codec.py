"""Request bodies in, responses out: content types, Accept negotiation, list/Table rendering."""
from __future__ import annotations

import base64
import json
from typing import Any

import yaml

from .httpcore import Request, Response, send_json
from .protobuf import PROTOBUF_TYPE, decode_object
from .resources import ResourceType
from .status import ApiError, bad_request
from .table import TABLE_TYPE, table, wants_table

JSON_TYPE = "application/json"
_ACCEPTABLE = ("application/json", "application/yaml", "application/*", "*/*", PROTOBUF_TYPE)


def media_type(value: str | None) -> str:
    return (value or "").split(";")[0].strip().lower()


def check_accept(request: Request) -> None:
    """406 unless the client accepts JSON in some form (protobuf-capable clients also take JSON)."""
    accept = request.header("accept")
    if not accept:
        return
    types = {media_type(item) for item in accept.split(",")}
    if not types & set(_ACCEPTABLE) and not wants_table(accept):
        raise ApiError(406, "only the following media types are accepted: application/json, "
                            "application/yaml, application/vnd.kubernetes.protobuf", "NotAcceptable")


def decode_body(request: Request) -> Any:
    """A JSON, YAML or (for the kinds kubectl creates that way) protobuf request body."""
    kind = media_type(request.header("content-type")) or JSON_TYPE
    if not request.body.strip():
        raise bad_request("the body of the request is empty")
    if kind == PROTOBUF_TYPE:
        return decode_object(request.body)
    try:
        if kind in ("application/yaml", "application/apply-patch+yaml"):
            return yaml.safe_load(request.body.decode())
        if kind == JSON_TYPE or kind.endswith("+json"):
            return json.loads(request.body)
    except (ValueError, yaml.YAMLError) as exc:
        raise bad_request(f"error decoding request body: {exc}") from None
    raise ApiError(415, f"the body of the request was in an unknown format - accepted media types "
                        f"include: application/json, application/yaml, {PROTOBUF_TYPE}", "UnsupportedMediaType")


def encode_continue(rv: int, offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"rv": rv, "start": offset}).encode()).decode()


def decode_continue(token: str) -> int:
    try:
        return int(json.loads(base64.urlsafe_b64decode(token.encode()))["start"])
    except (ValueError, KeyError, TypeError):
        raise ApiError(400, "continue key is not valid: illegal base64 data", "BadRequest") from None


def include_object(request: Request) -> str:
    value = request.arg("includeObject", "Metadata")
    if value not in ("None", "Metadata", "Object"):
        raise bad_request(f'includeObject: Unsupported value: "{value}"')
    return value


async def send_object(request: Request, response: Response, rtype: ResourceType, obj: dict[str, Any],
                      status: int = 200) -> None:
    if wants_table(request.header("accept") or "") and obj.get("kind") == rtype.kind:
        meta = {"resourceVersion": obj["metadata"].get("resourceVersion", "")}
        await send_json(response, status, table(rtype, [obj], meta, include_object(request)), TABLE_TYPE)
    else:
        await send_json(response, status, obj)


async def send_list(request: Request, response: Response, rtype: ResourceType, items: list[dict[str, Any]],
                    rv: int) -> None:
    try:
        limit = int(request.arg("limit", "0") or 0)
    except ValueError:
        raise bad_request(f"invalid limit: {request.arg('limit')!r}") from None
    start = decode_continue(request.arg("continue")) if request.arg("continue") else 0
    meta: dict[str, Any] = {"resourceVersion": str(rv)}
    page = items[start:start + limit] if limit > 0 else items[start:]
    if limit > 0 and start + limit < len(items):
        meta["continue"] = encode_continue(rv, start + limit)
        meta["remainingItemCount"] = len(items) - start - limit
    if wants_table(request.header("accept") or ""):
        await send_json(response, 200, table(rtype, page, meta, include_object(request)), TABLE_TYPE)
    else:
        await send_json(response, 200, {"kind": rtype.list_kind, "apiVersion": rtype.api_version,
                                        "metadata": meta, "items": page})
