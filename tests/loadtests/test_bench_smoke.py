"""`loadtests/bench --smoke` runs the whole harness for ~1 s per scenario and prints its table.

Only that the harness works is asserted (every target answered, the gateway included), never
how fast anything is. The harness installs nginx, wrk and h2load itself when they are missing.
"""
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def table_rows(output: str) -> dict[tuple[str, str], list[str]]:
    rows = {}
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 10 and cells[0] != "scenario":
            rows[cells[0], cells[1]] = cells[2:]
    return rows


def requests_per_second(cell: str) -> float:
    return float(cell.replace(",", ""))


@pytest.mark.timeout(180)
def test_smoke_run_prints_the_table_with_the_gateway():
    done = subprocess.run([str(REPO_ROOT / "loadtests" / "bench"), "--smoke"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=170)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = table_rows(done.stdout)
    assert ("small GET, 64 conns", "gateway") in rows, done.stdout
    for (scenario, target), cells in rows.items():
        if cells[0].startswith("n/a"):
            continue      # HTTP/2 until the gateway offers h2
        assert requests_per_second(cells[0]) > 0, f"{scenario} / {target}: {cells[0]}\n{done.stdout}"
