"""The control-plane benchmarks' --quick runs work and print their tables.

Only that each harness works is asserted (every size measured, every revocation enforced on every
gateway, nothing readmitted), never how fast anything is.
"""
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_quick(module: str) -> str:
    done = subprocess.run([sys.executable, "-m", module, "--quick"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=170)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def table_rows(output: str) -> list[list[str]]:
    rows = []
    for line in output.splitlines():
        if line.startswith("| "):          # not the |---| separator
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows[1:]    # without the header


def number(cell: str) -> float:
    return float(cell.replace(",", ""))


@pytest.mark.timeout(180)
def test_revocation_quick_run_measures_every_revocation_on_every_gateway():
    output = run_quick("loadtests.bench_revocation")
    assert "10 revocations (5 by user, 5 by token), 2 gateways" in output, output
    rows = {row[0]: [number(cell) for cell in row[1:]] for row in table_rows(output)}
    assert set(rows) == {"call returned → enforced everywhere, at most",
                         "call returned → enforced everywhere, at least",
                         "call made → enforced everywhere, at most", "the Revoke call itself"}, output
    for label, (p50, p90, p99, maximum) in rows.items():
        assert 0 <= p50 <= p90 <= p99 <= maximum, f"{label}\n{output}"
    assert rows["the Revoke call itself"][0] > 0, output
    assert rows["call made → enforced everywhere, at most"][0] > 0, output
    assert "accepted again after a refusal: 0." in output, output
    assert "Other answers to probes: none." in output, output


@pytest.mark.timeout(180)
def test_snapshot_quick_run_measures_both_phases_at_every_size():
    output = run_quick("loadtests.bench_snapshot")
    rows = table_rows(output)
    assert [(row[0], row[1]) for row in rows] == [("100", "1,000"), ("300", "3,000")], output
    for row in rows:
        envelope_mb, build, build_peak, apply, apply_peak, held, decision = row[2:]
        assert number(envelope_mb) > 0 and number(decision) > 0, output
        for timed in (build, apply):
            wall, cpu = (number(part) for part in re.fullmatch(r"(\S+) / (\S+)", timed).groups())
            assert wall > 0 and cpu > 0, output
        assert number(build_peak) >= 0 and number(apply_peak) >= 0 and number(held) >= 0, output
