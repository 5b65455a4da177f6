"""The tunnel path against the direct path, in one run, against the same upstream (issue 7):

    .venv/bin/python -m loadtests.bench_tunnel              # 10 s per measurement, 1,000 idle agents
    .venv/bin/python -m loadtests.bench_tunnel --quick      # 3 s, 100 idle agents
    .venv/bin/python -m loadtests.bench_tunnel --seconds 5 --idle-agents 300

One gateway worker (`--workers 1`, pinned to core 0) serves two clusters backed by the same nginx
upstream (static pod JSON over TLS, as in loadtests/benchlib): `direct` (the gateway dials it) and
`tunnel` (`tunnel: true`; an agent process dials the gateway's tunnel port and reaches the
upstream itself). Both paths run the whole pipeline (token authentication, policy, audit spool).
wrk (HTTP/1.1 keep-alive) measures, for each path in turn:
- added latency: p50/p99 with 1 connection;
- throughput: requests/s with 64 connections.
Then memory per idle tunnel: N agents (in this process, one tunnel each) connect to the same
worker; its RSS before and after, once settled, divided by N.

The agent, the upstream and wrk share core 1: in production the agent runs in the cluster on its
own CPU, so the tunnel's throughput here is a floor.
"""
from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import ssl
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import uvloop
import yaml

from dataplane import sandbox, signing
from dataplane.agent import Agent, AgentConfig
from dataplane.pki import CertificateAuthority
from dataplane.snapshot import load_snapshot_file, sign_snapshot

from .bench_idle import raise_fd_limit, rss_bytes, settled_rss
from .benchlib import fixtures, gateway, loadgen, nginx
from .benchlib.processes import Pinned, free_port, wait_until

REPO_ROOT = Path(__file__).resolve().parents[1]
GATEWAY_CORE, LOAD_CORE = 0, 1
AGENT_CN = "bench-agent"
PATHS = ("direct", "tunnel")


def _prepare(root: Path, port: int, upstream_port: int, files: fixtures.UpstreamFiles):
    token = "bench-cluster-token"
    specs = [sandbox.ClusterSpec(name=name, endpoint=f"https://127.0.0.1:{upstream_port if name == 'direct' else free_port()}",
                                 ca_pem=files.ca_pem, token=token, labels={"env": "bench"}) for name in PATHS]
    state = sandbox.prepare(root, f"https://127.0.0.1:{port}", specs)
    data = load_snapshot_file(state.snapshot, signing.load_public_key(state.signing_pub)).data
    for cluster in data["clusters"]:
        if cluster["name"] == "tunnel":
            cluster.update(tunnel=True, agent_identities=[f"cn:{AGENT_CN}"])
    state.snapshot.write_bytes(sign_snapshot(data, signing.load_private_key(state.signing_key)))
    agent_ca = CertificateAuthority.create("bench agent CA")
    (root / "agent-ca.crt").write_bytes(agent_ca.cert_pem)
    agent_ca.issue_client(AGENT_CN).write(root / "agent.crt", root / "agent.key")
    key = signing.generate_signing_key()
    signing.write_private_key(key, root / "assertion.key")
    signing.write_public_key(key.public_key(), root / "assertion.pub")
    (root / "agent.token").write_text(token)
    caller = yaml.safe_load(state.readonly_kubeconfig.read_text())["users"][0]["user"]["token"]
    return state, caller


def _agent_config(root: Path, state, tunnel_port: int, upstream_port: int, files) -> AgentConfig:
    config = AgentConfig(gateway=f"127.0.0.1:{tunnel_port}", cluster="tunnel", cert=str(root / "agent.crt"),
                         key=str(root / "agent.key"), ca=str(state.gateway_ca_cert),
                         assertion_key=str(root / "assertion.pub"), api_server=f"https://127.0.0.1:{upstream_port}",
                         api_ca=str(files.ca), token_file=str(root / "agent.token"), backoff_initial=0.2,
                         backoff_max=2.0)
    config.validate()
    return config


def _tunnels(admin_port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return -1
    found = re.search(r'^accesspoint_tunnels\{cluster="tunnel"\} (\d+)$', text, re.M)
    return int(found.group(1)) if found else 0


async def _idle_agents(config: AgentConfig, count: int, admin_port: int, gateway_pid: int, base: int):
    """Starts `count` agents; returns (RSS before, RSS after, tunnels at the end)."""
    before = await settled_rss(gateway_pid)
    stop = asyncio.Event()
    agents = [Agent(config) for _ in range(count)]
    tasks = []
    for index, agent in enumerate(agents):
        tasks.append(asyncio.ensure_future(agent.run(stop)))
        if index % 50 == 49:          # TLS handshakes in waves: the worker's backlog never overflows
            await asyncio.sleep(0.05)
    deadline = time.monotonic() + 120
    while await asyncio.to_thread(_tunnels, admin_port) < base + count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {_tunnels(admin_port) - base} of {count} idle tunnels connected")
        await asyncio.sleep(0.2)
    after = await settled_rss(gateway_pid)
    held = await asyncio.to_thread(_tunnels, admin_port) - base
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return before, after, held


def _check(url: str, caller: str, ca: Path) -> None:
    """The path answers the upstream's pod, or the run stops with the gateway's answer."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {caller}"})
    try:
        with urllib.request.urlopen(request, context=ssl.create_default_context(cafile=str(ca)), timeout=10) as resp:
            body = resp.read()
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"{url}: {exc.code} {exc.read()[:500]!r}") from None
    if body != fixtures.pod_body():
        raise RuntimeError(f"{url}: not the upstream's pod: {body[:200]!r}")


def _row(name: str, latency, load) -> str:
    return (f"| {name} | {latency.p50_us / 1000:.3f} ms | {latency.p99_us / 1000:.3f} ms | "
            f"{load.per_second:,.0f} | {latency.errors + load.errors} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_tunnel", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 s per measurement and 100 idle agents")
    parser.add_argument("--seconds", type=int, default=None, help="seconds per measurement (default 10)")
    parser.add_argument("--idle-agents", type=int, default=None, help="idle tunnels for the memory figure (default 1000)")
    args = parser.parse_args(argv)
    seconds = args.seconds or (3 if args.quick else 10)
    idle = args.idle_agents or (100 if args.quick else 1000)
    for tool in ("wrk", "nginx", "taskset"):
        if shutil.which(tool) is None:
            print(f"bench_tunnel: {tool} is not installed", file=sys.stderr)
            return 2
    raise_fd_limit(idle * 2 + 1024)
    root = Path(tempfile.mkdtemp(prefix="bench-tunnel-"))
    root.chmod(0o755)          # nginx workers run as nobody and read the docroot
    processes: list[Pinned] = []
    try:
        files = fixtures.write_upstream_files(root / "upstream")
        upstream_port, port, admin_port, tunnel_port = free_port(), free_port(), free_port(), free_port()
        upstream = nginx.start_upstream(root / "nginx", LOAD_CORE, upstream_port, files)
        processes.append(upstream)
        state, caller = _prepare(root / "state", port, upstream_port, files)
        argv = [*gateway.up.gateway_command(state, "127.0.0.1", port, admin_port, workers=1),
                "--tunnel-port", str(tunnel_port), "--tunnel-client-ca", str(root / "state" / "agent-ca.crt"),
                "--tunnel-assertion-key", str(root / "state" / "assertion.key"), "--keepalive-timeout", "600"]
        gw = Pinned("gateway", GATEWAY_CORE, argv, log=root / "gateway.log", cwd=REPO_ROOT)
        processes.append(gw)
        wait_until(lambda: gateway.up.http_ok("127.0.0.1", admin_port, "/readyz"), gw)
        agent = Pinned("agent", LOAD_CORE, [sys.executable, "-m", "dataplane.cli", "agent",
                                            *_agent_argv(_agent_config(root / "state", state, tunnel_port,
                                                                       upstream_port, files))],
                       log=root / "agent.log", cwd=REPO_ROOT)
        processes.append(agent)
        wait_until(lambda: _tunnels(admin_port) == 1, agent)

        header = [f"Authorization: Bearer {caller}"]
        rows = []
        for name in PATHS:
            url = f"https://127.0.0.1:{port}/clusters/{name}{fixtures.POD_PATH}"
            _check(url, caller, state.gateway_ca_cert)
            loadgen.wrk(url, header, 8, 1, LOAD_CORE)                       # warm-up: pools, caches
            latency = loadgen.wrk(url, header, 1, seconds, LOAD_CORE)
            load = loadgen.wrk(url, header, 64, seconds, LOAD_CORE)
            rows.append((name, latency, load))
        print(f"\nTunnel vs direct, one gateway worker, GET of one pod, wrk HTTP/1.1, {seconds} s each\n")
        print("| path | p50 (1 conn) | p99 (1 conn) | req/s (64 conns) | errors |")
        print("|---|---|---|---|---|")
        for name, latency, load in rows:
            print(_row(name, latency, load))
        (_, direct_lat, direct_load), (_, tunnel_lat, tunnel_load) = rows
        print(f"\ntunnel adds {(tunnel_lat.p50_us - direct_lat.p50_us) / 1000:.3f} ms at p50, "
              f"{(tunnel_lat.p99_us - direct_lat.p99_us) / 1000:.3f} ms at p99; throughput "
              f"{tunnel_load.per_second / direct_load.per_second:.0%} of direct")

        config = _agent_config(root / "state", state, tunnel_port, upstream_port, files)
        before, after, held = uvloop.run(_idle_agents(config, idle, admin_port, gw.pid, base=1))
        print(f"\nIdle tunnels on one gateway worker: {held} of {idle} connected; RSS {before / 2**20:,.1f} MiB -> "
              f"{after / 2**20:,.1f} MiB; {(after - before) / max(held, 1) / 1024:,.1f} KiB per idle tunnel")
        print(f"(gateway worker RSS now {rss_bytes(gw.pid) / 2**20:,.1f} MiB)")
        errors = sum(r[1].errors + r[2].errors for r in rows)
        return 0 if held == idle and errors == 0 else 1
    finally:
        for process in reversed(processes):
            process.stop()
        shutil.rmtree(root, ignore_errors=True)


def _agent_argv(config: AgentConfig) -> list[str]:
    return ["--gateway", config.gateway, "--cluster", config.cluster, "--cert", config.cert, "--key", config.key,
            "--ca", config.ca, "--assertion-key", config.assertion_key, "--api-server", config.api_server,
            "--api-ca", config.api_ca, "--token-file", config.token_file]


if __name__ == "__main__":
    sys.exit(main())
