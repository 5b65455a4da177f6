"""Request attributes (verb, group, resource, namespace, name, subresource) as the API server derives them."""
from __future__ import annotations

from dataclasses import dataclass

from .httpcore import Request
from .selectors import field_name_exact

_NAMESPACE_SUBRESOURCES = {"status", "finalize"}
_METHOD_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete", "GET": "get",
                 "HEAD": "get"}


@dataclass(frozen=True)
class RequestInfo:
    is_resource: bool
    verb: str
    path: str
    group: str = ""
    version: str = ""
    namespace: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""

    @property
    def full_resource(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


def parse(request: Request) -> RequestInfo:
    path = request.path
    parts = [p for p in path.strip("/").split("/") if p]
    non_resource = RequestInfo(False, request.method.lower(), path)
    if not parts or parts[0] not in ("api", "apis"):
        return non_resource
    if parts[0] == "api":
        if len(parts) < 2:
            return non_resource
        group, version, rest = "", parts[1], parts[2:]
    else:
        if len(parts) < 3:
            return non_resource
        group, version, rest = parts[1], parts[2], parts[3:]
    if not rest:
        return non_resource

    verb = _METHOD_VERBS.get(request.method, request.method.lower())
    if rest[0] == "watch":          # legacy /api/v1/watch/... paths
        verb, rest = "watch", rest[1:]
    namespace = ""
    if rest and rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in _NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    if not rest:
        return non_resource
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""

    if verb != "watch":
        if not name and verb == "get":
            verb = "watch" if request.flag("watch") else "list"
        elif not name and verb == "delete":
            verb = "deletecollection"
    if verb in ("list", "watch") and not name:
        # A list/watch of one object by metadata.name is authorized as that name.
        name = field_name_exact(request.arg("fieldSelector"), "metadata.name") or ""
    return RequestInfo(True, verb, path, group, version, namespace, resource, subresource, name)
