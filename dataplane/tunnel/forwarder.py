"""The agent's side of one tunnel stream: verify the gateway's identity assertion, impersonate
with the agent's own credential, forward to the API server, stream the answer back.

The request arrives as a pipeline `Request` from the gateway's HTTP/2 server (`H2Protocol`
serving the tunnel); the API server is reached with the gateway's own upstream pool, so the
agent's side of streaming and flow control is the gateway's. Nothing the gateway sent may prove
or borrow an identity: Authorization, Impersonate-*, X-Remote-* and AccessPoint's own fields
are dropped, and Impersonate-* come from the verified assertion only. Refusals are 403 Status
objects that name the reason (never a secret), so kubectl prints why.
"""
from __future__ import annotations

import asyncio
import base64
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from native.requestinfo import parse_request_info

from .. import headers as hdrs
from .. import status
from ..flow import ConnectionGone
from ..splice import splice
from ..status import StatusError
from ..upstream import UpstreamProtocolError, UpstreamUnavailable, parse_endpoint
from . import protocol
from .assertion import Assertion, AssertionRefused, AssertionVerifier

log = logging.getLogger("accesspoint.agent")

_DROPPED = hdrs.HOP_BY_HOP | {b"host", b"authorization", b"cookie", b"content-length", b"expect"}
_DROPPED_PREFIXES = (b"impersonate-", b"x-remote-", b"proxy-") + protocol.RESERVED_PREFIXES


@dataclass(frozen=True)
class ApiServer:
    """The in-cluster API server, shaped as the upstream pool's idea of a cluster."""
    name: str
    endpoint: str
    ca_bundle: str
    credential: None = None
    tunnel: bool = False


class TokenFile:
    """The agent's service-account token, re-read when the file changes (projected tokens
    rotate); looked at no more than once a second."""

    def __init__(self, path: str, check_interval: float = 1.0):
        self.path = path
        self.check_interval = check_interval
        self._token = ""
        self._mtime = -1
        self._checked = -float("inf")

    def token(self) -> str:
        now = time.monotonic()
        if now - self._checked >= self.check_interval:
            self._checked = now
            mtime = os.stat(self.path).st_mtime_ns
            if mtime != self._mtime:
                self._token = Path(self.path).read_text(encoding="ascii").strip()
                self._mtime = mtime
        return self._token


class _ResponseWriter:
    """The gateway's side of an upgraded session, as splice() writes to it."""

    def __init__(self, response):
        self._response = response
        self._ending: asyncio.Future | None = None

    async def write(self, data: bytes) -> None:
        await self._response.write(data)

    def can_write_eof(self) -> bool:
        return True               # END_STREAM is a half-close

    def write_eof(self) -> None:
        if self._ending is None:
            self._ending = asyncio.ensure_future(self._response.end())

    def close(self) -> None:
        pass                      # the stream ends with the handler


class Forwarder:
    def __init__(self, verifier: AssertionVerifier, pool, api: ApiServer, token: TokenFile):
        self.verifier = verifier
        self.pool = pool
        self.api = api
        self.token = token
        self.endpoint = parse_endpoint(api.endpoint)

    async def handle(self, request, response, on_control: Callable[[bytes, list], None]) -> None:
        control = hdrs.header_value(request.headers, protocol.CONTROL_HEADER)
        if control is not None:
            on_control(control, request.headers)
            await response.start(204, [])
            await response.end()
            return
        try:
            assertion = self.verifier.verify(hdrs.header_value(request.headers, protocol.ASSERTION_HEADER),
                                             request.method, request.target)
            await self._forward(request, response, assertion)
        except AssertionRefused as exc:
            log.warning("refused %s %s: %s", request.method, request.target.partition("?")[0][:256], exc.reason)
            await self._answer(response, status.forbidden(
                f'the agent of cluster "{self.verifier.cluster}" refused the request: {exc.reason}'))
        except StatusError as err:
            await self._answer(response, err)

    @staticmethod
    async def _answer(response, err: StatusError) -> None:
        if response.started:
            raise ConnectionGone("error after the response started")
        await response.send_status(err)
        await response.end()

    def _headers(self, request, assertion: Assertion, upgrade: bytes | None) -> list[tuple[bytes, bytes]]:
        named = hdrs.connection_tokens(request.headers)
        out = [(b"host", self.endpoint.host_header)]
        out += [(name, value) for name, value in request.headers
                if name not in _DROPPED and name not in named and not name.startswith(_DROPPED_PREFIXES)]
        if upgrade is not None:
            out += [(b"connection", b"Upgrade"), (b"upgrade", upgrade)]
            if request.method != "GET":
                out.append((b"content-length", b"0"))     # kubectl's SPDY POST; no body before the switch
        else:
            body = request.body
            if body.chunked:
                out.append((b"transfer-encoding", b"chunked"))
            elif body.length is not None:
                out.append((b"content-length", str(body.length).encode()))
        try:
            token = self.token.token()
        except OSError:
            log.error("the token file %s cannot be read", self.token.path)
            raise status.unavailable(f'the agent of cluster "{self.api.name}" cannot read its credential') from None
        if token:
            out.append((b"authorization", b"Bearer " + token.encode("ascii")))
        try:
            out += assertion.impersonation_headers()
        except UnicodeEncodeError:
            raise AssertionRefused("the identity assertion cannot be encoded") from None
        return out

    def _long_lived(self, request) -> bool:
        path, _, query = request.target.partition("?")
        try:
            info = parse_request_info(request.method, path, query)
        except ValueError:
            return False
        return info.verb == "watch" or info.subresource == "log"

    async def _exchange(self, request, assertion: Assertion, upgrade: bytes | None):
        """(connection, response head, body pump or None), as the gateway's pipeline does it."""
        headers = self._headers(request, assertion, upgrade)
        empty = upgrade is not None or request.body.empty
        for attempt in (0, 1):
            try:
                conn = await self.pool.acquire(self.api, 1, fresh=attempt > 0, upgrade=upgrade is not None,
                                               long_lived=self._long_lived(request))
            except UpstreamUnavailable as exc:
                raise status.cluster_unreachable(self.api.name, f"the agent cannot reach its API server: "
                                                                f"{exc.reason}") from None
            pump = None
            try:
                conn.send_request(request.method, request.target, headers)
                if empty:
                    await conn.end_body()
                else:
                    pump = asyncio.ensure_future(self._pump(request.body, conn))
                return conn, await conn.read_head(), pump
            except UpstreamProtocolError as exc:
                if pump is not None:
                    pump.cancel()
                self.pool.discard(conn)
                if exc.before_response and conn.reused and empty and attempt == 0:
                    continue          # a pooled connection the API server had closed
                raise status.bad_gateway(self.api.name, exc.reason) from None
            except BaseException:
                if pump is not None:
                    pump.cancel()
                self.pool.discard(conn)
                raise
        raise AssertionError("unreachable")

    @staticmethod
    async def _pump(body, conn) -> None:
        while data := await body.read():
            await conn.send_body(data)
        await conn.end_body()

    async def _forward(self, request, response, assertion: Assertion) -> None:
        upgrade = hdrs.header_value(request.headers, protocol.UPGRADE_HEADER)
        conn, head, pump = await self._exchange(request, assertion, upgrade)
        clean = False
        try:
            if head.status == 101:
                if upgrade is None:
                    raise status.bad_gateway(self.api.name, "101 Switching Protocols to a request without Upgrade")
                await response.start(200, [(protocol.SWITCHED_HEADER, base64.b64encode(conn.raw_head))])
                api_reader, api_writer = conn.detach()
                await splice(request.body, _ResponseWriter(response), api_reader, api_writer)
                await response.end()
                return
            await response.start(head.status, hdrs.downstream_response_headers(head.headers))
            while True:
                try:
                    data = await conn.read_body()
                except UpstreamProtocolError:
                    raise ConnectionGone("the API server failed mid-response") from None
                if not data:
                    break
                await response.write(data)
            await response.end()
            clean = pump is None or (pump.done() and not pump.cancelled() and pump.exception() is None)
        finally:
            if pump is not None and not pump.done():
                pump.cancel()
            if clean:
                self.pool.release(conn)
            else:
                self.pool.discard(conn)
