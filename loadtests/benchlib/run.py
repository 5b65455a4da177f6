"""One benchmark run: start the stack, check every target answers, warm up, measure the rounds,
stop everything that was started."""
from __future__ import annotations

import http.client
import os
import shutil
import ssl
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from dataplane import sandbox

from . import fixtures, gateway, nginx, packages, processes, profile
from .report import DIRECT, GATEWAY, NGINX, Results, Sample
from .scenarios import LIST_64, SMALL_GET_64, Scenario, Target

REPO_ROOT = Path(__file__).resolve().parents[2]
TARGET_CORE = 0   # the proxy under test (nginx proxy, gateway) — one at a time is loaded
LOAD_CORE = 1     # the load generator and the upstream
UPSTREAM_KEEPALIVE = 64   # idle upstream connections kept by nginx and the gateway alike


@dataclass(frozen=True)
class Options:
    duration: int            # seconds per measurement
    rounds: int
    warmup: int              # seconds per target and warm-up scenario, before the first round
    scenarios: tuple[Scenario, ...]
    keep_workdir: bool = False
    profile: Path | None = None   # after the rounds: py-spy on the gateway under small GET 64, to this file


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cores() -> tuple[int, int]:
    if len(os.sched_getaffinity(0)) >= 2:
        return TARGET_CORE, LOAD_CORE
    log("warning: one core only; targets, upstream and load generator share core 0")
    return TARGET_CORE, TARGET_CORE


def check_answers(target: Target, auth_header: str) -> None:
    """One GET of each body through `target`; raises RuntimeError unless both come back whole."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    name, value = auth_header.split(": ", 1)
    for path, body in ((fixtures.POD_PATH, fixtures.pod_body()), (fixtures.POD_LIST_PATH, fixtures.pod_list_body())):
        conn = http.client.HTTPSConnection("127.0.0.1", target.port, context=context, timeout=10)
        try:
            conn.request("GET", target.prefix + path, headers={name: value})
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as err:
            raise RuntimeError(f"GET {target.prefix}{path}: {type(err).__name__}: {err}") from err
        finally:
            conn.close()
        if response.status != 200 or data != body:
            raise RuntimeError(f"GET {target.prefix}{path}: {response.status}, {len(data)} bytes "
                               f"(expected 200, {len(body)} bytes): {data[:300]!r}")


def offered_protocols(port: int) -> frozenset[str]:
    selected = processes.tls_accepts(port, ["h2", "http/1.1"])
    return frozenset({"http/1.1", selected}) if selected else frozenset({"http/1.1"})


class Stack:
    """The upstream, the nginx proxy and the gateway; stops what it started on exit."""

    def __init__(self, work: Path, target_core: int, load_core: int):
        self.work, self.target_core, self.load_core = work, target_core, load_core
        self.started: list[processes.Pinned] = []
        self.gateway_error: str | None = None

    def __enter__(self) -> "Stack":
        return self

    def __exit__(self, *exc) -> None:
        for process in reversed(self.started):
            process.stop()

    def _track(self, process: processes.Pinned) -> processes.Pinned:
        self.started.append(process)
        return process

    def start(self) -> tuple[list[Target], str]:
        """The targets that answer correctly, and the Authorization header the load carries."""
        files = fixtures.write_upstream_files(self.work / "upstream-files")
        upstream_port, proxy_port, gateway_port, admin_port = (processes.free_port() for _ in range(4))
        setup = gateway.prepare(self.work / "gateway", gateway_port, upstream_port, files.ca_pem)
        auth_header = f"Authorization: Bearer {setup.caller_token}"

        upstream = self._track(nginx.start_upstream(self.work / "upstream", self.load_core, upstream_port, files))
        proxy = self._track(nginx.start_proxy(
            self.work / "proxy", self.target_core, proxy_port, upstream_port, UPSTREAM_KEEPALIVE,
            setup.state.gateway_cert, setup.state.gateway_key, files.ca, gateway.CLUSTER, setup.cluster_token,
            sandbox.READONLY_USER))
        prefix = f"/clusters/{gateway.CLUSTER}"
        targets = []
        for name, process, port, path_prefix in ((DIRECT, upstream, upstream_port, ""),
                                                 (NGINX, proxy, proxy_port, prefix)):
            processes.wait_until(lambda: processes.tls_accepts(port) is not False, process)
            targets.append(Target(name, port, path_prefix, process.pid, offered_protocols(port)))
            check_answers(targets[-1], auth_header)
        try:
            gw = self._track(gateway.start(setup, self.target_core, gateway_port, admin_port,
                                           UPSTREAM_KEEPALIVE, REPO_ROOT))
            target = Target(GATEWAY, gateway_port, prefix, gw.pid, offered_protocols(gateway_port))
            check_answers(target, auth_header)
            targets.append(target)
        except RuntimeError as err:
            self.gateway_error = str(err)
            log(f"gateway: pending — {err}")
        return targets, auth_header


def measure(scenario: Scenario, target: Target, all_targets: list[Target], auth_header: str, seconds: int,
            load_core: int) -> Sample:
    processes.wait_until_idle([t.pid for t in all_targets])
    before = processes.cpu_seconds(target.pid)
    load = scenario.run(target, auth_header, seconds, load_core)
    return Sample(load=load, cpu_seconds=processes.cpu_seconds(target.pid) - before)


def profile_gateway(target: Target, auth_header: str, options: Options, load_core: int) -> None:
    profile.ensure_py_spy()
    log(f"profiling the gateway under {SMALL_GET_64.name} for {options.duration} s")
    options.profile.unlink(missing_ok=True)
    processes.wait_until_idle([target.pid])
    recorder = profile.start_recording(target.pid, options.duration, options.profile)
    SMALL_GET_64.run(target, auth_header, options.duration, load_core)
    _, errors = recorder.communicate(timeout=options.duration + 30)
    if recorder.returncode != 0:
        raise RuntimeError(f"py-spy failed: {errors.strip()}")


def warm_up(targets: list[Target], auth_header: str, seconds: int, load_core: int) -> None:
    log("warming up")
    for target in targets:
        for scenario in (SMALL_GET_64, LIST_64):
            scenario.run(target, auth_header, seconds, load_core)


def measure_rounds(results: Results, targets: list[Target], auth_header: str, options: Options,
                   load_core: int) -> None:
    """Every round runs every scenario against every target in turn, so that drift in the
    machine's speed hits all targets alike."""
    for round_number in range(1, options.rounds + 1):
        for scenario in options.scenarios:
            for target in targets:
                if scenario.protocol not in target.alpn:
                    results.mark_missing(scenario, target.name, f"n/a (no {scenario.protocol})")
                    continue
                try:
                    sample = measure(scenario, target, targets, auth_header, options.duration, load_core)
                except (RuntimeError, ValueError) as err:
                    log(f"{scenario.name} {target.name}: {err}")
                    results.mark_missing(scenario, target.name, f"failed: {str(err).splitlines()[0]}")
                    continue
                results.add(scenario, target.name, round_number, sample)
                log(f"round {round_number}/{options.rounds} {scenario.name:38} {target.name:8} "
                    f"{sample.load.per_second:>10,.0f} req/s {sample.cpu_us_per_request:7.1f} µs CPU/req "
                    f"{sample.load.errors} errors")


def run(options: Options) -> Results:
    packages.ensure_tools()
    target_core, load_core = cores()
    work = Path(tempfile.mkdtemp(prefix="accesspoint-bench-"))
    work.chmod(0o755)   # nginx workers run as nobody and read the docroot
    results = Results()
    try:
        with Stack(work, target_core, load_core) as stack:
            targets, auth_header = stack.start()
            if stack.gateway_error:
                for scenario in options.scenarios:
                    results.mark_missing(scenario, GATEWAY, f"pending: {stack.gateway_error.splitlines()[0]}")
            if options.warmup:
                warm_up(targets, auth_header, options.warmup, load_core)
            measure_rounds(results, targets, auth_header, options, load_core)
            gateway_target = next((t for t in targets if t.name == GATEWAY), None)
            if options.profile and gateway_target:
                try:
                    profile_gateway(gateway_target, auth_header, options, load_core)
                except (RuntimeError, OSError) as err:
                    log(f"no profile: {err}")
    finally:
        if options.keep_workdir:
            log(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return results
