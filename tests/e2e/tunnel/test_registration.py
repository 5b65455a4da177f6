"""Registration of a tunnel cluster end to end, with real processes and the real kubectl (issue 7):
`apctl cluster register edge --tunnel` prints a bootstrap token; `accesspoint agent` enrolls with
it (its key never leaves its state directory), dials the gateway, which trusts the control
plane's agent CA and learns the agent's key from the snapshot in Redis; kubectl then reaches a
cluster only the agent knows the way to, and `apctl get clusters` shows the agent connected.

Refused, each audited: the same bootstrap token a second time (the control plane's refusal
audit), another cluster's agent certificate, and after `apctl revoke cert SERIAL` the revoked
agent: its open tunnel is closed at once (not at its next use) and its reconnects are refused
(the gateway's audit spool)."""
from __future__ import annotations

import json
import re
import secrets
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from controlplane.api.v1 import clusters_pb2
from dataplane import enrollment, sandbox
from dataplane.pki import CertificateAuthority
from dataplane.tunnel import protocol
from tests.e2e.topology import Fleet, Gateway, eventually, fleet
from tests.fakekube.threaded import running

REVOKED_WITHIN = 5.0        # seconds from `apctl revoke cert` to the agent's tunnel closed


def _tunnels(gateway: Gateway, cluster: str) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{gateway.admin_port}/metrics", timeout=5) as answer:
        found = re.search(rf'^accesspoint_tunnels{{cluster="{cluster}"}} (\d+)$', answer.read().decode(), re.M)
    return int(found.group(1)) if found else 0


def _events(gateway: Gateway) -> list[dict]:
    """The gateway's spooled tunnel audit events."""
    if not gateway.spool.exists():
        return []
    lines = gateway.spool.read_text(encoding="utf-8").splitlines(keepends=True)
    return [e for e in (json.loads(line) for line in lines if line.endswith("\n")) if e.get("kind") == "tunnel"]


def _register(topology: Fleet, name: str) -> str:
    """`apctl cluster register NAME --tunnel`: the bootstrap token."""
    done = topology.apctl("cluster", "register", name, "--tunnel", "--label", "env=edge")
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _connectivity(topology: Fleet, cluster: str) -> clusters_pb2.TunnelConnectivity:
    client = topology.client()
    try:
        return client.call(client.clusters.GetCluster, clusters_pb2.GetClusterRequest(name=cluster)).connectivity
    finally:
        client.close()


def _hello(gateway: Gateway, state: sandbox.StateLayout, credentials: Path, cluster: str) -> bytes:
    """What the gateway answers an agent certificate that names `cluster` (the agent's first bytes)."""
    ctx = ssl.create_default_context(cafile=str(state.gateway_ca_cert))
    ctx.load_cert_chain(str(credentials))
    ctx.set_alpn_protocols([protocol.ALPN])
    with socket.create_connection(("127.0.0.1", gateway.tunnel_port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(protocol.greeting(cluster))
            answer = b""
            while not answer.endswith(b"\n"):
                chunk = tls.recv(1024)
                if not chunk:
                    break
                answer += chunk
    return answer


def test_register_enroll_serve_refuse_and_revoke(tmp_path):
    root = tmp_path
    with fleet(root, tunnel=True, with_cluster=False) as topology:
        gateway = topology.gateways[0]
        # the edge cluster's API server: its CA and the agent's service-account token, nothing the
        # gateway or the control plane is given
        edge_dir = root / "edge-cluster"
        edge_dir.mkdir()
        edge_ca = CertificateAuthority.create("edge cluster CA")
        (edge_dir / "ca.crt").write_bytes(edge_ca.cert_pem)
        edge_ca.issue_server(["localhost", "127.0.0.1"]).write(edge_dir / "server.crt", edge_dir / "server.key")
        agent_token = secrets.token_urlsafe(32)
        sandbox.write_secret(edge_dir / "agent.token", agent_token.encode())
        with running(port=0, cert=edge_dir / "server.crt", key=edge_dir / "server.key", gateway_token=agent_token,
                     rbac={"users": {}, "groups": {"devs": "admin"}}, http2=True) as edge_api:

            def agent(state_dir: Path, token_file: Path) -> list[str]:
                return [sys.executable, "-m", "dataplane.cli", "agent", "--cluster", "edge",
                        "--controlplane", f"127.0.0.1:{topology.api_ports[0]}", "--state-dir", str(state_dir),
                        "--bootstrap-token-file", str(token_file), "--gateway", f"127.0.0.1:{gateway.tunnel_port}",
                        "--assertion-key", str(topology.assertion_pub), "--api-server", edge_api.url,
                        "--api-ca", str(edge_dir / "ca.crt"), "--token-file", str(edge_dir / "agent.token"),
                        "--backoff-initial", "0.1", "--backoff-max", "0.5",
                        "--ping-interval", "1", "--ping-timeout", "2"]

            token_file = root / "edge.bootstrap"
            sandbox.write_secret(token_file, _register(topology, "edge").encode())
            agent_dir = root / "agent-edge"
            process = subprocess.Popen(agent(agent_dir, token_file))
            try:
                eventually(lambda: _tunnels(gateway, "edge") == 1, "the enrolled agent's tunnel")
                _serves(topology, agent_dir, edge_api)
                _a_bootstrap_token_works_once(topology, agent(root / "agent-again", token_file))
                _another_clusters_certificate_is_refused(topology, gateway)
                seen = eventually(lambda: (c := _connectivity(topology, "edge")).agents == 1 and c,
                                  "the agent connected in the gateways' heartbeats")
                assert (seen.tunnels, seen.gateways) == (1, 1)
                listed = topology.apctl("get", "clusters")
                assert listed.returncode == 0, listed.stderr
                row = next(line.split() for line in listed.stdout.splitlines() if line.startswith("edge "))
                assert row[3:6] == ["yes", "1/1", "1"]          # TUNNEL, AGENTS connected/enrolled, TUNNELS

                _revoking_the_agent_closes_its_tunnel_and_refuses_it(topology, gateway, agent_dir)
            finally:
                process.terminate()
                process.wait(timeout=30)


def _serves(topology: Fleet, agent_dir: Path, edge_api) -> None:
    credentials = enrollment.load_credentials(agent_dir)
    assert credentials is not None and credentials.cert.subject.rfc4514_string().startswith("CN=agent:edge:")
    assert agent_dir.stat().st_mode & 0o777 == 0o700 and credentials.path.stat().st_mode & 0o777 == 0o600
    # the key never left the agent: nothing the control plane stored holds it
    key_der = credentials.key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption())
    stored = b"".join(p.read_bytes() for p in topology.state.controlplane_dir.glob("controlplane.db*"))
    assert stored and key_der not in stored and key_der[-32:] not in stored

    alice = topology.kubectl(topology.kubeconfig("alice", ["devs"], cluster="edge"))
    before = len(edge_api.requests)
    assert "web-0" in alice.ok("get", "pods")
    seen = edge_api.requests[before:]
    assert seen and all(r.header("impersonate-user") == "alice" for r in seen)   # set by the agent


def _a_bootstrap_token_works_once(topology: Fleet, second_agent: list[str]) -> None:
    again = subprocess.run(second_agent, capture_output=True, text=True, timeout=60)
    assert again.returncode == 1
    assert re.search(r"enrollment: UNAUTHENTICATED: bootstrap token b-\w+ was already used", again.stderr), again.stderr
    refusals = topology.apctl("get", "refusals", "edge", "-o", "json")
    [refusal] = json.loads(refusals.stdout)["items"]
    assert refusal["action"] == "agents.enroll" and "already used" in refusal["reason"]
    assert refusal["subject"].startswith("bootstrap/b-")


def _another_clusters_certificate_is_refused(topology: Fleet, gateway: Gateway) -> None:
    other_dir = topology.state.root / "agent-other"
    with enrollment.controlplane_channel(f"127.0.0.1:{topology.api_ports[0]}") as channel:
        other = enrollment.enroll(enrollment.agent_service(channel), "other", _register(topology, "other"),
                                  other_dir)
    answer = _hello(gateway, topology.state, other.path, "edge")
    assert answer == b'REFUSED this certificate is not allowed to serve cluster "edge"\r\n'
    cn = other.cert.subject.rfc4514_string()[len("CN="):]
    assert cn.startswith("agent:other:")
    eventually(lambda: [e for e in _events(gateway) if e["user"] == cn and e["cluster"] == "edge"
                        and e["decision"] == "deny" and e["refusal"] == "not_allowed"],
               "the refusal of another cluster's certificate in the gateway's audit spool")


def _revoking_the_agent_closes_its_tunnel_and_refuses_it(topology: Fleet, gateway: Gateway, agent_dir: Path) -> None:
    credentials = enrollment.load_credentials(agent_dir)
    cn = credentials.cert.subject.rfc4514_string()[len("CN="):]
    started = time.monotonic()
    revoked = topology.apctl("revoke", "cert", credentials.serial, "--reason", "agent host compromised")
    assert revoked.returncode == 0, revoked.stderr
    eventually(lambda: _tunnels(gateway, "edge") == 0, "the revoked agent's tunnel closed", timeout=REVOKED_WITHIN)
    print(f"the revoked agent's tunnel closed {time.monotonic() - started:.2f} s after `apctl revoke` started")
    mine = lambda: [e for e in _events(gateway) if e["user"] == cn and e["decision"] == "deny"]  # noqa: E731
    closed = eventually(lambda: [e for e in mine() if e["closed"]], "the closure in the gateway's audit spool")
    assert closed[0]["cluster"] == "edge" and closed[0]["refusal"] in ("revoked", "not_allowed")
    assert closed[0]["reason"].startswith("open tunnel closed: ")
    # the agent redials (backoff ≤ 0.5 s) and is refused, audited each time
    refused = eventually(lambda: [e for e in mine() if not e["closed"]], "a refused reconnect in the audit spool")
    assert refused[0]["refusal"] in ("revoked", "not_allowed")
    failed = topology.kubectl(topology.kubeconfig("alice", ["devs"], cluster="edge")).fails("get", "pods")
    assert "no agent tunnel" in failed

    gone = eventually(lambda: (c := _connectivity(topology, "edge")).HasField("last_seen") and c.agents == 0 and c,
                      "the agent gone from the gateways' heartbeats, with when it was last seen")
    assert gone.tunnels == 0
