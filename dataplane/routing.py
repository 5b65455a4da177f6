"""`/clusters/<name>/<kubernetes path>` → cluster name + normalised upstream path + raw query.

Normalisation happens once, here, before any decision; the path that the decision is made on is
byte for byte the path forwarded upstream. Rules (strict on purpose: ambiguity is refused with
400, never guessed):

- origin-form only (`/...`); absolute-form, authority-form, `*` and fragments → 400;
- percent-escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded (`%61` → `a`,
  `%2E` → `.`); any other escape (`%2F`, `%5C`, `%25`, `%00`, `%3F`, non-ASCII…) → 400, since
  the API server and the gateway could read it differently; a malformed escape → 400;
- after decoding, every character must be a plain `pchar` (RFC 3986) or `/`: no backslash, no
  control character, no space, no non-ASCII → 400;
- no empty segments (`//`) except one trailing slash, no `.` or `..` segments (whether written
  plainly or as `%2E`) → 400;
- the query string is forwarded byte for byte (`?` and everything after it, unchanged).

The upstream path is the decoded path without `/clusters/<name>` (`/` when nothing follows).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .status import StatusError, bad_request, not_found

PREFIX = "clusters"

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# pchar minus "%" (RFC 3986: unreserved / sub-delims / ":" / "@"), plus "/"
_ALLOWED = _UNRESERVED | frozenset("!$&'()*+,;=:@/")
_HEX = frozenset("0123456789abcdefABCDEF")
_CLUSTER_NAME = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,251}[a-z0-9])?$")


@dataclass(frozen=True)
class Route:
    cluster: str
    path: str        # upstream path, normalised, starts with "/"
    query: str       # raw query without "?", byte for byte ("" when absent)
    has_query: bool  # "?" was present (an empty query is forwarded as "?")

    @property
    def upstream_target(self) -> str:
        return self.path + ("?" + self.query if self.has_query else "")


# a path with no escape and only allowed characters (nearly every request) decodes to itself
_PLAIN = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/]*")


def _decode(raw: str) -> str:
    if _PLAIN.fullmatch(raw):
        return raw
    out: list[str] = []
    i = 0
    n = len(raw)
    while i < n:
        c = raw[i]
        if c == "%":
            pair = raw[i + 1:i + 3]
            if len(pair) != 2 or pair[0] not in _HEX or pair[1] not in _HEX:
                raise bad_request("malformed percent-encoding in the request path")
            decoded = chr(int(pair, 16))
            if decoded not in _UNRESERVED:
                raise bad_request(
                    f"ambiguous percent-encoding %{pair.upper()} in the request path is not allowed")
            out.append(decoded)
            i += 3
            continue
        if c not in _ALLOWED:
            raise bad_request("invalid character in the request path")
        out.append(c)
        i += 1
    return "".join(out)


def normalise_path(raw_path: str) -> str:
    """The decoded, checked path (raises StatusError 400)."""
    if not raw_path.startswith("/"):
        raise bad_request("the request target must be an absolute path")
    path = _decode(raw_path)
    segments = path[1:].split("/")
    for index, segment in enumerate(segments):
        if segment == "" and index != len(segments) - 1:
            raise bad_request("empty path segments (//) are not allowed")
        if segment in (".", ".."):
            raise bad_request("dot segments (. or ..) are not allowed in the request path")
    return path


def split_target(target: str) -> tuple[str, str, bool]:
    if "#" in target:
        raise bad_request("a fragment is not allowed in the request target")
    path, sep, query = target.partition("?")
    return path, query, bool(sep)


def route(target: str | bytes) -> Route:
    """Route a raw request-target. Raises StatusError: 400 (malformed/ambiguous), 404 (not a
    /clusters/<name>/ path). Whether the cluster exists is the caller's question."""
    if isinstance(target, (bytes, bytearray)):
        try:
            target = bytes(target).decode("ascii")
        except UnicodeDecodeError:
            raise bad_request("non-ASCII bytes in the request target") from None
    if target == "*" or not target.startswith("/"):
        raise bad_request("only origin-form request targets (/path) are accepted")
    raw_path, query, has_query = split_target(target)
    path = normalise_path(raw_path)
    segments = path[1:].split("/")
    if len(segments) < 2 or segments[0] != PREFIX or not segments[1]:
        raise not_found(f"the gateway serves /{PREFIX}/<cluster>/<kubernetes path>; "
                        f"no route for {path!r}")
    name = segments[1]
    if not _CLUSTER_NAME.match(name):
        raise StatusError(404, f'cluster "{name}" not found', details={"name": name, "kind": "clusters"})
    rest = segments[2:]
    upstream_path = "/" + "/".join(rest)
    return Route(cluster=name, path=upstream_path, query=query, has_query=has_query)
