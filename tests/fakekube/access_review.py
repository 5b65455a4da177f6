"""SelfSubjectAccessReview: "may I?" answered from the fake's RBAC for the effective user."""
from __future__ import annotations

from typing import Any

from .auth import Rbac, UserInfo
from .codec import decode_body
from .httpcore import Request
from .requestinfo import RequestInfo
from .status import bad_request


def review(request: Request, user: UserInfo, rbac: Rbac) -> dict[str, Any]:
    body = decode_body(request)
    spec = body.get("spec") if isinstance(body, dict) else None
    if not isinstance(spec, dict):
        raise bad_request("spec is required")
    resource, non_resource = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
    if resource:
        info = RequestInfo(True, resource.get("verb", ""), "", resource.get("group", ""),
                           resource.get("version", ""), resource.get("namespace", ""),
                           resource.get("resource", ""), resource.get("subresource", ""), resource.get("name", ""))
    elif non_resource:
        info = RequestInfo(False, non_resource.get("verb", ""), non_resource.get("path", ""))
    else:
        raise bad_request('SelfSubjectAccessReview.authorization.k8s.io "" is invalid: spec.resourceAttributes: '
                          "Invalid value: exactly one of nonResourceAttributes or resourceAttributes must be specified")
    allowed = _allows(rbac, user, info)
    status: dict[str, Any] = {"allowed": allowed}
    if allowed:
        status["reason"] = rbac.reason(user)
    return {"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
            "metadata": {"creationTimestamp": None}, "spec": spec, "status": status}


def _allows(rbac: Rbac, user: UserInfo, info: RequestInfo) -> bool:
    if "*" in (info.verb, info.resource, info.group) and "admin" not in rbac.roles(user):
        return False     # wildcards ask about everything: only admin has it
    return rbac.allows(user, info)
