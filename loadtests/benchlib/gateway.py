"""The AccessPoint gateway under test, configured exactly as the quick start configures it."""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

import yaml

from dataplane import sandbox, up

from .processes import Pinned, wait_until

CLUSTER = "bench"


@dataclass(frozen=True)
class GatewaySetup:
    state: sandbox.StateLayout
    cluster_token: str   # what the gateway presents upstream
    caller_token: str    # the read-only user's bearer token (wrk and h2load have no client-cert flag)


def prepare(root: Path, port: int, upstream_port: int, upstream_ca_pem: bytes) -> GatewaySetup:
    cluster_token = secrets.token_urlsafe(32)
    cluster = sandbox.ClusterSpec(name=CLUSTER, endpoint=f"https://127.0.0.1:{upstream_port}",
                                  ca_pem=upstream_ca_pem, token=cluster_token, labels={"env": "bench"})
    state = sandbox.prepare(root, f"https://127.0.0.1:{port}", [cluster])
    readonly = yaml.safe_load(state.readonly_kubeconfig.read_text())
    return GatewaySetup(state=state, cluster_token=cluster_token,
                        caller_token=readonly["users"][0]["user"]["token"])


def start(setup: GatewaySetup, core: int, port: int, admin_port: int, upstream_keepalive: int,
          repo_root: Path) -> Pinned:
    argv = [*up.gateway_command(setup.state, "127.0.0.1", port, admin_port, workers=1),
            "--upstream-pool-size", str(upstream_keepalive)]
    gateway = Pinned("gateway", core, argv, log=setup.state.root / "gateway.log", cwd=repo_root)
    wait_until(lambda: up.http_ok("127.0.0.1", admin_port, "/readyz"), gateway)
    return gateway
