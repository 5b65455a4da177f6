"""The hand-over contract between the HTTP server and the upgrade handlers (exec/attach/port-forward).

The server authenticates, impersonates and authorizes an upgrade request like any other, then
calls `tests.fakekube.remotecommand.serve_upgrade(request, initial, reader, writer, store)` with
one of these. serve_upgrade writes the 101 (or an error response) itself.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

UpgradeKind = Literal["exec", "attach", "portforward"]


@dataclass(frozen=True)
class UpgradeRequest:
    method: str                              # "GET" (WebSocket) or "POST" (SPDY/3.1)
    path: str                                # path without the query string
    query: dict[str, list[str]]              # repeated keys kept in order (command=ls&command=-la)
    headers: list[tuple[bytes, bytes]]       # lower-cased names, order and repeats kept
    kind: UpgradeKind
    namespace: str
    pod: str
    user: str                                # the effective (impersonated) user
    groups: tuple[str, ...] = field(default=())

    def header(self, name: bytes) -> bytes | None:
        """First value of a header (name lower-case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def header_values(self, name: bytes) -> list[bytes]:
        """Every value of a repeated header, in order."""
        return [value for key, value in self.headers if key == name]
