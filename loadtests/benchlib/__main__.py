"""`loadtests/bench`: the command line (see docs/benchmarks.md)."""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import signal
import sys
from pathlib import Path

from . import profile, report, run, scenarios

PRESETS = {  # name → (seconds per measurement, rounds, warm-up seconds)
    "smoke": (1, 1, 0),
    "quick": (3, 1, 1),
}


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt   # SIGTERM and SIGHUP stop everything the way Ctrl-C does


def cpu_model() -> str:
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="loadtests/bench", description=__doc__)
    preset = parser.add_mutually_exclusive_group()
    preset.add_argument("--smoke", action="store_true", help="1 s per scenario, 1 round: proves the harness works")
    preset.add_argument("--quick", action="store_true", help="3 s per scenario, 1 round")
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; figures are medians (default 3)")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up seconds per target (default 3)")
    parser.add_argument("--profile", type=Path, metavar="FILE",
                        help="after the rounds, py-spy the gateway under small GET 64 (collapsed stacks to FILE)")
    parser.add_argument("--keep-workdir", action="store_true", help="keep configs, logs and the audit spool")
    ns = parser.parse_args(argv)
    for name, (duration, rounds, warmup) in PRESETS.items():
        if getattr(ns, name):
            ns.duration, ns.rounds, ns.warmup = duration, rounds, warmup
    if ns.duration < 1 or ns.rounds < 1 or ns.warmup < 0:
        parser.error("--duration and --rounds must be at least 1, --warmup at least 0")
    return ns


def main(argv: list[str] | None = None) -> int:
    ns = parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    options = run.Options(duration=ns.duration, rounds=ns.rounds, warmup=ns.warmup,
                          scenarios=scenarios.ALL, keep_workdir=ns.keep_workdir,
                          profile=ns.profile.resolve() if ns.profile else None)
    started = datetime.datetime.now(datetime.timezone.utc)
    load_average = f"{os.getloadavg()[0]:.2f}"   # other work on the machine shows up as noise
    try:
        results = run.run(options)
    except KeyboardInterrupt:
        print("interrupted; everything started was stopped", file=sys.stderr)
        return 130
    except RuntimeError as err:
        print(f"loadtests/bench: {err}", file=sys.stderr)
        return 1
    print(f"AccessPoint benchmark, {started:%Y-%m-%d %H:%M} UTC: {ns.duration} s × {ns.rounds} round(s), "
          f"medians; {os.cpu_count()} cores, {cpu_model()}; targets on core {run.TARGET_CORE}, "
          f"load generator and upstream on core {run.LOAD_CORE}; load average before the run {load_average}\n")
    print(report.table(results, options.scenarios))
    print("\nIssue 5 targets (gateway):")
    print(report.targets_summary(results))
    if ns.profile and ns.profile.exists():
        print(f"\nGateway profile under {scenarios.SMALL_GET_64.name} ({ns.profile}):")
        print(profile.top_frames(ns.profile))
    return 0


if __name__ == "__main__":
    sys.exit(main())
