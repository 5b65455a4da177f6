"""High availability with real processes and the real kubectl (issue 7): two gateway replicas of
two workers each behind a round-robin TCP load balancer (for kubectl and for agents), two agent
replicas given only the load balancer's address, the fleet's membership in a private Redis.

Each agent must end up with a tunnel to every worker of every replica (4 each), learning the
second replica from the member list. Then one agent and one gateway are SIGKILLed: requests keep
succeeding within a bounded time, and `kubectl get -w` through the surviving gateway works
(a watch cut with its tunnel ends cleanly; the client re-watches)."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from dataplane import sandbox, signing
from dataplane.pki import CertificateAuthority
from dataplane.up import free_port, gateway_command, stop, wait_until
from tests.e2e.tunnel.conftest import AGENT_CN, _make_tunnelled
from tests.e2e.tunnel.loadbalancer import RoundRobin
from tests.fakekube.threaded import running

RECOVERY = 15.0           # seconds within which new requests must succeed again after a SIGKILL
WORKERS = 2


def _admin_port_pair() -> int:
    """A free port whose successor is free too (a replica's two workers' admin ports)."""
    while True:
        port = free_port()
        try:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue


def _tunnels(admin_port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return -1
    found = re.search(r'^accesspoint_tunnels\{cluster="sandbox"\} (\d+)$', text, re.M)
    return int(found.group(1)) if found else 0


def _until_ok(kubectl, *args: str, streak: int = 6) -> float:
    """Seconds until `streak` runs in a row succeed (each a new connection: round robin)."""
    started = time.monotonic()
    ok = 0
    while ok < streak:
        assert time.monotonic() - started < RECOVERY, f"no recovery within {RECOVERY:g} s"
        done = kubectl.run(*args, "get", "pods", "--request-timeout=5s", timeout=10)
        ok = ok + 1 if done.returncode == 0 and b"web-0" in done.stdout else 0
    return time.monotonic() - started


def _watch_sees(watch, name: str, admin) -> bool:
    """Creates configmap `name`; True when the watch shows it, False when the watch ended first."""
    admin.ok("create", "configmap", name, "--from-literal=a=b")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if any(re.search(rf"ADDED\s+{name}", line) for line in watch.seen) or _drain_lines(watch, name):
            return True
        if watch.process.poll() is not None:
            return False
        time.sleep(0.05)
    raise AssertionError(f"the watch neither showed {name} nor ended: it hangs")


def _drain_lines(watch, name: str) -> bool:
    while not watch.lines.empty():
        line = watch.lines.get_nowait()
        if line is None:
            return False
        watch.seen.append(line)
        if re.search(rf"ADDED\s+{name}", line):
            return True
    return False


def test_two_gateways_and_two_agents_lose_one_of_each(tmp_path, redis_server, kubectl_for):
    root = tmp_path
    state = sandbox.StateLayout(root)
    sandbox_port = free_port()
    gw_ports, tunnel_ports = [free_port(), free_port()], [free_port(), free_port()]
    admin_ports = [_admin_port_pair(), _admin_port_pair()]        # worker w serves admin on port + w
    assert admin_ports[0] + 1 != admin_ports[1] and admin_ports[1] + 1 != admin_ports[0]
    kube_lb, tunnel_lb = RoundRobin(gw_ports), RoundRobin(tunnel_ports)
    spec = sandbox.prepare_sandbox_cluster(state, f"https://127.0.0.1:{sandbox_port}")
    unreachable = dataclasses.replace(spec, endpoint=f"https://127.0.0.1:{free_port()}", token="not-the-clusters-token")
    sandbox.prepare(root, f"https://127.0.0.1:{kube_lb.port}", [unreachable])
    _make_tunnelled(state)
    agent_ca = CertificateAuthority.create("accesspoint agent CA")
    (root / "agent-ca.crt").write_bytes(agent_ca.cert_pem)
    assertion_key = signing.generate_signing_key()
    signing.write_private_key(assertion_key, root / "assertion.key")
    signing.write_public_key(assertion_key.public_key(), root / "assertion.pub")

    spools = [root / f"gw-{i}" / "audit.jsonl" for i in range(2)]      # one spool (and cache) per replica
    for spool in spools:
        spool.parent.mkdir()

    def gateway(i: int) -> list[str]:
        return gateway_command(state, "127.0.0.1", gw_ports[i], admin_ports[i], workers=WORKERS) + [
            "--redis-url", redis_server.url, "--gateway-id", f"gw-{i}", "--drain-grace", "2",
            "--audit-spool", str(spools[i]),
            "--tunnel-port", str(tunnel_ports[i]), "--tunnel-advertise", f"127.0.0.1:{tunnel_ports[i]}",
            "--tunnel-client-ca", str(root / "agent-ca.crt"), "--tunnel-assertion-key", str(root / "assertion.key"),
            "--tunnel-ping-interval", "1", "--tunnel-ping-timeout", "2"]

    def agent(i: int) -> list[str]:
        agent_ca.issue_client(AGENT_CN).write(root / f"agent{i}.crt", root / f"agent{i}.key")
        return [sys.executable, "-m", "dataplane.cli", "agent", "--gateway", f"127.0.0.1:{tunnel_lb.port}",
                "--cluster", "sandbox", "--cert", str(root / f"agent{i}.crt"), "--key", str(root / f"agent{i}.key"),
                "--ca", str(state.gateway_ca_cert), "--assertion-key", str(root / "assertion.pub"),
                "--api-server", f"https://127.0.0.1:{sandbox_port}", "--api-ca", str(state.sandbox_ca_cert),
                "--token-file", str(state.sandbox_token), "--backoff-initial", "0.1", "--backoff-max", "1",
                "--ping-interval", "1", "--ping-timeout", "2"]

    admin = kubectl_for(state.kubeconfig)
    direct = [("--server", f"https://127.0.0.1:{port}/clusters/sandbox") for port in gw_ports]
    processes: list[subprocess.Popen] = []
    watches = []
    with running(port=sandbox_port, cert=state.sandbox_cert, key=state.sandbox_key, gateway_token=spec.token,
                 rbac=json.loads(state.sandbox_rbac.read_text()), http2=True), kube_lb, tunnel_lb:
        try:
            gateways = [subprocess.Popen(gateway(i), start_new_session=True) for i in range(2)]
            processes += gateways
            for i in range(2):
                wait_until(lambda: all(_tunnels(admin_ports[i] + w) == 0 for w in range(WORKERS)), "the gateway",
                           gateways[i])
            agents = [subprocess.Popen(agent(i)) for i in range(2)]
            processes += agents
            worker_admins = [port + w for port in admin_ports for w in range(WORKERS)]
            # every worker of both replicas holds a tunnel from both agents (the second replica
            # learnt from the member list, the second worker by dialling until both are covered)
            started = time.monotonic()
            wait_until(lambda: all(_tunnels(p) == 2 for p in worker_admins), "a tunnel per agent on every worker",
                       agents[0], timeout=60)
            print(f"every worker of both replicas had both agents' tunnels {time.monotonic() - started:.2f} s "
                  "after the agents started")

            for args in direct:          # through either gateway
                assert "web-0" in admin.ok(*args, "get", "pods")
            _until_ok(admin)             # and through the load balancer

            watch = admin.start(*direct[0], "get", "configmaps", "-w", "--output-watch-events")
            watches.append(watch)
            assert _watch_sees(watch, "before-any-loss", admin)

            agents[0].kill()             # SIGKILL: the gateways see its tunnels go at once
            agents[0].wait()
            took = _until_ok(admin)
            print(f"after SIGKILL of an agent: {took:.2f} s until 6 requests in a row succeeded")
            wait_until(lambda: all(_tunnels(p) == 1 for p in worker_admins), "the dead agent's tunnels dropped",
                       agents[1], timeout=RECOVERY)
            if not _watch_sees(watch, "after-agent-loss", admin):       # the watch was on that agent's tunnel
                watch = admin.start(*direct[0], "get", "configmaps", "-w", "--output-watch-events")
                watches.append(watch)
                assert _watch_sees(watch, "after-rewatch", admin)

            os.killpg(gateways[1].pid, signal.SIGKILL)     # the whole replica (supervisor and workers)
            gateways[1].wait()
            took = _until_ok(admin)
            print(f"after SIGKILL of a gateway replica: {took:.2f} s until 6 requests in a row succeeded")
            assert _watch_sees(watch, "after-gateway-loss", admin)     # the surviving path was not touched
            for args in direct[:1]:
                assert "web-0" in admin.ok(*args, "get", "pods")
        finally:
            for watch in watches:
                watch.stop()
            stop(processes)
