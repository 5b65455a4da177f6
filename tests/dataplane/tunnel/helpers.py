"""A gateway worker that serves cluster "alpha" only through an agent tunnel (in-process, real TLS
on loopback), the API server that only the agent reaches, and agents to start."""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

from dataplane.agent import Agent, AgentConfig
from dataplane.config import GatewayConfig
from dataplane.pki import CertificateAuthority
from dataplane.server import Worker
from dataplane.signing import generate_signing_key, write_private_key, write_public_key
from dataplane.snapshot import sign_snapshot
from dataplane.up import free_port
from tests.dataplane.gateway.helpers import Env, Upstream, echo_handler, snapshot_dict

AGENT_TOKEN = "agent-token-alpha"
WAIT = 10.0


async def eventually(check, what: str, timeout: float = WAIT):
    """Polls `check` until it returns something truthy; fails naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        await asyncio.sleep(0.01)


@dataclass
class TunnelEnv:
    env: Env
    agent_ca: CertificateAuthority
    assertion_key: object
    api: Upstream                       # the API server behind the tunnel
    agents: list = field(default_factory=list)

    @property
    def tunnels(self):
        return self.env.worker.tunnels

    def agent_config(self, cn: str = "agent-alpha", cluster: str = "alpha", ca: CertificateAuthority | None = None,
                     **overrides) -> AgentConfig:
        tmp = self.env.tmp
        issued = (ca or self.agent_ca).issue_client(cn)
        cert, key = tmp / f"agent-{cn}-{id(issued)}.crt", tmp / f"agent-{cn}-{id(issued)}.key"
        issued.write(cert, key)
        options = dict(gateway=f"127.0.0.1:{self.env.config.tunnel_port}", cluster=cluster, cert=str(cert),
                       key=str(key), ca=str(tmp / "gateway-ca.pem"), assertion_key=str(tmp / "assertion.pub"),
                       api_server=f"https://127.0.0.1:{self.api.port}", api_ca=str(tmp / "cluster-ca.pem"),
                       token_file=str(tmp / "agent.token"), backoff_initial=0.05, backoff_max=0.5)
        options.update(overrides)
        config = AgentConfig(**options)
        config.validate()
        return config

    async def start_agent(self, **kwargs) -> Agent:
        """An agent running its reconnect loop; returns once its tunnel is registered."""
        agent = Agent(self.agent_config(**kwargs))
        stop = asyncio.Event()
        task = asyncio.ensure_future(agent.run(stop))
        self.agents.append((agent, stop, task))
        await eventually(lambda: agent.connected and self.tunnels.tunnels("alpha"), "the agent's tunnel")
        return agent

    async def close(self) -> None:
        for agent, stop, task in self.agents:
            stop.set()
            await task
        await self.env.close()
        await self.api.close()


async def make_tunnel_env(tmp: Path, handler=echo_handler, **config_overrides) -> TunnelEnv:
    env = Env(tmp=tmp, client_ca=CertificateAuthority.create("clients"),
              server_ca=CertificateAuthority.create("gateway"), cluster_ca=CertificateAuthority.create("cluster"))
    api = Upstream(env.cluster_ca, handler)
    await api.start(tmp)
    beta = Upstream(env.cluster_ca, echo_handler)
    await beta.start(tmp)
    env.upstreams["beta"] = beta
    secrets = tmp / "secrets"
    secrets.mkdir(exist_ok=True)
    for name in ("alpha", "beta"):
        (secrets / f"{name}.token").write_text(f"gateway-token-{name}\n")
    (tmp / "agent.token").write_text(AGENT_TOKEN + "\n")
    (tmp / "cluster-ca.pem").write_bytes(env.cluster_ca.cert_pem)
    (tmp / "gateway-ca.pem").write_bytes(env.server_ca.cert_pem)
    # alpha's endpoint is a port nothing listens on: only the agent reaches its API server
    data = snapshot_dict({"alpha": (free_port(), env.cluster_ca.cert_pem), "beta": (beta.port, env.cluster_ca.cert_pem)})
    data["clusters"][0].update(tunnel=True, agent_identities=["cn:agent-alpha"])
    data["bindings"][0]["clusters"]["names"] = ["alpha", "beta"]
    snapshot_key = generate_signing_key()
    write_public_key(snapshot_key.public_key(), tmp / "snapshot.pub")
    (tmp / "snapshot.json").write_bytes(sign_snapshot(data, snapshot_key))
    assertion_key = generate_signing_key()
    write_private_key(assertion_key, tmp / "assertion.key")
    write_public_key(assertion_key.public_key(), tmp / "assertion.pub")
    agent_ca = CertificateAuthority.create("agents")
    (tmp / "agent-ca.pem").write_bytes(agent_ca.cert_pem)
    env.server_ca.issue_server(["127.0.0.1"]).write(tmp / "gw.crt", tmp / "gw.key")
    (tmp / "client-ca.pem").write_bytes(env.client_ca.cert_pem)
    options = dict(listen="127.0.0.1:0", tls_cert=str(tmp / "gw.crt"), tls_key=str(tmp / "gw.key"),
                   client_ca=str(tmp / "client-ca.pem"), snapshot=str(tmp / "snapshot.json"),
                   snapshot_public_key=str(tmp / "snapshot.pub"), secrets_dir=str(secrets),
                   audit_spool=str(tmp / "audit.jsonl"), admin_listen="127.0.0.1:0",
                   tunnel_port=free_port(), tunnel_client_ca=str(tmp / "agent-ca.pem"),
                   tunnel_assertion_key=str(tmp / "assertion.key"))
    options.update(config_overrides)
    env.config = GatewayConfig(**options)
    env.config.validate()
    env.worker = Worker(env.config)
    await env.worker.start()
    return TunnelEnv(env, agent_ca, assertion_key, api)
