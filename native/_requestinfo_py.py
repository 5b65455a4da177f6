"""Kubernetes request attributes, pure Python: the reference that `_requestinfo_c` must match.

A port of RequestInfoFactory.NewRequestInfo (k8s.io/apiserver/pkg/endpoints/request/
requestinfo.go) with APIPrefixes {api, apis} and GrouplessAPIPrefixes {api}. `path` is the
decoded URL path (Go's URL.Path) without the gateway's cluster prefix; `query` is the raw query.
"""
import re
from urllib.parse import unquote

from native._listoptions import decode_list_options

_API_PREFIXES = frozenset({"api", "apis"})
_GROUPLESS_API_PREFIXES = frozenset({"api"})
_SPECIAL_VERBS = frozenset({"proxy", "watch"})
_SPECIAL_VERBS_NO_SUBRESOURCES = frozenset({"proxy"})
_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})
_METHOD_VERBS = {"POST": "create", "GET": "get", "HEAD": "get", "PUT": "update",
                 "PATCH": "patch", "DELETE": "delete"}
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


class RequestInfo:
    """The attributes an authorizer sees. Immutable and hashable: a decision-cache key."""

    __slots__ = ("is_resource_request", "path", "verb", "api_prefix", "api_group",
                 "api_version", "namespace", "resource", "subresource", "name", "parts")

    def __init__(self, is_resource_request, path, verb, api_prefix="", api_group="",
                 api_version="", namespace="", resource="", subresource="", name="", parts=()):
        values = (is_resource_request, path, verb, api_prefix, api_group, api_version, namespace,
                  resource, subresource, name, parts)
        for slot, value in zip(self.__slots__, values):
            object.__setattr__(self, slot, value)

    def __setattr__(self, name, value):
        raise AttributeError(f"RequestInfo.{name} is read-only")

    def _key(self) -> tuple:
        return tuple(getattr(self, slot) for slot in self.__slots__)

    def __eq__(self, other):
        if not isinstance(other, RequestInfo):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def __repr__(self) -> str:
        return "RequestInfo(" + ", ".join(f"{s}={getattr(self, s)!r}" for s in self.__slots__) + ")"


def parse_request_info(method: str, path: str, query: str) -> RequestInfo:
    """The request's attributes, as the Kubernetes API server derives them."""
    verb = method.lower()
    parts = path.strip("/").split("/") if path.strip("/") else []
    if len(parts) < 3 or parts[0] not in _API_PREFIXES:
        return RequestInfo(False, path, verb)
    api_prefix, parts = parts[0], parts[1:]
    api_group = ""
    if api_prefix not in _GROUPLESS_API_PREFIXES:
        if len(parts) < 3:
            return RequestInfo(False, path, verb, api_prefix)  # Go keeps the prefix it saw
        api_group, parts = parts[0], parts[1:]
    api_version, parts = parts[0], parts[1:]

    if parts[0] in _SPECIAL_VERBS:
        if len(parts) < 2:
            # Go returns an error here (the API server answers 500) with what it knew so far.
            return RequestInfo(True, path, verb, api_prefix, api_group, api_version)
        verb, parts = parts[0], parts[1:]
    else:
        verb = _METHOD_VERBS.get(method, "")

    namespace = ""
    if parts[0] == "namespaces" and len(parts) > 1:
        namespace = parts[1]
        # a step after the namespace that is not one of its subresources is a resource in it
        if len(parts) > 2 and parts[2] not in _NAMESPACE_SUBRESOURCES:
            parts = parts[2:]

    resource = parts[0]
    name = parts[1] if len(parts) >= 2 else ""
    subresource = ""
    if len(parts) >= 3 and verb not in _SPECIAL_VERBS_NO_SUBRESOURCES:
        subresource = parts[2]

    if not name and verb == "get":
        watch, name = decode_list_options(_first_values(query))
        verb = "watch" if watch else "list"
    if not name and verb == "delete":
        verb = "deletecollection"
    return RequestInfo(True, path, verb, api_prefix, api_group, api_version, namespace,
                       resource, subresource, name, tuple(parts))


def _first_values(query: str) -> dict:
    """The first value of each key, as Go's url.ParseQuery reads them (bad pairs are skipped)."""
    values = {}
    for pair in query.split("&"):
        if not pair or ";" in pair:
            continue
        key, _, value = pair.partition("=")
        key, value = _query_unescape(key), _query_unescape(value)
        if key is not None and value is not None:
            values.setdefault(key, value)
    return values


def _query_unescape(text: str):
    """url.QueryUnescape, or None where Go fails; bytes that are not UTF-8 are surrogateescaped."""
    if "%" not in text and "+" not in text:
        return text
    if _BAD_ESCAPE.search(text):
        return None
    return unquote(text.replace("+", " "), errors="surrogateescape")
