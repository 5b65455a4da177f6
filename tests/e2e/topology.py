"""A small AccessPoint fleet for end-to-end tests, started the way `accesspoint up` starts it
(dataplane/up.py) but with only what a test needs: a private Redis that the test may stop and
start (no persistence), the sandbox cluster in this process, one or more control-plane replicas
and gateway processes that learn everything through Redis, configured through the API."""
from __future__ import annotations

import contextlib
import http.client
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import yaml

from controlplane.apctl.connection import Client, Settings, load_settings
from dataplane import sandbox, signing
from dataplane.up import (configure, controlplane_command, free_port, gateway_command, start_controlplane_process,
                          start_gateway, stop, write_admin_token)
from tests.conftest import RedisServer
from tests.e2e.kubectl import Kubectl
from tests.fakekube.threaded import running

WAIT = 30.0   # bound on every wait in these tests: a failure fails instead of hanging


def eventually(check: Callable[[], object], what: str, timeout: float = WAIT) -> object:
    """Polls `check` until it returns something truthy; fails naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s (last: {result!r})")
        time.sleep(0.05)


@dataclass
class Gateway:
    """One gateway process with its own admin port, audit spool and snapshot cache."""
    name: str
    port: int
    admin_port: int
    command: list[str]
    spool: Path
    process: subprocess.Popen | None = None
    tunnel_port: int = 0          # where agents dial (fleet(tunnel=True)), 0: none

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = start_gateway(self.command, self.admin_port)   # returns once /readyz answers 200

    def stop(self) -> None:
        if self.process is not None:
            stop([self.process])
            self.process = None

    def metrics(self) -> dict[str, float]:
        """The admin endpoint's unlabelled samples, by name."""
        conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=5)
        try:
            conn.request("GET", "/metrics")
            text = conn.getresponse().read().decode()
        finally:
            conn.close()
        samples = {}
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if line and not line.startswith("#") and "{" not in name:
                samples[name] = float(value)
        return samples

    def revision(self) -> int:
        return int(self.metrics()["accesspoint_snapshot_revision"])


@dataclass
class Fleet:
    state: sandbox.StateLayout
    redis: RedisServer
    api_ports: list[int]
    gateways: list[Gateway]
    kubectl_caches: Path
    controlplanes: list[subprocess.Popen] = field(default_factory=list)

    def client(self, replica: int = 0) -> Client:
        """An admin API client of one replica (close it)."""
        settings = load_settings(str(self.state.apctl_config))
        return Client(Settings(f"127.0.0.1:{self.api_ports[replica]}", settings.token, None))

    def apctl(self, *args: str) -> subprocess.CompletedProcess:
        """The operator CLI as a person runs it."""
        return subprocess.run([sys.executable, "-m", "controlplane.apctl", "--config", str(self.state.apctl_config),
                               *args], capture_output=True, text=True, timeout=60)

    def kubectl(self, kubeconfig: Path) -> Kubectl:
        cache = self.kubectl_caches / kubeconfig.name
        cache.mkdir(parents=True, exist_ok=True)
        return Kubectl(kubeconfig, cache)

    @property
    def assertion_pub(self) -> Path:
        """The gateway fleet's identity-assertion public key, an agent's --assertion-key (tunnel=True)."""
        return self.state.root / "pki" / "tunnel-assertion.pub"

    def kubeconfig(self, user: str, groups: list[str], gateway: Gateway | None = None,
                   cluster: str = "sandbox") -> Path:
        """A client-certificate kubeconfig issued by the control plane (`apctl kubeconfig`),
        pointing at `gateway` (default: the first) and `cluster`."""
        argv = ["kubeconfig", user, "--cluster", cluster]
        for group in groups:
            argv += ["--group", group]
        issued = self.apctl(*argv)
        assert issued.returncode == 0, issued.stderr
        config = yaml.safe_load(issued.stdout)
        gateway = gateway or self.gateways[0]
        config["clusters"][0]["cluster"]["server"] = f"{gateway.url}/clusters/{cluster}"
        path = self.state.root / f"{user}-{gateway.name}-{cluster}.kubeconfig"
        sandbox.write_secret(path, yaml.safe_dump(config).encode())
        return path

    def spooled_ids(self) -> list[str]:
        ids = []
        for gateway in self.gateways:
            if gateway.spool.exists():
                with open(gateway.spool, encoding="utf-8") as spool:
                    ids += [json.loads(line)["id"] for line in spool if line.endswith("\n")]
        return ids


def _gateway(state: sandbox.StateLayout, name: str, redis_url: str, tunnel: bool) -> Gateway:
    port, admin_port, tunnel_port = free_port(), free_port(), free_port() if tunnel else 0
    spool = state.root / f"gateway-{name}" / "audit.jsonl"
    spool.parent.mkdir(parents=True)
    command = [*gateway_command(state, "127.0.0.1", port, admin_port, 1, redis_url),
               # later flags win: each gateway keeps its own spool and disk copy, and says who it is
               "--audit-spool", str(spool), "--snapshot-cache", str(spool.parent / "snapshot.cache.json"),
               "--gateway-id", f"gw-{name}", "--drain-grace", "2"]
    if tunnel:   # agents' certificates come from the control plane's agent CA, made at its first start
        command += ["--tunnel-port", str(tunnel_port), "--tunnel-advertise", f"127.0.0.1:{tunnel_port}",
                    "--tunnel-client-ca", str(state.controlplane_dir / "agent-ca.crt"),
                    "--tunnel-assertion-key", str(state.root / "pki" / "tunnel-assertion.key"),
                    "--tunnel-ping-interval", "1", "--tunnel-ping-timeout", "2"]
    return Gateway(name, port, admin_port, command, spool, tunnel_port=tunnel_port)


@contextlib.contextmanager
def fleet(root: Path, *, gateways: int = 1, replicas: int = 1, store: str | None = None,
          with_cluster: bool = True, tunnel: bool = False) -> Iterator[Fleet]:
    """Redis, the sandbox cluster (unless `with_cluster` is false: the policy then names a cluster
    nobody answers for), `replicas` control planes on `store` (default SQLite: one replica) and
    `gateways` (at least one) gateway processes, configured through the API as `accesspoint up` does.
    `tunnel`: the gateways also take agents' tunnels (trusting the control plane's agent CA)."""
    state = sandbox.StateLayout(root / "state")
    sandbox.prepare_pki(state)
    if tunnel:
        key = signing.generate_signing_key()
        signing.write_private_key(key, state.root / "pki" / "tunnel-assertion.key")
        signing.write_public_key(key.public_key(), state.root / "pki" / "tunnel-assertion.pub")
    redis = RedisServer(state.root)
    api_ports = [free_port() for _ in range(replicas)]
    members = [_gateway(state, str(index), redis.url, tunnel) for index in range(gateways)]
    topology = Fleet(state, redis, api_ports, members, kubectl_caches=root / "kubectl")
    cluster_port = free_port()
    spec = sandbox.prepare_sandbox_cluster(state, f"https://127.0.0.1:{cluster_port}")
    try:
        redis.start()
        with contextlib.ExitStack() as cluster:
            if with_cluster:
                cluster.enter_context(running(
                    port=cluster_port, cert=state.sandbox_cert, key=state.sandbox_key, gateway_token=spec.token,
                    rbac=json.loads(state.sandbox_rbac.read_text()), http2=True))
            write_admin_token(state)
            for port in api_ports:
                topology.controlplanes.append(start_controlplane_process(
                    controlplane_command(state, port, redis.url, members[0].url, store), port))
            configure(state, api_ports[0], [spec])
            for gateway in members:
                gateway.start()
            yield topology
    finally:
        for gateway in members:
            gateway.stop()
        stop(topology.controlplanes)
        redis.stop()

