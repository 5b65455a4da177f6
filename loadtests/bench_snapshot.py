"""Snapshot build+sign (control plane) and verify+apply (gateway): time and peak memory by size.

    .venv/bin/python -m loadtests.bench_snapshot [--quick] [--memory-limit-gb 4] [--cpu-limit 600]

For each size a desired state of that many clusters and bindings is generated (shapes below), and
two child processes measure, each under a memory and a CPU-time limit so that a size the code
cannot handle is reported ("exceeded …") instead of swapping the machine to death:

- build+sign: `controlplane.snapshots.build_snapshot` and `dataplane.snapshot.sign_snapshot`
  (validation, canonical JSON, Ed25519), which is what `Publisher.publish` does before Redis;
- verify+apply: what a gateway worker does with the envelope it read from Redis
  (`SnapshotFeed._apply`): `verify_snapshot` (signature, schema, and building the `Snapshot`, which
  compiles the policy and the authenticator), `SnapshotHolder.apply` with the worker's subscriber
  (`LiveExchanges`), and the write of the disk cache (`write_atomically`).

Time is wall-clock and CPU seconds of the phase; memory is the peak resident set during the phase
over the resident set before it (the kernel's high-water mark, reset at the phase's start), and
for verify+apply also what stays resident while the gateway holds the snapshot. Last, the mean
time of a first (uncached) decision through `snapshot.policy.decide`, the pipeline's call: a
policy compiled lazily pays there what it saved in verify+apply.

Shapes: clusters named `<env>-<region>-NNNNN`, labelled env (dev/test/staging/prod), region (8) and
team (one per 20 clusters). Five roles. Bindings: 60 % name 1-3 clusters, 30 % select a team's
clusters (`team`, or `team` + `env`), 9 % an env in a region, 1 % a whole env; each has 1-3
subjects, 60 % groups (three per team) and 40 % users (one per 5 bindings). One bearer token per
10 bindings, one user revocation per 100.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from loadtests.benchlib.__main__ import cpu_model

REPO_ROOT = Path(__file__).resolve().parents[1]
SIZES = [(1_000, 10_000), (1_000, 100_000), (10_000, 10_000), (10_000, 100_000)]
QUICK_SIZES = [(100, 1_000), (300, 3_000)]
ENVS = ("dev", "test", "staging", "prod")
ENV_WEIGHTS = (3, 2, 2, 3)
REGIONS = ("eu-west-1", "eu-central-1", "us-east-1", "us-east-2", "us-west-2", "ap-south-1",
           "ap-northeast-1", "sa-east-1")
CLUSTERS_PER_TEAM = 20
BINDINGS_PER_USER = 5
EXIT_OUT_OF_MEMORY = 3
DECISIONS = 1000
COMMITTED_AT = "2026-11-23T08:00:00Z"


# -- the desired state ---------------------------------------------------------------------------------

def generate_state(clusters: int, bindings: int, seed: int = 1):
    """A `controlplane.model.State` of the shapes described at the top (deterministic per seed)."""
    from controlplane import model
    from dataplane.pki import CertificateAuthority

    rng = random.Random(seed)
    ca_bundle = CertificateAuthority.create("bench cluster CA").cert_pem.decode()   # the size of a real one
    teams = [f"team-{index:04d}" for index in range(max(1, clusters // CLUSTERS_PER_TEAM))]
    fleet = []
    for index in range(clusters):
        env, region = rng.choices(ENVS, ENV_WEIGHTS)[0], rng.choice(REGIONS)
        name = f"{env}-{region}-{index:05d}"
        fleet.append(model.Cluster(
            name=name, endpoint=f"https://{name}.k8s.example.com:6443", ca_bundle=ca_bundle,
            credential=model.Credential(kind="token", ref=f"file:{name}.token"),
            labels={"env": env, "region": region, "team": teams[index % len(teams)]}))
    roles = _roles(model)
    users = [f"user-{index:06d}@example.com" for index in range(max(1, bindings // BINDINGS_PER_USER))]
    groups = [f"{team}-{duty}" for team in teams for duty in ("devs", "ops", "viewers")]
    grants = []
    for index in range(bindings):
        subjects = tuple(model.Subject("group", rng.choice(groups)) if rng.random() < 0.6
                         else model.Subject("user", rng.choice(users)) for _ in range(rng.randint(1, 3)))
        grants.append(model.Binding(name=f"binding-{index:06d}", role=rng.choice(roles).name,
                                    subjects=tuple(dict.fromkeys(subjects)),
                                    clusters=_selector(model, rng, fleet, teams)))
    tokens = tuple(model.Token(id=f"t-{index:06d}", sha256=f"{rng.getrandbits(256):064x}",
                               user=rng.choice(users), groups=(rng.choice(groups),))
                   for index in range(bindings // 10))
    revocations = tuple(model.Revocation(kind="user", value=user) for user in rng.sample(users, len(users) // 20))
    return model.State(revision=bindings, committed_at=COMMITTED_AT, clusters=tuple(fleet), roles=roles,
                       bindings=tuple(grants), tokens=tokens, revocations=revocations)


def _roles(model) -> tuple:
    rule = model.Rule
    read = ("get", "list", "watch")
    return (
        model.Role("viewer", (rule(verbs=read, api_groups=("*",), resources=("*",)),
                              rule(verbs=("get",), non_resource_urls=("*",)))),
        model.Role("editor", (rule(verbs=(*read, "create", "update", "patch", "delete"),
                                   api_groups=("", "apps", "batch"),
                                   resources=("pods", "deployments", "jobs", "configmaps", "services")),)),
        model.Role("namespace-admin", (rule(verbs=("*",), api_groups=("*",), resources=("*",),
                                            namespaces=("team-a", "team-b")),)),
        model.Role("debugger", (rule(verbs=("get", "create"), api_groups=("",),
                                     resources=("pods/exec", "pods/log", "pods/portforward")),)),
        model.Role("cluster-admin", (rule(verbs=("*",), api_groups=("*",), resources=("*",)),
                                     rule(verbs=("*",), non_resource_urls=("*",)))),
    )


def _selector(model, rng: random.Random, fleet: list, teams: list[str]):
    draw = rng.random()
    if draw < 0.60:
        chosen = rng.sample(fleet, min(len(fleet), rng.randint(1, 3)))
        return model.ClusterSelector(names=tuple(sorted(cluster.name for cluster in chosen)))
    if draw < 0.90:
        labels = {"team": rng.choice(teams)}
        if rng.random() < 0.5:
            labels["env"] = rng.choice(ENVS)
        return model.ClusterSelector(labels=labels)
    if draw < 0.99:
        return model.ClusterSelector(labels={"env": rng.choice(ENVS), "region": rng.choice(REGIONS)})
    return model.ClusterSelector(labels={"env": rng.choice(ENVS)})


# -- the phases (each in its own child process) ---------------------------------------------------------

def _status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


class Phase:
    """Wall and CPU time of a `with` block, and its peak resident set over the one before it."""

    def __enter__(self) -> "Phase":
        gc.collect()
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")             # resets the peak resident set (VmHWM) to the current one
        self.rss_before_kb = _status_kb("VmRSS")
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu
        self.peak_mb = (_status_kb("VmHWM") - self.rss_before_kb) / 1024

    def held_mb(self) -> float:
        """What stays resident after the phase (garbage collected)."""
        gc.collect()
        return (_status_kb("VmRSS") - self.rss_before_kb) / 1024


def build_and_sign(clusters: int, bindings: int, envelope_path: Path, key_path: Path) -> dict:
    from controlplane.snapshots import build_snapshot
    from dataplane.signing import load_private_key
    from dataplane.snapshot import sign_snapshot

    state = generate_state(clusters, bindings)
    key = load_private_key(key_path)
    with Phase() as phase:
        envelope = sign_snapshot(build_snapshot(state), key)
    envelope_path.write_bytes(envelope)
    return {"wall": phase.wall, "cpu": phase.cpu, "peak_mb": phase.peak_mb, "envelope_bytes": len(envelope)}


def verify_and_apply(envelope_path: Path, key_path: Path, cache_path: Path) -> dict:
    from dataplane.liveexchanges import LiveExchanges
    from dataplane.metrics import GatewayMetrics
    from dataplane.signing import load_private_key
    from dataplane.snapshot import SnapshotHolder, verify_snapshot
    from dataplane.files import write_atomically

    public_key = load_private_key(key_path).public_key()
    holder = SnapshotHolder()
    LiveExchanges(holder, GatewayMetrics())         # the worker's subscriber (dataplane/server.py)
    envelope = envelope_path.read_bytes()
    with Phase() as phase:
        snapshot = verify_snapshot(envelope, public_key)
        if not holder.apply(snapshot):
            raise RuntimeError("the holder refused the snapshot")
        write_atomically(cache_path, envelope)
    del snapshot                                    # the holder keeps it, as a gateway does
    held_mb = phase.held_mb()
    return {"wall": phase.wall, "cpu": phase.cpu, "peak_mb": phase.peak_mb, "held_mb": held_mb,
            "decision_us": first_decision_us(holder.current)}


def first_decision_us(snapshot, count: int = DECISIONS) -> float:
    """Mean time of `count` first decisions (distinct callers on distinct clusters, so none is
    cached) through the pipeline's entry point: a compiler that defers work to the first request
    pays for it here."""
    from dataplane.identity import Identity
    from native.requestinfo import parse_request_info

    rng = random.Random(2)
    subjects = [s for binding in snapshot.data.get("bindings", ()) for s in binding["subjects"]]
    users = sorted({s["name"] for s in subjects if s["kind"] == "user"}) or ["nobody"]
    groups = sorted({s["name"] for s in subjects if s["kind"] == "group"}) or ["nobody"]
    clusters = list(snapshot.clusters.values())
    info = parse_request_info("GET", "/api/v1/namespaces/default/pods", "limit=500")
    asks = [(Identity(user=rng.choice(users), groups=tuple(rng.sample(groups, min(len(groups), 3))), method="token"),
             rng.choice(clusters)) for _ in range(count)]
    started = time.perf_counter()
    for identity, cluster in asks:
        snapshot.policy.decide(identity, cluster, info)
    return (time.perf_counter() - started) / count * 1e6


def child(argv: list[str]) -> int:
    """`--child build C B ENVELOPE KEY` or `--child apply ENVELOPE KEY CACHE`: one JSON line out."""
    memory_bytes, cpu_seconds = int(argv[0]), int(argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 5))   # SIGXCPU at the soft limit
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    what, args = argv[2], argv[3:]
    try:
        if what == "build":
            result = build_and_sign(int(args[0]), int(args[1]), Path(args[2]), Path(args[3]))
        else:
            result = verify_and_apply(Path(args[0]), Path(args[1]), Path(args[2]))
    except MemoryError:
        os._exit(EXIT_OUT_OF_MEMORY)                # printing may need memory too
    print(json.dumps(result), flush=True)
    return 0


# -- the run ---------------------------------------------------------------------------------------------

@dataclass
class Limits:
    memory_gb: float
    cpu_seconds: int

    def describe(self, returncode: int, last_error_line: str) -> str:
        if returncode == EXIT_OUT_OF_MEMORY:
            return f"exceeded {self.memory_gb:g} GB"
        if returncode == -signal.SIGXCPU:            # the soft CPU limit
            return f"exceeded {self.cpu_seconds} s CPU"
        if returncode < 0:
            return f"killed by {signal.Signals(-returncode).name}"
        return f"failed ({returncode}): {last_error_line}"


def run_child(limits: Limits, what: str, args: list) -> dict | str:
    """The child's figures, or why it has none."""
    argv = [sys.executable, "-m", "loadtests.bench_snapshot", "--child", str(int(limits.memory_gb * 2**30)),
            str(limits.cpu_seconds), what, *map(str, args)]
    wall_limit = limits.cpu_seconds * 3 + 60        # a machine that busy says nothing useful anyway
    try:
        done = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, timeout=wall_limit)
    except subprocess.TimeoutExpired:
        return f"exceeded {wall_limit} s wall"
    if done.returncode != 0:
        errors = done.stderr.decode(errors="replace").strip()
        print(f"the {what} phase exited with {done.returncode}:\n{errors[-3000:]}", file=sys.stderr)
        return limits.describe(done.returncode, errors.splitlines()[-1] if errors else "")
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


def measure(sizes: list[tuple[int, int]], limits: Limits, workdir: Path) -> Iterator[tuple]:
    """(clusters, bindings, build+sign figures, verify+apply figures) per size, as each is done."""
    from dataplane import signing

    key_path = workdir / "snapshot-signing.key"
    signing.write_private_key(signing.generate_signing_key(), key_path)
    for clusters, bindings in sizes:
        envelope = workdir / f"snapshot-{clusters}-{bindings}.json"
        built = run_child(limits, "build", [clusters, bindings, envelope, key_path])
        applied: dict | str = "not run (no envelope)"
        if isinstance(built, dict):
            applied = run_child(limits, "apply", [envelope, key_path, workdir / "snapshot.cache.json"])
            envelope.unlink()
        yield clusters, bindings, built, applied


TABLE_HEAD = ("| clusters | bindings | envelope MB | build+sign s (wall / CPU) | peak MB "
              "| verify+apply s (wall / CPU) | peak MB | held MB | first decision µs |\n"
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|")


def table_row(clusters: int, bindings: int, built: dict | str, applied: dict | str) -> str:
    def timed(result: dict) -> str:
        return f"{result['wall']:.2f} / {result['cpu']:.2f}"

    cells = [f"{clusters:,}", f"{bindings:,}"]
    if isinstance(built, dict):
        cells += [f"{built['envelope_bytes'] / 2**20:.1f}", timed(built), f"{built['peak_mb']:.0f}"]
    else:
        cells += ["", built, ""]
    if isinstance(applied, dict):
        cells += [timed(applied), f"{applied['peak_mb']:.0f}", f"{applied['held_mb']:.0f}",
                  f"{applied['decision_us']:.0f}"]
    else:
        cells += [applied, "", "", ""]
    return "| " + " | ".join(cells) + " |"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtests.bench_snapshot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="small sizes (" + ", ".join(f"{c}×{b}" for c, b in QUICK_SIZES) +
                             "): proves the harness works")
    parser.add_argument("--memory-limit-gb", type=float, default=4.0,
                        help="address space each phase may use (default 4)")
    parser.add_argument("--cpu-limit", type=int, default=600, help="CPU seconds each phase may use (default 600)")
    ns = parser.parse_args(argv)
    if ns.memory_limit_gb <= 0 or ns.cpu_limit < 1:
        parser.error("--memory-limit-gb and --cpu-limit must be positive")
    return ns


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return child(argv[1:])
    ns = parse_args(argv)
    limits = Limits(ns.memory_limit_gb, ns.cpu_limit)
    started = datetime.datetime.now(datetime.timezone.utc)
    load_average = os.getloadavg()[0]
    print(f"Snapshot build+sign and verify+apply, {started:%Y-%m-%d %H:%M} UTC; {os.cpu_count()} cores, "
          f"{cpu_model()}; limits per phase {limits.memory_gb:g} GB, {limits.cpu_seconds} s CPU; "
          f"load average before the run {load_average:.2f}\n")
    print(TABLE_HEAD, flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-snapshot-") as workdir:
        for row in measure(QUICK_SIZES if ns.quick else SIZES, limits, Path(workdir)):
            print(table_row(*row), flush=True)     # a long run shows each size as it is done
    return 0


if __name__ == "__main__":
    sys.exit(main())
