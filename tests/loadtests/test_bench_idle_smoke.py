"""`loadtests/bench_idle.py` with a handful of each kind: the harness opens idle keep-alive
connections and watches (HTTP/2 and HTTP/1.1) through a real gateway worker, sees every one still
open at the end and prints the RSS table. The figures themselves are not asserted."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
COUNT = 20


@pytest.mark.timeout(120)
def test_every_phase_holds_what_it_opened_and_reports_rss():
    done = subprocess.run([sys.executable, "-m", "loadtests.bench_idle", "--count", str(COUNT)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    rows = {}
    for line in done.stdout.splitlines():
        match = re.match(r"\| (keep-alive HTTP/1\.1|watch HTTP/2|watch HTTP/1\.1) \| (\d+) \| ([\d.,]+) MiB \| "
                         r"([\d.,]+) MiB \| (-?[\d.,]+) KiB \| (\d+) \|", line)
        if match:
            rows[match[1]] = match.groups()[1:]
    assert set(rows) == {"keep-alive HTTP/1.1", "watch HTTP/2", "watch HTTP/1.1"}, done.stdout
    for phase, (opened, before, after, _, still_open) in rows.items():
        assert int(opened) == int(still_open) == COUNT, f"{phase}: {done.stdout}"
        assert float(before.replace(",", "")) > 10, f"{phase}: an RSS was read: {done.stdout}"
    assert "10,000 idle watches" in done.stdout
