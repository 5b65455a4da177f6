"""The end-to-end stack with the sandbox cluster behind an agent tunnel: the gateway's snapshot
gives the cluster an endpoint where nothing listens and a credential the cluster does not
accept, so every request that succeeds went gateway → tunnel → agent → API server, with the
agent's own token. The fixtures override tests/e2e/conftest.py's for the tests in this folder."""
from __future__ import annotations

import dataclasses
import http.client
import json
import os
import ssl
import subprocess
import sys

import pytest
import yaml

from dataplane import sandbox, signing
from dataplane.pki import CertificateAuthority
from dataplane.snapshot import load_snapshot_file, sign_snapshot
from dataplane.up import free_port, gateway_command, http_ok, stop, wait_until
from tests.e2e.conftest import Stack, _extra_callers
from tests.fakekube.threaded import running

AGENT_CN = "accesspoint-agent-sandbox"


def _make_tunnelled(state: sandbox.StateLayout) -> None:
    """Marks the sandbox cluster `tunnel: true`, allowing only the agent's certificate."""
    data = load_snapshot_file(state.snapshot, signing.load_public_key(state.signing_pub)).data
    data["clusters"][0].update(tunnel=True, agent_identities=[f"cn:{AGENT_CN}"])
    state.snapshot.write_bytes(sign_snapshot(data, signing.load_private_key(state.signing_key)))


def _tunnel_serves(port: int, state: sandbox.StateLayout) -> bool:
    """A request through the gateway reaches the cluster (the agent's tunnel is up)."""
    token = yaml.safe_load(state.readonly_kubeconfig.read_text())["users"][0]["user"]["token"]
    ctx = ssl.create_default_context(cafile=str(state.gateway_ca_cert))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=5)
    try:
        conn.request("GET", "/clusters/sandbox/version", headers={"Authorization": f"Bearer {token}"})
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


@pytest.fixture(scope="session", params=["h2", "http/1.1"], ids=["tunnel-h2", "tunnel-http1"])
def stack_parts(request, tmp_path_factory):
    http2 = request.param == "h2"
    root = tmp_path_factory.mktemp("accesspoint-tunnel")
    state = sandbox.StateLayout(root)
    sandbox_port, gateway_port, admin_port, tunnel_port = free_port(), free_port(), free_port(), free_port()
    spec = sandbox.prepare_sandbox_cluster(state, f"https://127.0.0.1:{sandbox_port}")
    # what the gateway knows of the cluster leads nowhere: a closed port, a token it refuses
    unreachable = dataclasses.replace(spec, endpoint=f"https://127.0.0.1:{free_port()}",
                                      token="not-the-clusters-token")
    gateway_url = f"https://127.0.0.1:{gateway_port}"
    sandbox.prepare(root, gateway_url, [unreachable])
    revoked, unknown = _extra_callers(state, gateway_url)
    _make_tunnelled(state)

    agent_ca = CertificateAuthority.create("accesspoint agent CA")
    (root / "agent-ca.crt").write_bytes(agent_ca.cert_pem)
    agent_ca.issue_client(AGENT_CN).write(root / "agent.crt", root / "agent.key")
    assertion_key = signing.generate_signing_key()
    signing.write_private_key(assertion_key, root / "assertion.key")
    signing.write_public_key(assertion_key.public_key(), root / "assertion.pub")

    gateway_cmd = gateway_command(state, "127.0.0.1", gateway_port, admin_port, workers=1) + [
        "--tunnel-port", str(tunnel_port), "--tunnel-client-ca", str(root / "agent-ca.crt"),
        "--tunnel-assertion-key", str(root / "assertion.key")]
    agent_cmd = [sys.executable, "-m", "dataplane.cli", "agent", "--gateway", f"127.0.0.1:{tunnel_port}",
                 "--cluster", "sandbox", "--cert", str(root / "agent.crt"), "--key", str(root / "agent.key"),
                 "--ca", str(state.gateway_ca_cert), "--assertion-key", str(root / "assertion.pub"),
                 "--api-server", f"https://127.0.0.1:{sandbox_port}", "--api-ca", str(state.sandbox_ca_cert),
                 "--token-file", str(state.sandbox_token), "--backoff-initial", "0.1", "--backoff-max", "1"]
    with running(port=sandbox_port, cert=state.sandbox_cert, key=state.sandbox_key, gateway_token=spec.token,
                 rbac=json.loads(state.sandbox_rbac.read_text()), http2=http2) as fake:
        env = {**os.environ, "ACCESSPOINT_HTTP2": "1" if http2 else "0"}
        gateway = subprocess.Popen(gateway_cmd, env=env)
        agent = subprocess.Popen(agent_cmd, env=env)
        try:
            wait_until(lambda: http_ok("127.0.0.1", admin_port, "/readyz"), "the gateway", gateway)
            wait_until(lambda: _tunnel_serves(gateway_port, state), "the agent's tunnel", agent)
            yield Stack(state, spec.token, revoked, unknown, request.param), fake
        finally:
            stop([agent, gateway])


# Redefined here, not inherited: a session fixture of the parent conftest caches one value per
# parameter index, and would hand these tests the direct stack's (same indexes) when both run.
@pytest.fixture(scope="session")
def stack(stack_parts) -> Stack:
    return stack_parts[0]


@pytest.fixture(scope="session")
def fake_cluster(stack_parts):
    return stack_parts[1]


@pytest.fixture(scope="session")
def admin(stack, kubectl_for):
    return kubectl_for(stack.state.kubeconfig)


@pytest.fixture(scope="session")
def readonly(stack, kubectl_for):
    return kubectl_for(stack.state.readonly_kubeconfig)
