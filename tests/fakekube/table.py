"""meta.k8s.io/v1 Table rendering: the columns `kubectl get` prints, computed server-side."""
from __future__ import annotations

import datetime
from typing import Any, Callable

from .resources import ResourceType

TABLE_TYPE = "application/json;as=Table;v=v1;g=meta.k8s.io"

Column = tuple[str, str, str, int, Callable[[dict[str, Any]], Any]]   # name, type, format, priority, cell


def human_duration(seconds: float) -> str:
    """k8s.io/apimachinery/pkg/util/duration.HumanDuration."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y{days}d" if days else f"{hours // 24 // 365}y"
    return f"{hours // 24 // 365}y"


def _age(obj: dict[str, Any]) -> str:
    stamp = (obj.get("metadata") or {}).get("creationTimestamp")
    if not stamp:
        return "<unknown>"
    created = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    return human_duration((datetime.datetime.now(datetime.timezone.utc) - created).total_seconds())


def _name(obj: dict[str, Any]) -> str:
    return obj["metadata"]["name"]


def _pod_ready(obj: dict[str, Any]) -> str:
    statuses = (obj.get("status") or {}).get("containerStatuses") or []
    total = len((obj.get("spec") or {}).get("containers") or [])
    return f"{sum(1 for s in statuses if s.get('ready'))}/{total}"


def _pod_status(obj: dict[str, Any]) -> str:
    if obj["metadata"].get("deletionTimestamp"):
        return "Terminating"
    status = obj.get("status") or {}
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        if "waiting" in state and state["waiting"].get("reason"):
            return state["waiting"]["reason"]
        if "terminated" in state and state["terminated"].get("reason"):
            return state["terminated"]["reason"]
    return status.get("reason") or status.get("phase") or "Unknown"


def _pod_restarts(obj: dict[str, Any]) -> int:
    return sum(cs.get("restartCount", 0) for cs in (obj.get("status") or {}).get("containerStatuses") or [])


def _status(path: str) -> Callable[[dict[str, Any]], Any]:
    def cell(obj: dict[str, Any]) -> Any:
        return (obj.get("status") or {}).get(path, 0 if path.endswith("eplicas") else "<none>")
    return cell


_AGE: Column = ("Age", "string", "", 0, _age)
_NAME: Column = ("Name", "string", "name", 0, _name)

_COLUMNS: dict[str, list[Column]] = {
    "pods": [_NAME,
             ("Ready", "string", "", 0, _pod_ready),
             ("Status", "string", "", 0, _pod_status),
             ("Restarts", "string", "", 0, lambda o: str(_pod_restarts(o))),
             _AGE,
             ("IP", "string", "", 1, lambda o: (o.get("status") or {}).get("podIP") or "<none>"),
             ("Node", "string", "", 1, lambda o: (o.get("spec") or {}).get("nodeName") or "<none>"),
             ("Nominated Node", "string", "", 1, lambda o: "<none>"),
             ("Readiness Gates", "string", "", 1, lambda o: "<none>")],
    "namespaces": [_NAME, ("Status", "string", "", 0, lambda o: (o.get("status") or {}).get("phase", "")), _AGE],
    "configmaps": [_NAME, ("Data", "integer", "", 0,
                           lambda o: len(o.get("data") or {}) + len(o.get("binaryData") or {})), _AGE],
    "secrets": [_NAME, ("Type", "string", "", 0, lambda o: o.get("type", "")),
                ("Data", "integer", "", 0, lambda o: len(o.get("data") or {})), _AGE],
    "deployments": [_NAME,
                    ("Ready", "string", "", 0, lambda o: f"{(o.get('status') or {}).get('readyReplicas', 0)}/"
                                                         f"{(o.get('spec') or {}).get('replicas', 0)}"),
                    ("Up-to-date", "integer", "", 0, _status("updatedReplicas")),
                    ("Available", "integer", "", 0, _status("availableReplicas")),
                    _AGE],
    "events": [("Last Seen", "string", "", 0, lambda o: _age({"metadata": {"creationTimestamp":
                                                                        o.get("lastTimestamp")}})),
               ("Type", "string", "", 0, lambda o: o.get("type", "")),
               ("Reason", "string", "", 0, lambda o: o.get("reason", "")),
               ("Object", "string", "", 0, lambda o: f"{(o.get('involvedObject') or {}).get('kind', '').lower()}/"
                                                     f"{(o.get('involvedObject') or {}).get('name', '')}"),
               ("Message", "string", "", 0, lambda o: o.get("message", ""))],
}
_DEFAULT: list[Column] = [_NAME, ("Created At", "date", "", 0,
                                  lambda o: o["metadata"].get("creationTimestamp"))]


def _row_object(obj: dict[str, Any], include: str) -> dict[str, Any] | None:
    if include == "None":
        return None
    if include == "Object":
        return obj
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]}


def table(rtype: ResourceType, objects: list[dict[str, Any]], list_meta: dict[str, Any],
          include_object: str = "Metadata", with_columns: bool = True) -> dict[str, Any]:
    """A Table of `objects`. `include_object`: None | Metadata (default) | Object."""
    columns = _COLUMNS.get(rtype.plural, _DEFAULT)
    rows = []
    for obj in objects:
        row: dict[str, Any] = {"cells": [cell(obj) for *_, cell in columns]}
        embedded = _row_object(obj, include_object)
        if embedded is not None:
            row["object"] = embedded
        rows.append(row)
    result: dict[str, Any] = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta}
    if with_columns:
        result["columnDefinitions"] = [
            {"name": name, "type": type_, "format": fmt, "description": f"{name} of the {rtype.singular}",
             "priority": priority} for name, type_, fmt, priority, _ in columns]
    result["rows"] = rows
    return result


def wants_table(accept: str) -> bool:
    for item in accept.split(","):
        params = {k.strip(): v.strip() for k, _, v in (p.partition("=") for p in item.split(";")[1:])}
        if params.get("as") == "Table" and params.get("g") == "meta.k8s.io" and params.get("v") == "v1":
            return True
    return False
