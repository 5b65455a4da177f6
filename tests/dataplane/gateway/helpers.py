"""Test harness for the gateway: a real gateway worker (in-process, uvloop, real TLS on loopback),
small TLS upstream API servers written here, and a raw HTTP/1.1 client over TLS."""
from __future__ import annotations

import asyncio
import hashlib
import json
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable

import uvloop

from dataplane.config import GatewayConfig
from dataplane.pki import CertificateAuthority
from dataplane.server import Worker
from dataplane.signing import generate_signing_key, write_public_key
from dataplane.snapshot import sign_snapshot


def run(coro_fn: Callable[[], Awaitable], timeout: float = 30.0):
    """Run an async test body on a fresh uvloop event loop."""
    async def guarded():
        try:
            async with asyncio.timeout(timeout):
                return await coro_fn()
        finally:
            # every task the test left behind must end on cancellation (a stuck one is a bug)
            me = asyncio.current_task()
            left = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
            for task in left:
                task.cancel()
            if left:
                _, stuck = await asyncio.wait(left, timeout=5)
                assert not stuck, f"tasks ignore cancellation: {stuck}"

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(guarded())


# -- a small upstream API server ----------------------------------------------------------------------

@dataclass
class UpRequest:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name.lower():
                return v
        return None

    def values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name.lower()]


async def read_head(reader: asyncio.StreamReader) -> tuple[str, list[tuple[str, str]]] | None:
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = raw.decode("latin-1").split("\r\n")
    headers = []
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(":")
            headers.append((k.strip().lower(), v.strip()))
    return lines[0], headers


async def read_chunked(reader: asyncio.StreamReader) -> bytes:
    out = bytearray()
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass
            return bytes(out)
        out += await reader.readexactly(size)
        assert await reader.readexactly(2) == b"\r\n"


async def read_upstream_request(reader: asyncio.StreamReader) -> UpRequest | None:
    parsed = await read_head(reader)
    if parsed is None:
        return None
    line, headers = parsed
    method, target, _ = line.split(" ", 2)
    hd = dict(headers)
    if hd.get("transfer-encoding") == "chunked":
        body = await read_chunked(reader)
    elif "content-length" in hd:
        body = await reader.readexactly(int(hd["content-length"]))
    else:
        body = b""
    return UpRequest(method, target, headers, body)


def raw_handler(fn):
    """Mark an upstream handler that takes (reader, writer) and owns the connection."""
    fn.raw = True
    return fn


UpHandler = Callable[[UpRequest, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]


async def echo_handler(req: UpRequest, reader, writer) -> bool:
    """200 with a JSON echo of what arrived; keeps the connection alive."""
    body = json.dumps({"method": req.method, "target": req.target, "headers": req.headers,
                       "body": req.body.decode("latin-1")}).encode()
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
                 % len(body) + body)
    await writer.drain()
    return True


class Upstream:
    """A TLS API server on loopback; `handler` answers each request (returns keep-alive)."""

    def __init__(self, ca: CertificateAuthority, handler: UpHandler = echo_handler):
        self.ca = ca
        self.handler = handler
        self.requests: list[UpRequest] = []
        self.connections = 0
        self.request_seen = asyncio.Event()
        self._server = None
        self.tasks: set[asyncio.Task] = set()

    async def start(self, tmp: Path) -> None:
        issued = self.ca.issue_server(["127.0.0.1"])
        cert, key = tmp / f"up{id(self)}.crt", tmp / f"up{id(self)}.key"
        issued.write(cert, key)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        ctx.set_alpn_protocols(["http/1.1"])
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=ctx)

    @property
    def port(self) -> int:
        return self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader, writer) -> None:
        self.connections += 1
        self.tasks.add(asyncio.current_task())
        try:
            if getattr(self.handler, "raw", False):     # the handler owns the whole connection
                await self.handler(reader, writer)
                return
            while True:
                req = await read_upstream_request(reader)
                if req is None:
                    break
                self.requests.append(req)
                self.request_seen.set()
                if not await self.handler(req, reader, writer):
                    break
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, asyncio.CancelledError):
            pass
        finally:
            self.tasks.discard(asyncio.current_task())
            writer.close()

    async def close(self) -> None:
        self._server.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


# -- environment: PKI, snapshot, gateway ----------------------------------------------------------------

def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


ALL_RULE = {"verbs": ["*"], "api_groups": ["*"], "resources": ["*"], "resource_names": [],
            "namespaces": [], "non_resource_urls": []}
NONRES_RULE = {"verbs": ["*"], "api_groups": [], "resources": [], "resource_names": [],
               "namespaces": [], "non_resource_urls": ["*"]}
IMPERSONATE_RULE = {"verbs": ["impersonate"], "api_groups": [""], "resources": ["users", "groups"],
                    "resource_names": [], "namespaces": [], "non_resource_urls": []}


def snapshot_dict(clusters: dict[str, tuple[int, bytes]], revision: int = 1) -> dict:
    """alice (cert, group devs): everything on alpha only; bob (token): impersonate on alpha;
    carol: everything on alpha and gamma (gamma: an unreachable cluster in some tests)."""
    return {
        "format": "accesspoint.snapshot/v1",
        "revision": revision,
        "issued_at": "2026-11-23T08:00:00Z",
        "clusters": [
            {"name": name, "labels": {"env": "dev"}, "endpoint": f"https://127.0.0.1:{port}",
             "tunnel": False, "ca_bundle": ca_pem.decode(),
             "credential": {"kind": "token", "ref": f"file:{name}.token"},
             "identity_mode": "impersonate", "kubectl_enabled": True}
            for name, (port, ca_pem) in clusters.items()
        ],
        "roles": [
            {"name": "all", "rules": [ALL_RULE, NONRES_RULE]},
            {"name": "impersonator", "rules": [IMPERSONATE_RULE]},
        ],
        "bindings": [
            {"name": "alice-alpha", "role": "all", "subjects": [{"kind": "user", "name": "alice"}],
             "clusters": {"names": ["alpha"]}},
            {"name": "carol-alpha", "role": "all", "subjects": [{"kind": "user", "name": "carol"}],
             "clusters": {"names": ["alpha", "gamma"]}},
            {"name": "bob-impersonates", "role": "impersonator",
             "subjects": [{"kind": "user", "name": "bob"}], "clusters": {"names": ["alpha"]}},
        ],
        "tokens": [
            {"id": "t-bob", "sha256": sha("bob-token"), "user": "bob", "groups": ["ops"], "component": None},
            {"id": "t-eve", "sha256": sha("eve-token"), "user": "eve", "groups": [], "component": None},
        ],
        "revocations": {"users": [], "groups": [], "cert_serials": [], "token_ids": [], "sessions": []},
        "settings": {},
    }


@dataclass
class Env:
    tmp: Path
    client_ca: CertificateAuthority
    server_ca: CertificateAuthority
    cluster_ca: CertificateAuthority
    upstreams: dict[str, Upstream] = field(default_factory=dict)
    worker: Worker | None = None
    config: GatewayConfig | None = None
    clients: list = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.worker.server.port

    def client_ssl(self, user: str | None = "alice", groups=("devs",)) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cadata=self.server_ca.cert_pem.decode())
        if user is not None:
            issued = self.client_ca.issue_client(user, list(groups))
            cert, key = self.tmp / f"client-{user}.crt", self.tmp / f"client-{user}.key"
            issued.write(cert, key)
            ctx.load_cert_chain(cert, key)
        return ctx

    async def connect(self, user: str | None = "alice", groups=("devs",)) -> "Client":
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", self.port, ssl=self.client_ssl(user, groups), server_hostname="127.0.0.1")
        client = Client(reader, writer)
        self.clients.append(client)
        return client

    def audit_events(self) -> list[dict]:
        self.worker.audit.fsync()
        text = Path(self.config.audit_spool).read_text()
        return [json.loads(line) for line in text.splitlines() if line]

    async def close(self) -> None:
        for client in self.clients:
            await client.close()
        if self.worker is not None:
            await self.worker.stop(grace=0)
        for up in self.upstreams.values():
            await up.close()


async def make_env(tmp: Path, handlers: dict[str, UpHandler] | None = None, *,
                   unreachable: dict[str, int] | None = None,
                   cluster_ca: CertificateAuthority | None = None, **config_overrides) -> Env:
    """`unreachable`: clusters at these ports that nothing here serves (or that another server,
    such as a FakeKube with a certificate from `cluster_ca`, serves)."""
    env = Env(tmp=tmp, client_ca=CertificateAuthority.create("clients"),
              server_ca=CertificateAuthority.create("gateway"),
              cluster_ca=cluster_ca or CertificateAuthority.create("cluster"))
    handlers = handlers if handlers is not None else {"alpha": echo_handler, "beta": echo_handler}
    secrets = tmp / "secrets"
    secrets.mkdir(exist_ok=True)
    clusters = {}
    for name, handler in handlers.items():
        up = Upstream(env.cluster_ca, handler)
        await up.start(tmp)
        env.upstreams[name] = up
        clusters[name] = (up.port, env.cluster_ca.cert_pem)
        (secrets / f"{name}.token").write_text(f"gateway-token-{name}\n")
    for name, port in (unreachable or {}).items():
        clusters[name] = (port, env.cluster_ca.cert_pem)
        (secrets / f"{name}.token").write_text(f"gateway-token-{name}\n")
    key = generate_signing_key()
    write_public_key(key.public_key(), tmp / "snapshot.pub")
    (tmp / "snapshot.json").write_bytes(sign_snapshot(snapshot_dict(clusters), key))
    env.server_ca.issue_server(["127.0.0.1"]).write(tmp / "gw.crt", tmp / "gw.key")
    (tmp / "client-ca.pem").write_bytes(env.client_ca.cert_pem)
    options = dict(listen="127.0.0.1:0", tls_cert=str(tmp / "gw.crt"), tls_key=str(tmp / "gw.key"),
                   client_ca=str(tmp / "client-ca.pem"), snapshot=str(tmp / "snapshot.json"),
                   snapshot_public_key=str(tmp / "snapshot.pub"), secrets_dir=str(secrets),
                   audit_spool=str(tmp / "audit.jsonl"), admin_listen="127.0.0.1:0")
    options.update(config_overrides)
    env.config = GatewayConfig(**options)
    env.config.validate()
    env.worker = Worker(env.config)
    await env.worker.start()
    assert env.worker.holder.current is not None
    return env


# -- a raw HTTP/1.1 client -----------------------------------------------------------------------------

@dataclass
class Resp:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    raw_head: bytes = b""

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name.lower():
                return v
        return None

    def json(self):
        return json.loads(self.body)


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def request(self, method: str, path: str, headers: dict | list = (), body: bytes = b"") -> Resp:
        self.send(build_request(method, path, headers, body))
        return await self.response(head_only=method == "HEAD")

    async def response(self, head_only: bool = False) -> Resp:
        parsed = await read_head(self.reader)
        assert parsed is not None, "connection closed before a response"
        line, headers = parsed
        status = int(line.split(" ")[1])
        hd = dict(headers)
        if head_only or status in (101, 204, 304) or 100 <= status < 200:
            body = b""
        elif hd.get("transfer-encoding") == "chunked":
            body = await read_chunked(self.reader)
        elif "content-length" in hd:
            body = await self.reader.readexactly(int(hd["content-length"]))
        else:
            body = await self.reader.read()
        return Resp(status, headers, body)

    async def closed(self) -> bool:
        """True when the server closes the connection (EOF or reset) before sending more bytes."""
        try:
            data = await self.reader.read(1)
        except (ConnectionError, ssl.SSLError):
            return True
        return data == b""

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass


def build_request(method: str, path: str, headers: dict | list = (), body: bytes = b"") -> bytes:
    items = list(headers.items()) if isinstance(headers, dict) else list(headers)
    names = {k.lower() for k, _ in items}
    if "host" not in names:
        items.insert(0, ("Host", "gateway"))
    if body and "content-length" not in names and "transfer-encoding" not in names:
        items.append(("Content-Length", str(len(body))))
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in items) + "\r\n"
    return head.encode() + body
