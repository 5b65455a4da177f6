"""The application: records, authenticates, impersonates, authorizes, then routes a request."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from . import discovery, openapi
from .access_review import review
from .auth import Authenticator, Rbac, UserInfo, forbidden, impersonate
from .codec import check_accept
from .http1 import UpgradeHandler
from .httpcore import Request, Response, send_bytes, send_json
from .logs import serve_logs
from .requestinfo import RequestInfo, parse
from .resources import group_known, lookup
from .rest import ResourceHandler
from .status import ApiError, internal, method_not_allowed, not_found, unknown_resource
from .store import Store
from .upgrade_request import UpgradeRequest

VERSION_INFO = {
    "major": "1", "minor": "32", "gitVersion": "v1.32.4",
    "gitCommit": "59526cd4867447956156ae3a602fcbac10a2c335", "gitTreeState": "clean",
    "buildDate": "2025-04-22T15:58:29Z", "goVersion": "go1.23.6", "compiler": "gc", "platform": "linux/amd64",
}
_STREAMS = ("exec", "attach", "portforward")


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    target: str                         # path + query, as sent
    headers: list[tuple[str, str]]      # lower-cased names, order and repeats kept

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name.lower()), None)

    def header_values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name.lower()]


def _accepts_json(accept: str | None) -> bool:
    types = {item.split(";")[0].strip().lower() for item in (accept or "*/*").split(",")}
    return bool(types & {"application/json", "application/*", "*/*"})


class App:
    def __init__(self, store: Store, authenticator: Authenticator, rbac: Rbac,
                 server_address: Callable[[], str]):
        self.store = store
        self.authenticator = authenticator
        self.rbac = rbac
        self.requests: list[RecordedRequest] = []
        self._server_address = server_address
        self._resources = ResourceHandler(store)

    def _record(self, request: Request) -> None:
        self.requests.append(RecordedRequest(
            request.method, request.target,
            [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers]))

    def _identify(self, request: Request) -> UserInfo:
        return impersonate(request, self.authenticator.authenticate(request), self.rbac)

    async def handle(self, request: Request, response: Response) -> None:
        self._record(request)
        user = self._identify(request)
        info = parse(request)
        if not self.rbac.allows(user, info):
            raise forbidden(user, info)
        if not info.is_resource:
            await self._non_resource(request, response)
            return
        rtype = lookup(info.group, info.version, info.resource)
        if rtype is None:
            raise unknown_resource()
        check_accept(request)
        if info.subresource == "log" and info.verb == "get":
            await serve_logs(request, response, self.store, info.namespace, info.name)
        elif info.subresource in _STREAMS:
            raise ApiError(400, "Upgrade request required", "BadRequest")
        elif rtype.plural == "selfsubjectaccessreviews":
            if info.verb != "create":
                raise method_not_allowed()
            await send_json(response, 201, review(request, user, self.rbac))
        else:
            await self._resources.handle(request, response, info, rtype)

    async def _non_resource(self, request: Request, response: Response) -> None:
        path = request.path.rstrip("/") or "/"
        parts = path.strip("/").split("/")
        accept = request.header("accept") or ""
        if request.method not in ("GET", "HEAD"):
            raise method_not_allowed()
        if path == "/version":
            await send_json(response, 200, VERSION_INFO)
        elif path in ("/healthz", "/livez", "/readyz"):
            await send_bytes(response, 200, b"ok", "text/plain; charset=utf-8")
        elif path in ("/api", "/apis") and discovery.wants_aggregated(accept):
            await send_json(response, 200, discovery.aggregated(legacy=path == "/api"), discovery.AGGREGATED_TYPE,
                            [("Vary", "Accept")])
        elif path == "/api":
            await send_json(response, 200, discovery.api_versions(self._server_address()))
        elif path == "/apis":
            await send_json(response, 200, discovery.api_group_list())
        elif parts[0] == "api" and len(parts) == 2 or parts[0] == "apis" and len(parts) == 3:
            group, version = ("", parts[1]) if parts[0] == "api" else (parts[1], parts[2])
            body = discovery.api_resource_list(group, version)
            if body is None:
                raise unknown_resource()
            await send_json(response, 200, body)
        elif parts[0] == "apis" and len(parts) == 2 and discovery.api_group(parts[1]):
            await send_json(response, 200, discovery.api_group(parts[1]))
        elif parts[0] == "openapi":
            await self._openapi(request, response, parts[1:])
        else:
            raise unknown_resource()

    async def _openapi(self, request: Request, response: Response, parts: list[str]) -> None:
        if parts == ["v2"]:
            if not _accepts_json(request.header("accept")):
                # The real server would send protobuf; the fake has no encoder for it, and says so
                # the way the real one answers an unsupported type (kubectl then falls back).
                raise ApiError(406, "only the following media types are accepted: application/json",
                               "NotAcceptable")
            body, content_type = openapi.v2_document(), "application/json"
        elif parts == ["v3"]:
            body, content_type = openapi.v3_index(), "application/json"
        elif parts[:1] == ["v3"] and "/".join(parts[1:]) in openapi.v3_documents():
            body, content_type = openapi.v3_documents()["/".join(parts[1:])], "application/json"
        else:
            raise unknown_resource()
        tag = f'"{openapi.etag(body)}"'
        if request.header("if-none-match") == tag:
            await response.start(304, [("ETag", tag)])
            await response.finish()
            return
        await send_bytes(response, 200, body, content_type, [("ETag", tag), ("Vary", "Accept")])

    async def prepare_upgrade(self, request: Request) -> UpgradeHandler | None:
        """Authorizes exec/attach/portforward upgrades, then hands the connection to remotecommand."""
        info = parse(request)
        if not (info.is_resource and info.group == "" and info.resource == "pods"
                and info.subresource in _STREAMS and info.name and group_known("", info.version)):
            return None
        self._record(request)
        user = self._identify(request)
        create = RequestInfo(True, "create", info.path, "", info.version, info.namespace, "pods",
                             info.subresource, info.name)
        get = RequestInfo(True, "get", info.path, "", info.version, info.namespace, "pods",
                          info.subresource, info.name)
        if not (self.rbac.allows(user, create) or self.rbac.allows(user, get)):
            raise forbidden(user, create)
        if self.store.get_pod(info.namespace, info.name) is None:
            raise not_found(("", "pods"), info.name)
        upgrade = UpgradeRequest(method=request.method, path=request.path, query=request.query,
                                 headers=request.headers, kind=info.subresource,  # type: ignore[arg-type]
                                 namespace=info.namespace, pod=info.name, user=user.name, groups=user.groups)
        try:
            remotecommand = importlib.import_module(f"{__package__}.remotecommand")
        except ImportError:
            raise internal(f"{info.subresource} is not available in this fake") from None
        store = self.store

        async def takeover(initial: bytes, reader: Any, writer: Any) -> None:
            await remotecommand.serve_upgrade(upgrade, initial, reader, writer, store)

        return takeover
