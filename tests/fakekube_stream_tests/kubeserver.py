"""A minimal TLS API server for driving serve_upgrade with the real kubectl.

Just enough for kubectl exec / attach / cp / port-forward: /version, legacy discovery, GET of the
pods in a dict, and the upgrade subresources handed to serve_upgrade. HTTP/1.1 only (h11; ALPN
offers only http/1.1, so kubectl never tries h2). Independent of the fake server in tests/fakekube.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import h11

from dataplane.pki import CertificateAuthority
from tests.fakekube.container import ContainerRuntime
from tests.fakekube.remotecommand import serve_upgrade
from tests.fakekube.upgrade_request import UpgradeRequest

KUBECTL_TIMEOUT = 60.0
_UPGRADE_PATH = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)/(exec|attach|portforward)$")
_POD_PATH = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)$")

VERSION = {"major": "1", "minor": "32", "gitVersion": "v1.32.4", "gitCommit": "4cb5f07",
           "gitTreeState": "clean", "buildDate": "2025-04-22T00:00:00Z", "goVersion": "go1.23.8",
           "compiler": "gc", "platform": "linux/amd64"}
API_RESOURCES = {
    "kind": "APIResourceList", "groupVersion": "v1",
    "resources": [
        {"name": "pods", "singularName": "pod", "namespaced": True, "kind": "Pod",
         "verbs": ["get", "list"], "shortNames": ["po"]},
        {"name": "pods/attach", "singularName": "", "namespaced": True, "kind": "PodAttachOptions",
         "verbs": ["create", "get"]},
        {"name": "pods/exec", "singularName": "", "namespaced": True, "kind": "PodExecOptions",
         "verbs": ["create", "get"]},
        {"name": "pods/portforward", "singularName": "", "namespaced": True,
         "kind": "PodPortForwardOptions", "verbs": ["create", "get"]},
    ],
}


def make_pod(name: str, containers: tuple[str, ...] = ("app",), namespace: str = "default") -> dict:
    return {"kind": "Pod", "apiVersion": "v1",
            "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}", "resourceVersion": "1"},
            "spec": {"containers": [{"name": c, "image": "fake:1"} for c in containers]},
            "status": {"phase": "Running"}}


@dataclass
class DictStore:
    pods: dict[tuple[str, str], dict] = field(default_factory=dict)
    fake_runtime: ContainerRuntime = field(default_factory=ContainerRuntime)

    def add_pod(self, pod: dict) -> None:
        self.pods[(pod["metadata"]["namespace"], pod["metadata"]["name"])] = pod

    def get_pod(self, namespace: str, name: str) -> dict | None:
        return self.pods.get((namespace, name))


class MiniApiServer:
    def __init__(self, store: DictStore, workdir: Path):
        self.store = store
        self.workdir = workdir
        self.ca = CertificateAuthority.create("fake-kube-ca")
        self.server: asyncio.Server | None = None
        self.port = 0
        self.upgrades: list[UpgradeRequest] = []
        self._connections: set[asyncio.Task] = set()

    async def __aenter__(self) -> "MiniApiServer":
        issued = self.ca.issue_server(["127.0.0.1", "localhost"])
        cert, key = self.workdir / "server.crt", self.workdir / "server.key"
        issued.write(cert, key)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        ctx.set_alpn_protocols(["http/1.1"])
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0, ssl=ctx)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in list(self._connections):
            task.cancel()
        for task in list(self._connections):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.server.wait_closed()

    def kubeconfig(self) -> Path:
        path = self.workdir / "kubeconfig"
        ca = self.workdir / "ca.crt"
        ca.write_bytes(self.ca.cert_pem)
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": f"https://127.0.0.1:{self.port}",
                                                      "certificate-authority": str(ca)}}],
            "users": [{"name": "alice", "user": {"token": "test-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "alice",
                                                      "namespace": "default"}}],
        }))
        return path

    async def kubectl(self, *args: str, stdin: bytes | None = None, env: dict[str, str] | None = None,
                      timeout: float = KUBECTL_TIMEOUT) -> tuple[int, bytes, bytes]:
        """Run kubectl to completion: (exit code, stdout, stderr)."""
        proc = await self.start_kubectl(
            *args, env=env, stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL)
        try:
            async with asyncio.timeout(timeout):
                out, err = await proc.communicate(stdin)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        return proc.returncode, out, err

    async def start_kubectl(self, *args: str, env: dict[str, str] | None = None,
                            stdin: int = asyncio.subprocess.DEVNULL, stdout: int = asyncio.subprocess.PIPE,
                            stderr: int = asyncio.subprocess.PIPE) -> asyncio.subprocess.Process:
        full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.workdir),
                    "KUBECONFIG": str(self.kubeconfig()), **(env or {})}
        return await asyncio.create_subprocess_exec(
            "kubectl", "--cache-dir", str(self.workdir / "cache"), *args, env=full_env,
            stdin=stdin, stdout=stdout, stderr=stderr)

    # -- HTTP ---------------------------------------------------------------------------------------
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)
        await self._serve(reader, writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(65536)
                    conn.receive_data(data)
                    continue
                if isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.EndOfMessage) or event is h11.PAUSED:
                    if await self._dispatch(conn, request, reader, writer):
                        return                      # upgraded: serve_upgrade owned the connection
                    if conn.our_state is h11.MUST_CLOSE:
                        break
                    conn.start_next_cycle()
                elif isinstance(event, h11.ConnectionClosed):
                    break
        except (h11.RemoteProtocolError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError, ssl.SSLError):
                await writer.wait_closed()

    async def _dispatch(self, conn: h11.Connection, request: h11.Request,
                        reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        target = urlsplit(request.target.decode())
        headers = [(k.lower(), v) for k, v in request.headers.raw_items()]
        match = _UPGRADE_PATH.match(target.path)
        if match and conn.their_state is h11.MIGHT_SWITCH_PROTOCOL:
            # h11 has read the head (and the empty body); the rest belongs to the upgrade.
            initial, _ = conn.trailing_data
            upgrade = UpgradeRequest(method=request.method.decode(), path=target.path,
                                     query=parse_qs(target.query, keep_blank_values=True), headers=headers,
                                     kind=match.group(3), namespace=match.group(1), pod=match.group(2),
                                     user="alice")
            self.upgrades.append(upgrade)
            await serve_upgrade(upgrade, bytes(initial), reader, writer, self.store)
            return True
        code, body = self._rest(request.method.decode(), target.path)
        data = json.dumps(body).encode()
        writer.write(conn.send(h11.Response(status_code=code, headers=[
            ("Content-Type", "application/json"), ("Content-Length", str(len(data)))])))
        writer.write(conn.send(h11.Data(data=data)) + conn.send(h11.EndOfMessage()))
        await writer.drain()
        return False

    def _rest(self, method: str, path: str) -> tuple[int, dict]:
        if method == "GET":
            if path == "/version":
                return 200, VERSION
            if path == "/api":
                return 200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{self.port}"}]}
            if path == "/apis":
                return 200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": []}
            if path == "/api/v1":
                return 200, API_RESOURCES
            if m := _POD_PATH.match(path):
                pod = self.store.get_pod(m.group(1), m.group(2))
                if pod is not None:
                    return 200, pod
                return 404, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                             "message": f'pods "{m.group(2)}" not found', "reason": "NotFound",
                             "details": {"name": m.group(2), "kind": "pods"}, "code": 404}
        return 404, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                     "message": "the server could not find the requested resource", "reason": "NotFound",
                     "details": {}, "code": 404}

