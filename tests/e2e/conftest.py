"""One AccessPoint stack for the end-to-end tests: the sandbox cluster (in-process on its own loop
thread, so tests can see what reached it), a real gateway process, and kubeconfigs for every kind
of caller."""
from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from dataplane import sandbox, signing
from dataplane.pki import CertificateAuthority
from dataplane.snapshot import load_snapshot_file, sign_snapshot
from dataplane.up import free_port, gateway_command, http_ok, stop, wait_until
from tests.e2e.kubectl import Kubectl
from tests.fakekube.server import FakeKube
from tests.fakekube.threaded import running


@dataclass
class Stack:
    state: sandbox.StateLayout
    sandbox_token: str
    revoked_kubeconfig: Path
    unknown_token_kubeconfig: Path
    protocol: str          # what the gateway (and the sandbox cluster) offer beyond http/1.1


def _extra_callers(state: sandbox.StateLayout, gateway_url: str) -> tuple[Path, Path]:
    """A client certificate whose serial the snapshot revokes, and a token the snapshot does not know."""
    client_ca = CertificateAuthority.load(state.client_ca_cert, state.client_ca_key)
    revoked = client_ca.issue_client("mallory", ["devs"])
    server = f"{gateway_url}/clusters/sandbox"
    ca = state.gateway_ca_cert.read_bytes()
    revoked_path = state.root / "revoked.kubeconfig"
    revoked_path.write_text(sandbox.kubeconfig(server, ca, "mallory", cert_pem=revoked.cert_pem,
                                               key_pem=revoked.key_pem, context="revoked"))
    unknown_path = state.root / "unknown.kubeconfig"
    unknown_path.write_text(sandbox.kubeconfig(server, ca, "nobody", token="not-a-known-token", context="unknown"))

    key = signing.load_private_key(state.signing_key)
    pub = signing.load_public_key(state.signing_pub)
    data = load_snapshot_file(state.snapshot, pub).data
    data["revocations"]["cert_serials"].append(revoked.serial_hex)
    state.snapshot.write_bytes(sign_snapshot(data, key))
    return revoked_path, unknown_path


# The whole suite runs twice: HTTP/2 offered on both hops (kubectl → gateway → cluster), and
# HTTP/1.1 only.
@pytest.fixture(scope="session", params=["h2", "http/1.1"], ids=["h2", "http1"])
def stack_parts(request, tmp_path_factory):
    http2 = request.param == "h2"
    root = tmp_path_factory.mktemp("accesspoint")
    state = sandbox.StateLayout(root)
    sandbox_port, gateway_port, admin_port = free_port(), free_port(), free_port()
    spec = sandbox.prepare_sandbox_cluster(state, f"https://127.0.0.1:{sandbox_port}")
    gateway_url = f"https://127.0.0.1:{gateway_port}"
    sandbox.prepare(root, gateway_url, [spec])
    revoked, unknown = _extra_callers(state, gateway_url)
    with running(port=sandbox_port, cert=state.sandbox_cert, key=state.sandbox_key, gateway_token=spec.token,
                 rbac=json.loads(state.sandbox_rbac.read_text()), http2=http2) as fake:
        gateway = subprocess.Popen(gateway_command(state, "127.0.0.1", gateway_port, admin_port, workers=1),
                                   env={**os.environ, "ACCESSPOINT_HTTP2": "1" if http2 else "0"})
        try:
            wait_until(lambda: http_ok("127.0.0.1", admin_port, "/readyz"), "the gateway", gateway)
            yield Stack(state, spec.token, revoked, unknown, request.param), fake
        finally:
            stop([gateway])


@pytest.fixture(scope="session")
def stack(stack_parts) -> Stack:
    return stack_parts[0]


@pytest.fixture(scope="session")
def fake_cluster(stack_parts) -> FakeKube:
    return stack_parts[1]


@pytest.fixture(scope="session")
def kubectl_for(tmp_path_factory):
    def make(kubeconfig: Path) -> Kubectl:
        return Kubectl(kubeconfig, tmp_path_factory.mktemp("kubectl-cache"))
    return make


@pytest.fixture(scope="session")
def admin(stack, kubectl_for) -> Kubectl:
    return kubectl_for(stack.state.kubeconfig)


@pytest.fixture(scope="session")
def readonly(stack, kubectl_for) -> Kubectl:
    return kubectl_for(stack.state.readonly_kubeconfig)
