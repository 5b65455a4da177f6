"""The locust traffic mixes run headless against the quick-start stack (`accesspoint up`) for a few
seconds: every scenario completes requests and none fails (expected answers such as the 403 of a
denied write or the 401 after a revocation are checked by the scenarios themselves)."""
from __future__ import annotations

import csv
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dataplane.up import free_port
from tests.e2e.kubectl import Streaming

REPO_ROOT = Path(__file__).resolve().parents[2]
# One request name per scenario that proves the scenario went all the way through.
PROOF = ("read: list pods", "read: delete pod (denied)", "watch: held to its end", "cd-sync: server-side apply",
         "exec: echo", "policy: WaitForRevision", "policy: GET with the revoked token")


@pytest.fixture
def quickstart(tmp_path):
    """`accesspoint up` on free ports; yields its state directory; Ctrl-C stops it."""
    state_dir = tmp_path / "state"
    up = Streaming(subprocess.Popen(
        [sys.executable, "-m", "dataplane.cli", "up", "--state-dir", str(state_dir),
         "--port", str(free_port()), "--admin-port", str(free_port()), "--api-port", str(free_port())],
        cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    try:
        up.expect("AccessPoint is up", timeout=60)
        yield state_dir
    finally:
        up.process.send_signal(signal.SIGTERM)   # like Ctrl-C; SIGINT is ignored under a background shell
        try:
            up.wait_exit(timeout=60)
        finally:
            up.stop()


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.timeout(150)
def test_every_scenario_runs_without_unexpected_errors(quickstart, tmp_path):
    prefix = tmp_path / "run"
    # 10 weighted users spread 4:2:2:2, plus the one policy operator: every scenario has a user.
    done = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(REPO_ROOT / "loadtests" / "locustfile.py"),
         "--state-dir", str(quickstart), "--headless", "--users", "11", "--spawn-rate", "11", "--run-time", "8s",
         "--stop-timeout", "15", "--watch-seconds", "2", "--burst", "2", "--only-summary", "--csv", str(prefix)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=90)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]

    stats = {row["Name"]: row for row in read_rows(Path(f"{prefix}_stats.csv")) if row["Name"] != "Aggregated"}
    failed = {name: row["Failure Count"] for name, row in stats.items() if row["Failure Count"] != "0"}
    assert not failed, f"{failed}\n{output[-4000:]}"
    missing = [name for name in PROOF if int(stats.get(name, {}).get("Request Count", 0)) == 0]
    assert not missing, f"never completed: {missing}\n{output[-4000:]}"
    assert read_rows(Path(f"{prefix}_exceptions.csv")) == [], output[-4000:]
    assert "| exec     |" in done.stdout   # the per-scenario report
