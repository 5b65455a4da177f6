"""Just enough protobuf to read what kubectl sends as `application/vnd.kubernetes.protobuf`:
the SelfSubjectAccessReview of `kubectl auth can-i`, and the objects of `kubectl create
configmap|secret|namespace|deployment`.

Kubernetes' envelope: the magic `k8s\\x00`, then runtime.Unknown {1: TypeMeta {1: apiVersion,
2: kind}, 2: raw (the object)}. Objects are decoded with small field tables (number -> JSON name,
type) taken from k8s.io/api's generated.proto; unknown fields are skipped.
"""
from __future__ import annotations

import base64
from typing import Any, Union

from .status import ApiError, bad_request

MAGIC = b"k8s\x00"
PROTOBUF_TYPE = "application/vnd.kubernetes.protobuf"

# A field type: a scalar name, a nested message table, ("map", value type) or ("list", item type).
FieldType = Union[str, dict, tuple]
Message = dict[int, tuple[str, FieldType]]


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def fields(data: bytes) -> list[tuple[int, bytes | int]]:
    """The fields of one message in order: (number, bytes for length-delimited | int)."""
    out: list[tuple[int, bytes | int]] = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        value: bytes | int
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                raise ValueError("truncated field")
            value, pos = data[pos:pos + length], pos + length
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = int.from_bytes(data[pos:pos + size], "little"), pos + size
        else:
            raise ValueError(f"unsupported wire type {wire}")
        out.append((number, value))
    return out


def _scalar(kind: str, value: bytes | int) -> Any:
    if kind == "string":
        return value.decode() if isinstance(value, bytes) else ""
    if kind == "bytes":
        return base64.b64encode(value).decode() if isinstance(value, bytes) else ""
    if kind == "bool":
        return bool(value)
    if kind == "int":
        number = int(value) if isinstance(value, int) else 0
        return number - (1 << 64) if number >= 1 << 63 else number    # negative int32/int64
    raise ValueError(f"unknown scalar {kind}")


def _value(kind: FieldType, value: bytes | int) -> Any:
    if isinstance(kind, dict):
        return decode_message(value if isinstance(value, bytes) else b"", kind)
    return _scalar(kind, value)


def decode_message(data: bytes, table: Message) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for number, value in fields(data):
        if number not in table:
            continue
        name, kind = table[number]
        if isinstance(kind, tuple) and kind[0] == "map":
            entry = dict(fields(value if isinstance(value, bytes) else b""))
            out.setdefault(name, {})[_scalar("string", entry.get(1, b""))] = _value(kind[1], entry.get(2, b""))
        elif isinstance(kind, tuple) and kind[0] == "list":
            out.setdefault(name, []).append(_value(kind[1], value))
        else:
            decoded = _value(kind, value)
            # Protobuf carries zero values that Go's JSON would omit; keep replicas: 0 (a pointer).
            if decoded not in ("", False, 0) or name == "replicas" or isinstance(decoded, dict):
                out[name] = decoded
    return out


STRINGS = ("list", "string")
STRING_MAP = ("map", "string")
OBJECT_META: Message = {1: ("name", "string"), 2: ("generateName", "string"), 3: ("namespace", "string"),
                        11: ("labels", STRING_MAP), 12: ("annotations", STRING_MAP), 14: ("finalizers", STRINGS)}
LABEL_SELECTOR: Message = {1: ("matchLabels", STRING_MAP), 2: ("matchExpressions", ("list", {
    1: ("key", "string"), 2: ("operator", "string"), 3: ("values", STRINGS)}))}
CONTAINER: Message = {
    1: ("name", "string"), 2: ("image", "string"), 3: ("command", STRINGS), 4: ("args", STRINGS),
    5: ("workingDir", "string"),
    6: ("ports", ("list", {1: ("name", "string"), 2: ("hostPort", "int"), 3: ("containerPort", "int"),
                           4: ("protocol", "string"), 5: ("hostIP", "string")})),
    7: ("env", ("list", {1: ("name", "string"), 2: ("value", "string")})),
    8: ("resources", {1: ("limits", ("map", "string")), 2: ("requests", ("map", "string"))}),
    9: ("volumeMounts", ("list", {1: ("name", "string"), 2: ("readOnly", "bool"), 3: ("mountPath", "string"),
                                  4: ("subPath", "string")})),
    13: ("terminationMessagePath", "string"), 14: ("imagePullPolicy", "string"), 16: ("stdin", "bool"),
    17: ("stdinOnce", "bool"), 18: ("tty", "bool"), 20: ("terminationMessagePolicy", "string"),
}
POD_SPEC: Message = {2: ("containers", ("list", CONTAINER)), 3: ("restartPolicy", "string"),
                     4: ("terminationGracePeriodSeconds", "int"), 6: ("dnsPolicy", "string"),
                     7: ("nodeSelector", STRING_MAP), 8: ("serviceAccountName", "string"),
                     10: ("nodeName", "string"), 20: ("initContainers", ("list", CONTAINER))}
OBJECTS: dict[str, Message] = {
    "ConfigMap": {1: ("metadata", OBJECT_META), 2: ("data", STRING_MAP), 3: ("binaryData", ("map", "bytes")),
                  4: ("immutable", "bool")},
    "Secret": {1: ("metadata", OBJECT_META), 2: ("data", ("map", "bytes")), 3: ("type", "string"),
               4: ("stringData", STRING_MAP), 5: ("immutable", "bool")},
    "Namespace": {1: ("metadata", OBJECT_META), 2: ("spec", {1: ("finalizers", STRINGS)})},
    "Pod": {1: ("metadata", OBJECT_META), 2: ("spec", POD_SPEC)},
    "Deployment": {1: ("metadata", OBJECT_META), 2: ("spec", {
        1: ("replicas", "int"), 2: ("selector", LABEL_SELECTOR),
        3: ("template", {1: ("metadata", OBJECT_META), 2: ("spec", POD_SPEC)}),
        4: ("strategy", {1: ("type", "string")}), 5: ("minReadySeconds", "int"),
        6: ("revisionHistoryLimit", "int"), 7: ("paused", "bool"), 9: ("progressDeadlineSeconds", "int")})},
    "SelfSubjectAccessReview": {1: ("metadata", OBJECT_META), 2: ("spec", {
        1: ("resourceAttributes", {1: ("namespace", "string"), 2: ("verb", "string"), 3: ("group", "string"),
                                   4: ("version", "string"), 5: ("resource", "string"),
                                   6: ("subresource", "string"), 7: ("name", "string")}),
        2: ("nonResourceAttributes", {1: ("path", "string"), 2: ("verb", "string")})})},
}


def decode_object(body: bytes) -> dict[str, Any]:
    """A protobuf-encoded object as its JSON form (the kinds in OBJECTS; others are 415)."""
    if not body.startswith(MAGIC):
        raise bad_request("provided protobuf is missing the k8s magic prefix")
    try:
        unknown = dict(fields(body[len(MAGIC):]))
        type_meta = decode_message(unknown.get(1, b""), {1: ("apiVersion", "string"), 2: ("kind", "string")})
        table = OBJECTS.get(type_meta.get("kind", ""))
        if table is None:
            raise ApiError(415, f"the fake cannot decode {type_meta.get('kind')!r} from protobuf; send JSON",
                           "UnsupportedMediaType")
        raw = unknown.get(2, b"")
        obj = decode_message(raw if isinstance(raw, bytes) else b"", table)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"unable to decode protobuf body: {exc}") from None
    return {"apiVersion": type_meta.get("apiVersion", ""), "kind": type_meta["kind"], **obj}
