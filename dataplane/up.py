"""`accesspoint up`: the whole AccessPoint topology on one machine, in one command.

It starts Redis (a private instance), the control plane (SQLite), the sandbox cluster (the fake
Kubernetes API server that ships with the tests, labelled `sandbox=true`) unless real clusters are
given with --cluster, and a gateway that learns everything from the control plane through signed
snapshots in Redis. The clusters, roles and bindings are applied through the control plane's API
(the manifest is left in the state directory as `policy.yaml`), the kubeconfigs are issued by it,
and `apctl.yaml` lets `apctl` administer it. It runs until Ctrl-C and stops everything it started.

`--tunnel`: the sandbox cluster is registered as a tunnel cluster instead (`apctl cluster register
sandbox --tunnel`) and an agent (`accesspoint agent`) enrolls with its bootstrap token and serves it
through a reverse tunnel: the gateway then holds no way to the sandbox nor its credential.
"""
from __future__ import annotations

import argparse
import http.client
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dataplane import sandbox

REPO_ROOT = Path(__file__).resolve().parents[1]
READY_TIMEOUT = 30.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state-dir", default=".state", help="where keys, kubeconfigs and the audit spool go")
    parser.add_argument("--host", default="127.0.0.1", help="address the gateway listens on")
    parser.add_argument("--port", type=int, default=8443, help="gateway port (TLS)")
    parser.add_argument("--admin-port", type=int, default=9443, help="admin port (/healthz /readyz /metrics)")
    parser.add_argument("--api-port", type=int, default=7443, help="control-plane gRPC API port")
    parser.add_argument("--workers", type=int, default=1, help="gateway worker processes")
    parser.add_argument("--cluster", action="append", default=[], metavar="NAME=KUBECONFIG",
                        help="put a real cluster behind the gateway instead of the sandbox (repeatable)")
    parser.add_argument("--tunnel", action="store_true",
                        help="serve the sandbox cluster through an agent's reverse tunnel (docs/tunnels.md)")
    parser.add_argument("--tunnel-port", type=int, default=8444, help="the port agents dial, with --tunnel")


_LOWEST_CHOSEN_PORT = 20000


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now, chosen below the kernel's ephemeral range: a port the kernel hands out
    could be taken by some outgoing connection's source port before our server binds it."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as limits:
            ephemeral_low = int(limits.read().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 0
    for _ in range(100) if ephemeral_low > _LOWEST_CHOSEN_PORT + 1000 else ():
        port = random.randrange(_LOWEST_CHOSEN_PORT, ephemeral_low)
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_until(predicate, what: str, process: subprocess.Popen, timeout: float = READY_TIMEOUT) -> None:
    """Polls `predicate` until it holds; fails early when `process` has died."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with status {process.returncode} before it was ready")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} was not ready within {timeout:.0f} s")
        time.sleep(0.05)


def http_ok(host: str, port: int, path: str) -> bool:
    conn = http.client.HTTPConnection(host, port, timeout=1)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def grpc_serving(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.RpcError:
            return False
    return answer.status == health_pb2.HealthCheckResponse.SERVING


def redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


# -- the components ---------------------------------------------------------------------------------

def start_redis(state: sandbox.StateLayout, port: int) -> subprocess.Popen:
    server = shutil.which("redis-server")
    if server is None:
        raise RuntimeError("redis-server is not on PATH (bin/install installs it)")
    state.redis_dir.mkdir(parents=True, exist_ok=True)
    # Append-only persistence: the audit stream must survive a Redis restart.
    return start_ready(
        [server, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(state.redis_dir),
         "--save", "", "--appendonly", "yes", "--logfile", str(state.redis_dir / "redis.log")],
        lambda: redis_answers(port), "Redis", stdout=subprocess.DEVNULL)


def start_sandbox(state: sandbox.StateLayout, port: int) -> subprocess.Popen:
    if not (REPO_ROOT / "tests" / "fakekube").is_dir():
        raise RuntimeError("the sandbox cluster ships with the source checkout; use --cluster NAME=KUBECONFIG")
    ready = state.root / "sandbox" / "ready"
    ready.unlink(missing_ok=True)
    return start_ready(
        [sys.executable, "-m", "tests.fakekube", "--host", "127.0.0.1", "--port", str(port),
         "--cert", str(state.sandbox_cert), "--key", str(state.sandbox_key),
         "--token-file", str(state.sandbox_token), "--rbac-file", str(state.sandbox_rbac),
         "--ready-file", str(ready)],
        ready.exists, "the sandbox cluster", env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.DEVNULL)


def controlplane_command(state: sandbox.StateLayout, api_port: int, redis_url: str, gateway_url: str,
                         store: str | None = None) -> list[str]:
    """A control-plane replica's command line (SQLite in the state directory unless `store` names
    another; replicas of one store share the admin token, the signing key and the client CA)."""
    return [sys.executable, "-m", "dataplane.cli", "controlplane", "--listen", f"127.0.0.1:{api_port}",
            "--admin-token-file", str(state.api_admin_token),
            "--store", store or f"sqlite:///{state.controlplane_dir / 'controlplane.db'}", "--redis-url", redis_url,
            "--signing-key", str(state.signing_key), "--state-dir", str(state.controlplane_dir),
            "--client-ca-cert", str(state.client_ca_cert), "--client-ca-key", str(state.client_ca_key),
            "--gateway-url", gateway_url, "--gateway-ca", str(state.gateway_ca_cert)]


def write_admin_token(state: sandbox.StateLayout) -> None:
    state.controlplane_dir.mkdir(parents=True, exist_ok=True)
    sandbox.write_secret(state.api_admin_token, secrets.token_urlsafe(32).encode())


def start_ready(command: list[str], ready, what: str, **popen) -> subprocess.Popen:
    """Starts `command` and returns once `ready()` holds; a process that never gets ready is
    stopped before the error propagates, so that nothing is left running behind it."""
    process = subprocess.Popen(command, **{"cwd": REPO_ROOT, **popen})
    try:
        wait_until(ready, what, process)
    except BaseException:
        stop([process])
        raise
    return process


def start_controlplane_process(command: list[str], api_port: int) -> subprocess.Popen:
    return start_ready(command, lambda: grpc_serving(f"127.0.0.1:{api_port}"), "the control plane")


def start_controlplane(state: sandbox.StateLayout, api_port: int, redis_url: str, gateway_url: str) -> subprocess.Popen:
    write_admin_token(state)
    return start_controlplane_process(controlplane_command(state, api_port, redis_url, gateway_url), api_port)


def gateway_command(state: sandbox.StateLayout, host: str, port: int, admin_port: int, workers: int,
                    redis_url: str | None = None) -> list[str]:
    """The gateway's command line: from the snapshot file, or (with `redis_url`) from Redis."""
    source = (["--redis-url", redis_url] if redis_url else ["--snapshot", str(state.snapshot)])
    return [sys.executable, "-m", "dataplane.cli", "gateway",
            "--listen", f"{host}:{port}", "--tls-cert", str(state.gateway_cert), "--tls-key", str(state.gateway_key),
            "--client-ca", str(state.client_ca_cert), *source,
            "--snapshot-public-key", str(state.signing_pub), "--secrets-dir", str(state.secrets_dir),
            "--audit-spool", str(state.audit_spool), "--admin-listen", f"127.0.0.1:{admin_port}",
            "--workers", str(workers)]


def start_gateway(command: list[str], admin_port: int) -> subprocess.Popen:
    return start_ready(command, lambda: http_ok("127.0.0.1", admin_port, "/readyz"), "the gateway")


def configure(state: sandbox.StateLayout, api_port: int, clusters: list[sandbox.ClusterSpec],
              tunnel: bool = False) -> str | None:
    """Applies the policy through the API, then issues both kubeconfigs from it. `tunnel`: the
    first cluster is registered as a tunnel cluster (not in the manifest, no credential at the
    gateway); returns its agent's bootstrap token."""
    from controlplane.apctl import manifests
    from controlplane.apctl.connection import Client, load_settings
    from controlplane.api.v1 import clusters_pb2, kubeconfigs_pb2, tokens_pb2

    state.apctl_config.write_text(f"address: 127.0.0.1:{api_port}\ntoken_file: {state.api_admin_token}\n")
    state.policy.write_text(sandbox.policy_manifest(clusters[1:] if tunnel else clusters, state.secrets_dir))
    client = Client(load_settings(str(state.apctl_config)))
    bootstrap = None
    try:
        if tunnel:
            registered = client.call(client.clusters.RegisterCluster, clusters_pb2.RegisterClusterRequest(
                cluster=clusters_pb2.Cluster(name=clusters[0].name, tunnel=True, labels=clusters[0].labels)))
            bootstrap = registered.bootstrap.secret
        for kind, desired in manifests.load(state.policy.read_text(), str(state.policy)):
            manifests.apply_one(client, kind, desired)
        first = clusters[0].name
        issued = client.call(client.kubeconfigs.IssueKubeconfig, kubeconfigs_pb2.IssueKubeconfigRequest(
            user=sandbox.ADMIN_USER, groups=list(sandbox.ADMIN_GROUPS), cluster=first))
        sandbox.write_secret(state.kubeconfig, issued.kubeconfig.encode())
        token = client.call(client.tokens.IssueToken, tokens_pb2.IssueTokenRequest(
            user=sandbox.READONLY_USER, groups=list(sandbox.READONLY_GROUPS), description="quick start read-only"))
        gateway_ca = state.gateway_ca_cert.read_bytes()
        server = issued_server(issued.kubeconfig)
        sandbox.write_secret(state.readonly_kubeconfig, sandbox.kubeconfig(
            server, gateway_ca, sandbox.READONLY_USER, token=token.secret,
            context=f"accesspoint-{first}-readonly").encode())
    finally:
        client.close()
    return bootstrap


# -- --tunnel: the sandbox behind an agent ------------------------------------------------------------

def tunnel_assertion_key(state: sandbox.StateLayout) -> tuple[Path, Path]:
    """The gateway fleet's identity-assertion key pair (private: the gateway's, public: the agent's)."""
    from dataplane import signing

    private, public = state.root / "pki" / "tunnel-assertion.key", state.root / "pki" / "tunnel-assertion.pub"
    key = signing.generate_signing_key()
    signing.write_private_key(key, private)
    signing.write_public_key(key.public_key(), public)
    return private, public


def gateway_tunnel_flags(state: sandbox.StateLayout, tunnel_port: int, assertion_key: Path) -> list[str]:
    """The gateway takes agents' tunnels, trusting the control plane's agent CA (made at its first start)."""
    return ["--tunnel-port", str(tunnel_port), "--tunnel-client-ca", str(state.controlplane_dir / "agent-ca.crt"),
            "--tunnel-assertion-key", str(assertion_key)]


def start_agent(state: sandbox.StateLayout, spec: sandbox.ClusterSpec, bootstrap: str, api_port: int,
                gateway: str, assertion_pub: Path, admin_port: int) -> subprocess.Popen:
    """An agent for `spec` that enrolls with `bootstrap`; returns once the gateway has its tunnel."""
    agent_dir = state.root / "agent"
    token_file = agent_dir / "bootstrap.token"
    sandbox.write_secret(token_file, bootstrap.encode())
    agent_dir.chmod(0o700)
    tunnelled = re.compile(rf'^accesspoint_tunnels{{cluster="{re.escape(spec.name)}"}} [1-9]', re.M)
    return start_ready(
        [sys.executable, "-m", "dataplane.cli", "agent", "--cluster", spec.name, "--gateway", gateway,
         "--controlplane", f"127.0.0.1:{api_port}", "--state-dir", str(agent_dir / "state"),
         "--bootstrap-token-file", str(token_file), "--assertion-key", str(assertion_pub),
         "--api-server", spec.endpoint, "--api-ca", str(state.sandbox_ca_cert), "--token-file",
         str(state.sandbox_token)],
        lambda: bool(tunnelled.search(http_text("127.0.0.1", admin_port, "/metrics"))), "the agent")


def http_text(host: str, port: int, path: str) -> str:
    conn = http.client.HTTPConnection(host, port, timeout=1)
    try:
        conn.request("GET", path)
        return conn.getresponse().read().decode("utf-8", "replace")
    except OSError:
        return ""
    finally:
        conn.close()


def issued_server(kubeconfig_text: str) -> str:
    return yaml.safe_load(kubeconfig_text)["clusters"][0]["cluster"]["server"]


def stop(processes: list[subprocess.Popen]) -> None:
    """Stops in reverse start order: the gateway drains before what it depends on goes."""
    for process in reversed(processes):
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=35)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the stack like Ctrl-C does


def _clusters(ns: argparse.Namespace) -> list[sandbox.ClusterSpec]:
    clusters = []
    for entry in ns.cluster:
        name, sep, path = entry.partition("=")
        if not sep:
            raise ValueError(f"--cluster expects NAME=KUBECONFIG, got {entry!r}")
        clusters.append(sandbox.cluster_from_kubeconfig(name, Path(path)))
    return clusters


def command(ns: argparse.Namespace) -> int:
    state_dir = Path(ns.state_dir).resolve()
    if state_dir.exists():
        shutil.rmtree(state_dir)  # every run starts from fresh keys: nothing stale is trusted
    state = sandbox.StateLayout(state_dir)
    processes: list[subprocess.Popen] = []
    signal.signal(signal.SIGTERM, _interrupt)
    gateway_url = f"https://{ns.host}:{ns.port}"
    try:
        clusters = _clusters(ns)
        if ns.tunnel and clusters:
            raise ValueError("--tunnel puts the sandbox cluster behind an agent; it does not take --cluster")
        redis_port = free_port()
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        sandbox.prepare_pki(state)
        processes.append(start_redis(state, redis_port))
        if not clusters:
            sandbox_port = free_port()
            clusters = [sandbox.prepare_sandbox_cluster(state, f"https://127.0.0.1:{sandbox_port}")]
            processes.append(start_sandbox(state, sandbox_port))
        processes.append(start_controlplane(state, ns.api_port, redis_url, gateway_url))
        bootstrap = configure(state, ns.api_port, clusters, tunnel=ns.tunnel)
        gateway = gateway_command(state, ns.host, ns.port, ns.admin_port, ns.workers, redis_url)
        if ns.tunnel:
            assertion_key, assertion_pub = tunnel_assertion_key(state)
            gateway += gateway_tunnel_flags(state, ns.tunnel_port, assertion_key)
        processes.append(start_gateway(gateway, ns.admin_port))
        how = ""
        if ns.tunnel:
            dial = "127.0.0.1" if ns.host in ("0.0.0.0", "::", "") else ns.host
            processes.append(start_agent(state, clusters[0], bootstrap, ns.api_port, f"{dial}:{ns.tunnel_port}",
                                         assertion_pub, ns.admin_port))
            how = (f" (through the agent's reverse tunnel: gateway port {ns.tunnel_port}, agent state "
                   f"{state.root / 'agent'})")
        print(f"""
AccessPoint is up: gateway {gateway_url}, control plane 127.0.0.1:{ns.api_port}, \
cluster(s): {', '.join(c.name for c in clusters)}{how}.

  export KUBECONFIG={state.kubeconfig}            # {sandbox.ADMIN_USER} (client certificate), may do anything
  kubectl get pods
  KUBECONFIG={state.readonly_kubeconfig} kubectl get pods   # {sandbox.READONLY_USER} (token), read-only

  export APCTL_CONFIG={state.apctl_config}         # administer it
  apctl get clusters; apctl get gateways; apctl revoke user {sandbox.READONLY_USER} --wait

Policy applied: {state.policy}
Audit spool:   {state.audit_spool} (shipped to the control plane: apctl audit)
Metrics:       http://127.0.0.1:{ns.admin_port}/metrics
Ctrl-C stops everything.""", flush=True)
        while all(p.poll() is None for p in processes):
            time.sleep(0.5)
        print("a component exited; stopping", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except (RuntimeError, ValueError, OSError, grpc.RpcError) as err:
        print(f"accesspoint up: {err}", file=sys.stderr)
        return 1
    finally:
        stop(processes)
