"""RSS of ONE gateway worker per idle watch and per idle keep-alive connection (issue 5 item 4).

    .venv/bin/python -m loadtests.bench_idle                # 10,000 of each (target: <= 1 GB RSS)
    .venv/bin/python -m loadtests.bench_idle --quick        # 1,000 of each
    .venv/bin/python -m loadtests.bench_idle --count 300    # any number

One phase per kind, each against a fresh gateway process (`--workers 1`: the process is the
worker) so that memory freed by one phase cannot hide the growth of the next:
- `keep-alive HTTP/1.1`: TLS connections that made one GET, then idle;
- `watch HTTP/2`: watches multiplexed 200 to a connection (what kubectl and client-go do);
- `watch HTTP/1.1`: one watch per TLS connection (client-go with HTTP/2 disabled).
The gateway runs its full pipeline (token authentication, policy, impersonation, audit spool)
in front of loadtests/idle_upstream.py, which offers h2 and http/1.1 like an API server and holds every
watch after one event. Each phase measures VmRSS after warm-up, then opens everything (each
watch counts only once its first event arrived through the gateway), waits until RSS settles,
checks that everything is still open and prints RSS before/after and per item. The gateway is
pinned to core 0, the upstream and the clients to core 1. Idle timeouts are raised for the run
(--keepalive-timeout), since idleness is the point.
"""
from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import uvloop

from dataplane import up

from .benchlib import fixtures, gateway, processes
from .idle_clients import H2Watches, Http1Watch, KeepAliveConnection, Target

REPO_ROOT = Path(__file__).resolve().parents[1]
GATEWAY_CORE, LOAD_CORE = 0, 1
STREAMS_PER_CONNECTION = 200      # below the gateway's SETTINGS_MAX_CONCURRENT_STREAMS (250)
OPENING_AT_ONCE = 100             # TLS handshakes in flight: the gateway answers, the backlog never overflows
TARGET_BYTES = 1 << 30            # 10,000 idle watches in <= 1 GB of one worker's RSS
PHASES = ("keep-alive HTTP/1.1", "watch HTTP/2", "watch HTTP/1.1")


@dataclass(frozen=True)
class PhaseResult:
    phase: str
    count: int
    rss_before: int
    rss_after: int
    open_at_end: int
    seconds: float

    @property
    def per_item(self) -> float:
        return (self.rss_after - self.rss_before) / self.count


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def settled_rss(pid: int, window: float = 0.5, timeout: float = 30.0) -> int:
    """RSS once it stopped moving (less than 0.5% over `window`), or after `timeout`."""
    deadline = time.monotonic() + timeout
    last = rss_bytes(pid)
    while time.monotonic() < deadline:
        await asyncio.sleep(window)
        now = rss_bytes(pid)
        if abs(now - last) <= last * 0.005:
            return now
        last = now
    return last


def raise_fd_limit(needed: int) -> None:
    """Children inherit it: the gateway holds a descriptor per client connection too."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise SystemExit(f"RLIMIT_NOFILE hard limit {hard} < {needed} needed: lower --count or raise the limit")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, needed), hard))


async def _bounded(coroutines, limit: int) -> None:
    gate = asyncio.Semaphore(limit)

    async def one(coroutine):
        async with gate:
            await coroutine

    await asyncio.gather(*(one(c) for c in coroutines))


async def open_phase(phase: str, target: Target, count: int) -> list:
    """Opens `count` idle connections or watches of the phase's kind; returns the holders."""
    if phase == "watch HTTP/2":
        sizes = [min(STREAMS_PER_CONNECTION, count - start) for start in range(0, count, STREAMS_PER_CONNECTION)]
        holders = [H2Watches(target) for _ in sizes]
        await _bounded((h.open(n) for h, n in zip(holders, sizes)), 4)
        return holders
    kind = KeepAliveConnection if phase == "keep-alive HTTP/1.1" else Http1Watch
    holders = [kind(target) for _ in range(count)]
    await _bounded((h.open() for h in holders), OPENING_AT_ONCE)
    return holders


def still_open(holders: list) -> int:
    return sum(int(h.alive()) for h in holders)


async def warm_up(target: Target) -> None:
    """One of each kind, so imports, TLS contexts and the upstream HTTP/2 connection exist before
    the baseline is taken."""
    for phase in PHASES:
        for holder in await open_phase(phase, target, 1):
            holder.close()


async def measure(phase: str, target: Target, gateway_pid: int, count: int) -> PhaseResult:
    await warm_up(target)
    before = await settled_rss(gateway_pid)
    started = time.monotonic()
    holders = await open_phase(phase, target, count)
    seconds = time.monotonic() - started
    after = await settled_rss(gateway_pid)
    result = PhaseResult(phase, count, before, after, still_open(holders), seconds)
    for holder in holders:
        holder.close()
    return result


class Bench:
    """The upstream (for the whole run) and one gateway per phase; stops all it started."""

    def __init__(self, work: Path):
        self.work = work
        self.upstream: processes.Pinned | None = None

    def __enter__(self) -> "Bench":
        files = fixtures.write_upstream_files(self.work / "upstream-files")
        self.upstream_port = processes.free_port()
        self.upstream = processes.Pinned(
            "idle upstream", LOAD_CORE,
            [sys.executable, "-m", "loadtests.idle_upstream", "--port", str(self.upstream_port),
             "--cert", str(files.cert), "--key", str(files.key)],
            log=self.work / "upstream.log", cwd=REPO_ROOT)
        processes.wait_until(lambda: processes.tls_accepts(self.upstream_port, ["h2"]) == "h2", self.upstream)
        self.port, self.admin_port = processes.free_port(), processes.free_port()
        self.setup = gateway.prepare(self.work / "gateway", self.port, self.upstream_port, files.ca_pem)
        return self

    def __exit__(self, *exc) -> None:
        if self.upstream is not None:
            self.upstream.stop()

    def target(self) -> Target:
        return Target(self.port, f"/clusters/{gateway.CLUSTER}", self.setup.caller_token,
                      str(self.setup.state.gateway_ca_cert))

    def start_gateway(self, phase: str) -> processes.Pinned:
        argv = [*up.gateway_command(self.setup.state, "127.0.0.1", self.port, self.admin_port, workers=1),
                "--keepalive-timeout", "86400"]
        log = self.work / f"gateway-{phase.replace(' ', '-').replace('/', '')}.log"
        process = processes.Pinned("gateway", GATEWAY_CORE, argv, log=log, cwd=REPO_ROOT)
        processes.wait_until(lambda: up.http_ok("127.0.0.1", self.admin_port, "/readyz"), process)
        return process


def report(results: list[PhaseResult]) -> str:
    lines = ["| phase | open | RSS before | RSS after | per item | still open at the end | opened in |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r.phase} | {r.count:,} | {r.rss_before / 2**20:,.1f} MiB | {r.rss_after / 2**20:,.1f} MiB "
                     f"| {r.per_item / 1024:,.1f} KiB | {r.open_at_end:,} | {r.seconds:.1f} s |")
    for r in results:
        if r.phase.startswith("watch"):
            projected = r.rss_before + r.per_item * 10_000
            verdict = "meets" if projected <= TARGET_BYTES else "misses"
            lines.append(f"{r.phase}: 10,000 idle watches ≈ {projected / 2**20:,.0f} MiB RSS for the worker "
                         f"({verdict} the 1 GiB target)")
    return "\n".join(lines)


def run(count: int, phases: tuple[str, ...]) -> list[PhaseResult]:
    # client + gateway side of each connection, the upstream's few, and room to spare
    raise_fd_limit(count + 2048)
    work = Path(tempfile.mkdtemp(prefix="accesspoint-bench-idle-"))
    results = []
    try:
        with Bench(work) as bench:
            for phase in phases:
                gateway_process = bench.start_gateway(phase)
                try:
                    print(f"{phase}: opening {count:,} …", file=sys.stderr, flush=True)
                    results.append(uvloop.run(measure(phase, bench.target(), gateway_process.pid, count)))
                except Exception:
                    print(f"{phase} failed; the gateway's log ends:\n{gateway_process.log_tail()}\n"
                          f"the upstream's:\n{bench.upstream.log_tail()}", file=sys.stderr)
                    raise
                finally:
                    gateway_process.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="RSS of one gateway worker per idle watch and connection")
    parser.add_argument("--count", type=int, default=10_000, help="idle connections or watches per phase")
    parser.add_argument("--quick", action="store_true", help="1,000 per phase")
    parser.add_argument("--phase", action="append", choices=PHASES, help="run only this phase (repeatable)")
    ns = parser.parse_args(argv)
    count = 1_000 if ns.quick else ns.count
    if count < 1:
        parser.error("--count must be positive")
    results = run(count, tuple(ns.phase or PHASES))
    print(report(results))
    closed_early = [r.phase for r in results if r.open_at_end != r.count]
    if closed_early:
        print(f"closed before the measurement ended: {', '.join(closed_early)}", file=sys.stderr)
    return 1 if closed_early else 0


if __name__ == "__main__":
    sys.exit(main())
