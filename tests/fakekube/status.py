"""Kubernetes `Status` error bodies, exactly as the real API server shapes them."""
from __future__ import annotations

import json
from typing import Any

# Reason strings by HTTP code, for the generic errors (metav1.StatusReason values).
_REASONS = {
    400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
    405: "MethodNotAllowed", 406: "NotAcceptable", 409: "Conflict", 410: "Expired",
    415: "UnsupportedMediaType", 422: "Invalid", 429: "TooManyRequests", 500: "InternalError",
}


class ApiError(Exception):
    """Raised anywhere in request handling; the server turns it into a Status response."""

    def __init__(self, code: int, message: str, reason: str | None = None,
                 details: dict[str, Any] | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or _REASONS.get(code, "Unknown")
        self.details = details

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason,
        }
        if self.details is not None:
            body["details"] = self.details
        body["code"] = self.code
        return body

    def body(self) -> bytes:
        return json.dumps(self.status()).encode()


def _details(group_resource: tuple[str, str], name: str = "") -> dict[str, Any]:
    group, resource = group_resource
    details: dict[str, Any] = {}
    if name:
        details["name"] = name
    if group:
        details["group"] = group
    details["kind"] = resource
    return details


def qualified(group_resource: tuple[str, str]) -> str:
    """`pods`, `deployments.apps`: how the API server names a group-resource in messages."""
    group, resource = group_resource
    return f"{resource}.{group}" if group else resource


def not_found(gr: tuple[str, str], name: str) -> ApiError:
    return ApiError(404, f'{qualified(gr)} "{name}" not found', "NotFound", _details(gr, name))


def already_exists(gr: tuple[str, str], name: str) -> ApiError:
    return ApiError(409, f'{qualified(gr)} "{name}" already exists', "AlreadyExists", _details(gr, name))


def conflict(gr: tuple[str, str], name: str) -> ApiError:
    return ApiError(409, f'Operation cannot be fulfilled on {qualified(gr)} "{name}": the object has been '
                         "modified; please apply your changes to the latest version and try again",
                    "Conflict", _details(gr, name))


def invalid(kind: str, name: str, group: str, field: str, problem: str) -> ApiError:
    details: dict[str, Any] = {"name": name}
    if group:
        details["group"] = group
    details["kind"] = kind
    details["causes"] = [{"reason": "FieldValueRequired" if problem.startswith("Required") else "FieldValueInvalid",
                          "message": problem, "field": field}]
    return ApiError(422, f'{kind} "{name}" is invalid: {field}: {problem}', "Invalid", details)


def bad_request(message: str) -> ApiError:
    return ApiError(400, message, "BadRequest")


def unknown_resource() -> ApiError:
    return ApiError(404, "the server could not find the requested resource", "NotFound", {})


def method_not_allowed() -> ApiError:
    return ApiError(405, "the server does not allow this method on the requested resource",
                    "MethodNotAllowed", {})


def internal(message: str) -> ApiError:
    return ApiError(500, f"Internal error occurred: {message}", "InternalError",
                    {"causes": [{"message": message}]})
