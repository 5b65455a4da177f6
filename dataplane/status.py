"""Kubernetes `Status` objects for every error the gateway answers itself.

One place for all of them, so that kubectl always prints a clear message. The body is the one the
API server would send (`metav1.Status`); the reason is one of the Kubernetes `StatusReason`
values where one exists for the code, otherwise `""` (`StatusReasonUnknown`), which kubectl
accepts and prints the message for.

`StatusError` is what the pipeline raises; the protocol layers turn it into a response with
`render()` (a whole HTTP/1.1 response, for errors answered before a pipeline runs, such as
parse errors and the head timeout) or `status_headers()` + `body` (through a `Response`).
"""
from __future__ import annotations

import functools
import json
from http import HTTPStatus

# code -> Kubernetes StatusReason (k8s.io/apimachinery/pkg/apis/meta/v1/types.go)
REASONS: dict[int, str] = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    408: "Timeout",
    409: "Conflict",
    410: "Gone",
    413: "RequestEntityTooLarge",
    414: "RequestEntityTooLarge",   # no Kubernetes reason of its own: the request line is too large
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    431: "RequestEntityTooLarge",   # no Kubernetes reason of its own: the head is too large
    500: "InternalError",
    501: "",                        # StatusReasonUnknown: Kubernetes has no NotImplemented reason
    502: "ServiceUnavailable",
    503: "ServiceUnavailable",
    504: "Timeout",
}


@functools.lru_cache(maxsize=None)     # once per status code, not per response
def phrase(code: int) -> str:
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return "Unknown"


def status_body(code: int, message: str, reason: str | None = None,
                details: dict | None = None) -> dict:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": REASONS.get(code, "") if reason is None else reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return body


def status_bytes(code: int, message: str, reason: str | None = None,
                 details: dict | None = None) -> bytes:
    return json.dumps(status_body(code, message, reason, details), separators=(",", ":")).encode()


class StatusError(Exception):
    """An error the gateway answers itself with a Kubernetes Status (raised inside the pipeline).

    `message` is shown to the caller: it must never carry a secret.
    """

    def __init__(self, code: int, message: str, reason: str | None = None,
                 details: dict | None = None, headers: list[tuple[bytes, bytes]] | None = None,
                 close: bool = False):
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = REASONS.get(code, "") if reason is None else reason
        self.details = details
        self.extra_headers = list(headers or ())
        self.close = close            # the connection must close after this answer

    @property
    def body(self) -> bytes:
        return status_bytes(self.code, self.message, self.reason, self.details)

    def status_headers(self, body_length: int) -> list[tuple[bytes, bytes]]:
        headers = [
            (b"content-type", b"application/json"),
            (b"cache-control", b"no-store"),
            (b"x-content-type-options", b"nosniff"),
            (b"content-length", str(body_length).encode()),
        ]
        headers += self.extra_headers
        return headers

    def render(self, close: bool = True, extra: list[tuple[bytes, bytes]] = ()) -> bytes:
        """The whole HTTP/1.1 response (status line, headers, body)."""
        body = self.body
        lines = [f"HTTP/1.1 {self.code} {phrase(self.code)}".encode()]
        for name, value in self.status_headers(len(body)) + list(extra):
            lines.append(name + b": " + value)
        if close:
            lines.append(b"connection: close")
        return b"\r\n".join(lines) + b"\r\n\r\n" + body


# --- the errors the gateway answers, one constructor each --------------------------------------

def bad_request(message: str, close: bool = False) -> StatusError:
    return StatusError(400, message, close=close)


def unauthorized(message: str = "Unauthorized") -> StatusError:
    return StatusError(401, message)


def forbidden(message: str, details: dict | None = None) -> StatusError:
    return StatusError(403, message, details=details)


def not_found(message: str, details: dict | None = None) -> StatusError:
    return StatusError(404, message, details=details)


def cluster_not_found(name: str) -> StatusError:
    return StatusError(404, f'cluster "{name}" not found',
                       details={"name": name, "kind": "clusters"})


def request_timeout(message: str = "the request head was not received in time") -> StatusError:
    return StatusError(408, message, close=True)


def entity_too_large(message: str = "the request body is too large") -> StatusError:
    return StatusError(413, message, close=True)


def uri_too_long(message: str = "the request line is too long") -> StatusError:
    return StatusError(414, message, close=True)


def head_too_large(message: str = "the request header fields are too large") -> StatusError:
    return StatusError(431, message, close=True)


def too_many_requests(message: str = "too many requests, please try again later",
                      retry_after: int = 1) -> StatusError:
    return StatusError(429, message, details={"retryAfterSeconds": retry_after},
                       headers=[(b"retry-after", str(retry_after).encode())])


def not_implemented(message: str) -> StatusError:
    return StatusError(501, message, close=True)


def bad_gateway(cluster: str, reason: str) -> StatusError:
    return StatusError(502, f'cluster "{cluster}" answered badly: {reason}',
                       reason="ServiceUnavailable")


def unavailable(message: str, retry_after: int | None = None) -> StatusError:
    headers = [(b"retry-after", str(retry_after).encode())] if retry_after else None
    return StatusError(503, message, headers=headers)


def cluster_unreachable(cluster: str, reason: str) -> StatusError:
    return StatusError(503, f'cluster "{cluster}" is unreachable: {reason}')


def gateway_timeout(message: str) -> StatusError:
    return StatusError(504, message)


def internal_error(message: str = "internal error in the gateway") -> StatusError:
    return StatusError(500, message)


def from_parse_error(exc) -> StatusError:
    """A native.httpparse.HttpParseError as the Status to answer (always closing)."""
    code = int(getattr(exc, "status", 400) or 400)
    reason = str(getattr(exc, "reason", "") or "malformed request")
    return StatusError(code, f"malformed HTTP request: {reason}", close=True)
