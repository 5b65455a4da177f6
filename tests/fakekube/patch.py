"""The four PATCH flavours: JSON merge (RFC 7386), JSON patch (RFC 6902), strategic merge, and
server-side apply (simplified to "merge the applied configuration in")."""
from __future__ import annotations

import copy
import json
from typing import Any

import yaml

from .schema import SchemaNode
from .status import ApiError, bad_request

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH, APPLY_PATCH)

_SET_ORDER = "$setElementOrder/"
_DELETE_FROM = "$deleteFromPrimitiveList/"


def _unprocessable(message: str) -> ApiError:
    return ApiError(422, message, "Invalid")


# --- RFC 7386 -------------------------------------------------------------------------------------

def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# --- RFC 6902 -------------------------------------------------------------------------------------

def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise _unprocessable(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, tokens: list[str], path: str) -> tuple[Any, str]:
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            raise _unprocessable(f"doc is missing path: {path!r}: missing value")
    return node, tokens[-1]


def _get(doc: Any, path: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return doc
    parent, last = _parent(doc, tokens, path)
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent[int(last)]
    raise _unprocessable(f"doc is missing path: {path!r}: missing value")


def _remove(doc: Any, path: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        raise _unprocessable("cannot remove the whole document")
    parent, last = _parent(doc, tokens, path)
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent.pop(int(last))
    raise _unprocessable(f"doc is missing path: {path!r}: missing value")


def _add(doc: Any, path: str, value: Any) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return value
    parent, last = _parent(doc, tokens, path)
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        elif last.isdigit() and int(last) <= len(parent):
            parent.insert(int(last), value)
        else:
            raise _unprocessable(f"add operation does not apply: index out of range: {path!r}")
    else:
        raise _unprocessable(f"doc is missing path: {path!r}: missing value")
    return doc


def json_patch(doc: Any, operations: Any) -> Any:
    if not isinstance(operations, list):
        raise bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    doc = copy.deepcopy(doc)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise _unprocessable(f"invalid JSON patch operation: {json.dumps(op)}")
        kind, path = op["op"], op["path"]
        if kind in ("add", "replace", "test") and "value" not in op:
            raise _unprocessable(f"missing value for {kind} operation")
        if kind == "add":
            doc = _add(doc, path, copy.deepcopy(op["value"]))
        elif kind == "remove":
            _remove(doc, path)
        elif kind == "replace":
            _get(doc, path)               # must exist
            if _pointer(path):
                _remove(doc, path)
            doc = _add(doc, path, copy.deepcopy(op["value"]))
        elif kind in ("move", "copy"):
            source = op.get("from")
            if source is None:
                raise _unprocessable(f"missing from for {kind} operation")
            value = _remove(doc, source) if kind == "move" else copy.deepcopy(_get(doc, source))
            doc = _add(doc, path, value)
        elif kind == "test":
            if _get(doc, path) != op["value"]:
                raise _unprocessable(f"testing value {path} failed: test failed")
        else:
            raise _unprocessable(f"Unexpected kind: {kind}")
    return doc


# --- strategic merge patch ------------------------------------------------------------------------

def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items()
                if not k.startswith("$") and v is not None}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value if not (isinstance(v, dict) and "$patch" in v)]
    return value


def strategic_merge(original: dict[str, Any], patch: dict[str, Any], schema: SchemaNode) -> dict[str, Any]:
    """Applies a strategic merge patch: lists with patch strategy `merge` merge by their key."""
    result = _smp_map(original if isinstance(original, dict) else {}, patch, schema)
    if result is None:
        raise bad_request("$patch: delete is not allowed at the top level")
    return result


def _smp_map(original: dict[str, Any], patch: dict[str, Any], schema: SchemaNode) -> dict[str, Any] | None:
    directive = patch.get("$patch")
    if directive == "delete":
        return None
    if directive == "replace":
        return _strip_directives(patch)
    if directive not in (None, "merge"):
        raise bad_request(f"Unknown patch type: {directive}")
    result = copy.deepcopy(original)
    for key, value in patch.items():
        if key.startswith(_SET_ORDER) or key.startswith(_DELETE_FROM) or key in ("$patch", "$retainKeys"):
            continue
        if value is None:
            result.pop(key, None)
            continue
        sub = schema.field(key)
        current = result.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            merged = _smp_map(current, value, sub)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list) and "merge" in sub.strategies:
            result[key] = _smp_list(current if isinstance(current, list) else [], value, sub)
        elif isinstance(value, dict) and value.get("$patch") == "delete":
            result.pop(key, None)
        else:
            result[key] = _strip_directives(value)
    for key, values in patch.items():
        if key.startswith(_DELETE_FROM) and isinstance(result.get(key[len(_DELETE_FROM):]), list):
            name = key[len(_DELETE_FROM):]
            result[name] = [v for v in result[name] if v not in values]
    for key, order in patch.items():
        if key.startswith(_SET_ORDER) and isinstance(result.get(key[len(_SET_ORDER):]), list):
            name = key[len(_SET_ORDER):]
            result[name] = _reorder(result[name], order, schema.field(name).merge_key)
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _key_of(item: Any, merge_key: str) -> Any:
    return item.get(merge_key) if isinstance(item, dict) and merge_key else item


def _smp_list(original: list[Any], patch: list[Any], schema: SchemaNode) -> list[Any]:
    if any(isinstance(p, dict) and p.get("$patch") == "replace" for p in patch):
        return _strip_directives([p for p in patch if not (isinstance(p, dict) and "$patch" in p)])
    merge_key = schema.merge_key
    if not merge_key:          # primitive list with strategy merge: a union (finalizers)
        return list(original) + [p for p in patch if p not in original]
    result = copy.deepcopy(original)
    for item in patch:
        if not isinstance(item, dict):
            raise bad_request("merging an object in json but data type is not struct")
        key = item.get(merge_key)
        index = next((i for i, e in enumerate(result) if _key_of(e, merge_key) == key), None)
        if item.get("$patch") == "delete":
            if index is not None:
                result.pop(index)
            continue
        if index is None:
            result.append(_strip_directives(item))
        else:
            merged = _smp_map(result[index], item, schema.items())
            if merged is not None:
                result[index] = merged
    return result


def _reorder(items: list[Any], order: list[Any], merge_key: str) -> list[Any]:
    keys = [_key_of(o, merge_key) for o in order]
    rank = {k: i for i, k in enumerate(keys) if isinstance(k, (str, int, float, bool))}
    placed = sorted((i for i in items if _key_of(i, merge_key) in rank),
                    key=lambda i: rank[_key_of(i, merge_key)])
    return placed + [i for i in items if _key_of(i, merge_key) not in rank]


# --- server-side apply ----------------------------------------------------------------------------

def parse_apply(body: bytes) -> dict[str, Any]:
    try:
        config = yaml.safe_load(body.decode())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise bad_request(f"error decoding YAML: {exc}") from None
    if not isinstance(config, dict):
        raise bad_request("error decoding YAML: the applied configuration must be an object")
    return config


def apply_merge(current: dict[str, Any], config: dict[str, Any], schema: SchemaNode) -> dict[str, Any]:
    """Merges an applied configuration into the live object: keyed lists merge by their keys
    (list-map-keys, else the strategic merge key), other lists and scalars are replaced.

    Simplification: fields the manager applied before but omits now are not removed (no
    managedFields ownership tracking)."""
    return _apply_map(current, config, schema)


def _apply_map(current: dict[str, Any], config: dict[str, Any], schema: SchemaNode) -> dict[str, Any]:
    result = copy.deepcopy(current)
    for key, value in config.items():
        sub = schema.field(key)
        live = result.get(key)
        if isinstance(value, dict) and isinstance(live, dict):
            result[key] = _apply_map(live, value, sub)
        elif isinstance(value, list) and isinstance(live, list):
            result[key] = _apply_list(live, value, sub)
        else:
            result[key] = copy.deepcopy(value)
    return result


def _apply_list(live: list[Any], config: list[Any], schema: SchemaNode) -> list[Any]:
    # The strategic merge key first: a defaulted second map key (ports' protocol) must not split items.
    keys = [schema.merge_key] if schema.merge_key else schema.list_map_keys
    if schema.list_type == "set":
        return list(live) + [v for v in config if v not in live]
    if not keys or not all(isinstance(v, dict) for v in config):
        return copy.deepcopy(config)

    def key_of(item: Any) -> tuple[Any, ...]:
        return tuple(item.get(k) for k in keys) if isinstance(item, dict) else (item,)

    result = copy.deepcopy(live)
    for item in config:
        index = next((i for i, e in enumerate(result) if key_of(e) == key_of(item)), None)
        if index is None:
            result.append(copy.deepcopy(item))
        else:
            result[index] = _apply_map(result[index], item, schema.items())
    return result
