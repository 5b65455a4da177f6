"""`loadtests/bench_policy.py --quick` runs and prints its table; how fast is never asserted."""
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_quick_run_prints_a_row_per_size_with_both_backends():
    done = subprocess.run([sys.executable, "loadtests/bench_policy.py", "--quick"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line.strip("|").split("|") for line in done.stdout.splitlines() if line.startswith("| 1")]
    assert [row[0].strip() for row in rows] == ["1,000", "10,000"], done.stdout
    for row in rows:
        cells = [cell.strip() for cell in row]
        assert len(cells) == 9 and all(cells[1:]), done.stdout
        assert float(cells[3]) > 0 and float(cells[4]) > 0 and cells[5].endswith("x"), done.stdout
