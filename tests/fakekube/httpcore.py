"""Protocol-independent request/response types.

The application (`api.App`) only sees a `Request` and writes to a `Response`; the HTTP/1.1 layer
(`http1.py`) implements `Response` over h11, and an HTTP/2 layer can implement it over h2 streams
without touching the application.
"""
from __future__ import annotations

import abc
import email.utils
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass
class Request:
    method: str
    target: str                                    # raw request-target, path + query
    headers: list[tuple[bytes, bytes]]             # lower-cased names, order and repeats kept
    body: bytes = b""
    peer_cert: dict[str, Any] | None = None        # ssl.getpeercert() of a verified client certificate
    path: str = field(init=False)
    query: dict[str, list[str]] = field(init=False)

    def __post_init__(self) -> None:
        split = urlsplit(self.target)
        self.path = unquote(split.path) or "/"
        self.query = parse_qs(split.query, keep_blank_values=True)

    def header(self, name: str) -> str | None:
        key = name.lower().encode()
        for k, v in self.headers:
            if k == key:
                return v.decode("latin-1")
        return None

    def header_values(self, name: str) -> list[str]:
        key = name.lower().encode()
        return [v.decode("latin-1") for k, v in self.headers if k == key]

    def arg(self, name: str, default: str = "") -> str:
        values = self.query.get(name)
        return values[0] if values else default

    def flag(self, name: str) -> bool:
        return self.arg(name).lower() in ("true", "1")


class Response(abc.ABC):
    """One response. `start` once, then any number of `write`s (each flushed), then `finish`."""

    started: bool = False

    @abc.abstractmethod
    async def start(self, status: int, headers: list[tuple[str, str]]) -> None: ...

    @abc.abstractmethod
    async def write(self, data: bytes) -> None: ...

    @abc.abstractmethod
    async def finish(self) -> None: ...


def standard_headers(content_type: str, length: int | None = None) -> list[tuple[str, str]]:
    headers = [("Content-Type", content_type), ("Cache-Control", "no-cache, private"),
               ("Date", email.utils.formatdate(usegmt=True))]
    if length is not None:
        headers.append(("Content-Length", str(length)))
    return headers


async def send_bytes(response: Response, status: int, body: bytes, content_type: str,
                     extra: list[tuple[str, str]] | None = None) -> None:
    await response.start(status, standard_headers(content_type, len(body)) + (extra or []))
    if body:
        await response.write(body)
    await response.finish()


async def send_json(response: Response, status: int, obj: Any, content_type: str = "application/json",
                    extra: list[tuple[str, str]] | None = None) -> None:
    await send_bytes(response, status, json.dumps(obj, separators=(",", ":")).encode() + b"\n",
                     content_type, extra)
