"""`loadtests/bench_tunnel.py` at its smallest: both paths answer the upstream's pod through one
gateway worker with no errors, the table and the idle-tunnel figure are printed, and every idle
agent's tunnel connected. The figures themselves are not asserted."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
IDLE = 20


@pytest.mark.timeout(120)
def test_tunnel_and_direct_are_measured_in_one_run():
    done = subprocess.run([sys.executable, "-m", "loadtests.bench_tunnel", "--seconds", "1", "--idle-agents", str(IDLE)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    rows = dict(re.findall(r"^\| (direct|tunnel) \| [\d.]+ ms \| [\d.]+ ms \| ([\d,]+) \| 0 \|$", done.stdout, re.M))
    assert set(rows) == {"direct", "tunnel"}, done.stdout
    assert all(int(rate.replace(",", "")) > 0 for rate in rows.values()), done.stdout
    assert re.search(rf"Idle tunnels on one gateway worker: {IDLE} of {IDLE} connected; .* KiB per idle tunnel",
                     done.stdout), done.stdout
