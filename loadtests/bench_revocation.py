"""Revocation propagation: from the Revoke call returning to enforcement on every gateway.

    .venv/bin/python -m loadtests.bench_revocation [--quick] [--gateways 4] [--revocations 200]

Starts what the quick start starts (dataplane/up.py), configured the same way through the API: a
private redis-server, the control plane (SQLite), the sandbox cluster (tests/fakekube) as the
upstream, and N gateway processes that learn everything through Redis. It then issues one bearer
token per revocation (users probe-000, probe-001, … in the group `viewers`) and revokes them one
after the other, alternately the user and the token, through the gRPC API.

Enforcement is observed, not inferred from the gateways' applied-revision reports (which follow
full snapshots only, while a revocation is first enforced from its signed delta): one probing
client per gateway sends `GET /clusters/sandbox/version` with the credential under test on a
keep-alive connection, one probe every --probe-interval ms at most. A revocation starts only
when every gateway has answered that credential 200. A gateway began refusing it after its last
200 was sent and before its first 401 came back, so "enforced everywhere" is bracketed: at most
the arrival of the last gateway's first 401, at least the latest send of a probe that a gateway
still accepted; both are printed. A 200 after a 401 (a gateway letting a revoked credential back
in) is counted and reported.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime
import math
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import h11

from controlplane.apctl.connection import Client, load_settings
from controlplane.api.v1 import fleet_pb2, revocations_pb2, tokens_pb2
from dataplane import sandbox, up
from loadtests.benchlib.__main__ import cpu_model

REPO_ROOT = Path(__file__).resolve().parents[1]
PROBE_PATH = "/clusters/sandbox/version"
PROBE_GROUP = sandbox.READONLY_GROUPS[0]     # bound to the viewer role by the quick start's policy
PHASE_TIMEOUT = 30.0                         # seconds for every gateway to accept, then to refuse
READY_TIMEOUT = 60.0                         # a busy machine starts Python processes slowly
PROBE_INTERVAL_MS = 10.0
QUICK = {"gateways": 2, "revocations": 10}


# -- the stack ---------------------------------------------------------------------------------------

class Service:
    """One process of the stack, its output in a log file, in its own session so that stopping it
    stops its children and a terminal's Ctrl-C reaches only the harness."""

    def __init__(self, name: str, argv: list[str], log: Path):
        self.name, self.log = name, log
        with open(log, "ab") as out:
            self.process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
                                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
                                            start_new_session=True)

    def wait_ready(self, predicate) -> None:
        try:
            up.wait_until(predicate, self.name, self.process, READY_TIMEOUT)
        except RuntimeError as err:
            tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
            raise RuntimeError(f"{err}; its log ({self.log}) ends:\n{tail}") from None

    def terminate(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def reap(self, grace: float = 10.0) -> None:
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)   # whatever of its session is left
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait()


@dataclass
class Stack:
    state: sandbox.StateLayout
    gateway_ports: list[int] = field(default_factory=list)
    services: list[Service] = field(default_factory=list)
    client: Client | None = None

    def start(self, gateways: int) -> None:
        state = self.state
        sandbox.prepare_pki(state)
        logs = state.root / "logs"
        logs.mkdir()
        redis_port = up.free_port()
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        redis = self._spawn("redis", [shutil.which("redis-server") or "redis-server", "--bind", "127.0.0.1",
                                      "--port", str(redis_port), "--save", "", "--appendonly", "no",
                                      "--dir", str(state.root)], logs)
        upstream_port = up.free_port()
        cluster = sandbox.prepare_sandbox_cluster(state, f"https://127.0.0.1:{upstream_port}")
        ready = state.root / "sandbox" / "ready"
        upstream = self._spawn("sandbox cluster", [
            sys.executable, "-m", "tests.fakekube", "--host", "127.0.0.1", "--port", str(upstream_port),
            "--cert", str(state.sandbox_cert), "--key", str(state.sandbox_key),
            "--token-file", str(state.sandbox_token), "--rbac-file", str(state.sandbox_rbac),
            "--ready-file", str(ready)], logs)
        self.gateway_ports = [up.free_port() for _ in range(gateways)]
        api_port = up.free_port()
        api = f"127.0.0.1:{api_port}"
        sandbox.write_secret(state.api_admin_token, secrets.token_urlsafe(32).encode())
        controlplane = self._spawn("control plane", [
            sys.executable, "-m", "dataplane.cli", "controlplane", "--listen", api,
            "--admin-token-file", str(state.api_admin_token),
            "--store", f"sqlite:///{state.controlplane_dir / 'controlplane.db'}", "--redis-url", redis_url,
            "--signing-key", str(state.signing_key), "--state-dir", str(state.controlplane_dir),
            "--client-ca-cert", str(state.client_ca_cert), "--client-ca-key", str(state.client_ca_key),
            "--gateway-url", f"https://127.0.0.1:{self.gateway_ports[0]}",
            "--gateway-ca", str(state.gateway_ca_cert)], logs)
        redis.wait_ready(lambda: up.redis_answers(redis_port))
        upstream.wait_ready(ready.exists)
        controlplane.wait_ready(lambda: up.grpc_serving(api))
        up.configure(state, api_port, [cluster])
        self.client = Client(load_settings(str(state.apctl_config)))
        self._start_gateways(redis_url, logs)

    def _start_gateways(self, redis_url: str, logs: Path) -> None:
        started = []
        for index, port in enumerate(self.gateway_ports):
            admin_port = up.free_port()
            spool = self.state.root / f"gateway-{index}" / "spool.jsonl"
            spool.parent.mkdir()
            argv = [*up.gateway_command(self.state, "127.0.0.1", port, admin_port, 1, redis_url),
                    "--audit-spool", str(spool), "--gateway-id", f"bench-{index}", "--drain-grace", "1"]
            started.append((self._spawn(f"gateway {index}", argv, logs), admin_port))
        for gateway, admin_port in started:     # started all at once: they warm up in parallel
            gateway.wait_ready(lambda: up.http_ok("127.0.0.1", admin_port, "/readyz"))

    def _spawn(self, name: str, argv: list[str], logs: Path) -> Service:
        service = Service(name, argv, logs / f"{name.replace(' ', '-')}.log")
        self.services.append(service)
        return service

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
        for service in reversed(self.services):   # gateways first, Redis last; all at once
            service.terminate()
        for service in reversed(self.services):
            service.reap()


# -- the credentials ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Credential:
    user: str
    secret: str
    revoke: tuple[str, str]      # (kind, value) of the revocation that will end it


def issue_credentials(client: Client, count: int) -> tuple[list[Credential], int]:
    """One token per revocation, each revoked in turn by user or by token id; returns them and
    the revision that issued the last one."""
    credentials, revision = [], 0
    for index in range(count):
        user = f"probe-{index:03d}"
        issued = client.call(client.tokens.IssueToken, tokens_pb2.IssueTokenRequest(
            user=user, groups=[PROBE_GROUP], description="revocation benchmark"))
        revoke = ("user", user) if index % 2 == 0 else ("token", issued.token.id)
        credentials.append(Credential(user, issued.secret, revoke))
        revision = issued.token.revision
    return credentials, revision


def wait_for_fleet(client: Client, revision: int, gateways: int) -> None:
    """Until all `gateways` report `revision` (they started meanwhile, so their heartbeats may lag)."""
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        answer = client.call(client.fleet.WaitForRevision, fleet_pb2.WaitForRevisionRequest(revision=revision),
                             timeout=READY_TIMEOUT)
        if len(answer.gateways) >= gateways:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(answer.gateways)} of {gateways} gateways reported to the fleet")
        time.sleep(0.1)


# -- probing ----------------------------------------------------------------------------------------

class Trial:
    """One revocation as the probers see it: per gateway, when the last probe it accepted was
    sent, and when its first refusal after that came back."""

    def __init__(self, credential: Credential, gateways: int):
        self.credential = credential
        self.accepted: list[float | None] = [None] * gateways     # send time of the latest 200
        self.refused: list[float | None] = [None] * gateways      # arrival of the first 401 after it
        self.all_accepted = asyncio.Event()
        self.all_refused = asyncio.Event()
        self.readmitted = 0          # 200s after a 401 from the same gateway: must stay 0
        self.unexpected: dict[int, int] = {}

    def observe(self, gateway: int, status: int, sent: float, received: float) -> None:
        if status == 200:
            if self.refused[gateway] is not None:
                self.readmitted += 1
                return
            first = self.accepted[gateway] is None
            self.accepted[gateway] = sent
            if first and None not in self.accepted:
                self.all_accepted.set()
        elif status == 401:
            # a 401 before the first 200 is a gateway that has not applied the token yet
            if self.accepted[gateway] is not None and self.refused[gateway] is None:
                self.refused[gateway] = received
                if None not in self.refused:
                    self.all_refused.set()
        else:
            self.unexpected[status] = self.unexpected.get(status, 0) + 1

    def enforced(self) -> tuple[float, float]:
        """Every gateway enforced the revocation by the first of these times, and not before the
        second: each began refusing between its last 200's send and its first 401's arrival."""
        return max(self.refused), max(self.accepted)

    def missing(self, stamps: list[float | None]) -> str:
        return ", ".join(f"gateway {index}" for index, stamp in enumerate(stamps) if stamp is None)


class Prober:
    """Probes one gateway with the current trial's credential (HTTP/1.1 keep-alive, reconnecting
    whenever the gateway closes)."""

    def __init__(self, index: int, port: int, context: ssl.SSLContext, interval: float):
        self.index, self.port, self.context = index, port, context
        self.interval = interval     # seconds from one probe's start to the next at the earliest
        self.trial: Trial | None = None
        self.probes = 0
        self.connections = 0

    async def run(self) -> None:
        while True:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port, ssl=self.context,
                                                           server_hostname="127.0.0.1")
            self.connections += 1
            try:
                connection = h11.Connection(h11.CLIENT)
                while True:
                    trial = self.trial
                    sent = time.monotonic()
                    status = await self._exchange(connection, reader, writer, trial.credential.secret)
                    received = time.monotonic()
                    self.probes += 1
                    trial.observe(self.index, status, sent, received)
                    if connection.our_state is not h11.DONE or connection.their_state is not h11.DONE:
                        break
                    connection.start_next_cycle()
                    # pacing, not synchronisation: probes back to back would starve a small machine
                    await asyncio.sleep(max(0.0, sent + self.interval - received))
            except (OSError, h11.ProtocolError, asyncio.IncompleteReadError):
                pass                      # the gateway closed the connection: open a new one
            finally:
                writer.close()

    @staticmethod
    async def _exchange(connection: h11.Connection, reader, writer, secret: str) -> int:
        writer.write(connection.send(h11.Request(method="GET", target=PROBE_PATH, headers=[
            ("Host", "gateway"), ("Authorization", f"Bearer {secret}"), ("User-Agent", "bench-revocation")])))
        writer.write(connection.send(h11.EndOfMessage()))
        status = 0
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(65536)
                connection.receive_data(data)    # b"" = closed: h11 then raises or reports it
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.EndOfMessage):
                return status
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionResetError("the gateway closed the connection mid-response")


# -- the measurement ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Measured:
    kind: str
    started: float           # the Revoke call was made
    returned: float          # it returned
    enforced_by: float       # the last gateway's first 401 arrived
    enforced_after: float    # the last probe any gateway accepted was sent


async def measure(client: Client, credentials: list[Credential],
                  probers: list[Prober]) -> tuple[list[Measured], int, dict[int, int]]:
    tasks = []
    results, readmitted, unexpected = [], 0, {}
    try:
        for credential in credentials:
            trial = Trial(credential, len(probers))
            for prober in probers:
                prober.trial = trial
            if not tasks:   # the first trial exists: now the probers may start
                tasks = [asyncio.create_task(prober.run()) for prober in probers]
            await _phase(trial.all_accepted, tasks, f"{credential.user} was not accepted within {PHASE_TIMEOUT:g} s "
                                                    f"by {trial.missing(trial.accepted)}")
            kind, value = credential.revoke
            started = time.monotonic()
            await asyncio.to_thread(client.call, client.revocations.Revoke,
                                    revocations_pb2.RevokeRequest(kind=kind, value=value, reason="benchmark"))
            returned = time.monotonic()
            await _phase(trial.all_refused, tasks, f"revocation of {kind} {value} not enforced within "
                                                   f"{PHASE_TIMEOUT:g} s by {trial.missing(trial.refused)}")
            results.append(Measured(kind, started, returned, *trial.enforced()))
            readmitted += trial.readmitted
            for status, count in trial.unexpected.items():
                unexpected[status] = unexpected.get(status, 0) + count
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return results, readmitted, unexpected


async def _phase(done: asyncio.Event, probers: list[asyncio.Task], timeout_message: str) -> None:
    """Until `done`, failing at once if a prober died (it cannot reach its gateway)."""
    waiter = asyncio.create_task(done.wait())
    try:
        finished, _ = await asyncio.wait([waiter, *probers], timeout=PHASE_TIMEOUT,
                                         return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    for task in probers:
        if task in finished:
            raise RuntimeError(f"a prober stopped: {task.exception()!r}")
    if waiter not in finished:
        raise RuntimeError(timeout_message)


# -- the report ------------------------------------------------------------------------------------

def percentile(values: list[float], p: float) -> float:
    """Nearest rank: the smallest value with at least p % of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


LABEL_WIDTH = 46


def row(label: str, seconds: list[float]) -> str:
    cells = "".join(f" {percentile(seconds, p) * 1000:8.1f} |" for p in (50, 90, 99, 100))
    return f"| {label:{LABEL_WIDTH}} |{cells}"


def report(results: list[Measured], probers: list[Prober], gateways: int, readmitted: int,
           unexpected: dict[int, int]) -> str:
    kinds = {kind: sum(1 for r in results if r.kind == kind) for kind in ("user", "token")}
    before = sum(1 for r in results if r.enforced_by <= r.returned)
    lines = [
        f"{len(results)} revocations ({kinds['user']} by user, {kinds['token']} by token), {gateways} gateways, "
        f"enforcement seen by probes (GET {PROBE_PATH}, one client per gateway, one probe every "
        f"{probers[0].interval * 1000:g} ms at most)",
        "",
        f"| {'ms':{LABEL_WIDTH}} | {'p50':>8} | {'p90':>8} | {'p99':>8} | {'max':>8} |",
        f"|{'-' * (LABEL_WIDTH + 2)}|{'-' * 10}|{'-' * 10}|{'-' * 10}|{'-' * 10}|",
        row("call returned → enforced everywhere, at most", [max(0.0, r.enforced_by - r.returned) for r in results]),
        row("call returned → enforced everywhere, at least",
            [max(0.0, r.enforced_after - r.returned) for r in results]),
        row("call made → enforced everywhere, at most", [r.enforced_by - r.started for r in results]),
        row("the Revoke call itself", [r.returned - r.started for r in results]),
        "",
        f"{before} of {len(results)} revocations were surely enforced on every gateway before the call returned "
        "(0 ms in the first row; times before the return count as 0 in the first two).",
        f"Revoked credentials accepted again after a refusal: {readmitted}. "
        f"Other answers to probes: {unexpected or 'none'}. "
        f"Probes: {sum(p.probes for p in probers)} on {sum(p.connections for p in probers)} connections.",
    ]
    return "\n".join(lines)


def client_context(state: sandbox.StateLayout) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(state.gateway_ca_cert))
    context.set_alpn_protocols(["http/1.1"])
    return context


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtests.bench_revocation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK['revocations']} revocations on {QUICK['gateways']} gateways: "
                             "proves the harness works")
    parser.add_argument("--gateways", type=int, default=4, help="gateway processes (default 4)")
    parser.add_argument("--revocations", type=int, default=200, help="revocations measured (default 200)")
    parser.add_argument("--probe-interval", type=float, default=PROBE_INTERVAL_MS, metavar="MS",
                        help="each prober starts a probe at most every MS milliseconds "
                             f"(default {PROBE_INTERVAL_MS:g}; 0: back to back)")
    parser.add_argument("--keep-workdir", action="store_true", help="keep keys, logs and the store")
    ns = parser.parse_args(argv)
    if ns.quick:
        ns.gateways, ns.revocations = QUICK["gateways"], QUICK["revocations"]
    if ns.gateways < 1 or ns.revocations < 1 or ns.probe_interval < 0:
        parser.error("--gateways and --revocations must be at least 1, --probe-interval not negative")
    return ns


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt   # SIGTERM stops everything the way Ctrl-C does


def main(argv: list[str] | None = None) -> int:
    ns = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="bench-revocation-"))
    stack = Stack(sandbox.StateLayout(workdir))
    started = datetime.datetime.now(datetime.timezone.utc)
    load_average = os.getloadavg()[0]
    try:
        stack.start(ns.gateways)
        credentials, revision = issue_credentials(stack.client, ns.revocations)
        wait_for_fleet(stack.client, revision, ns.gateways)
        probers = [Prober(index, port, client_context(stack.state), ns.probe_interval / 1000)
                   for index, port in enumerate(stack.gateway_ports)]
        results, readmitted, unexpected = asyncio.run(measure(stack.client, credentials, probers))
    except KeyboardInterrupt:
        print("interrupted; everything started was stopped", file=sys.stderr)
        return 130
    except (RuntimeError, OSError, grpc.RpcError) as err:
        print(f"bench_revocation: {err}", file=sys.stderr)
        return 1
    finally:
        stack.stop()
        if ns.keep_workdir:
            print(f"workdir kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"Revocation propagation, {started:%Y-%m-%d %H:%M} UTC; {os.cpu_count()} cores, {cpu_model()}; "
          f"load average before the run {load_average:.2f}\n")
    print(report(results, probers, ns.gateways, readmitted, unexpected))
    return 0


if __name__ == "__main__":
    sys.exit(main())
