"""py-spy on the gateway under load: collapsed stacks on disk, the top frames on stdout."""
from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

PY_SPY = Path(sys.executable).with_name("py-spy")


def ensure_py_spy() -> None:
    """py-spy goes into the project's virtualenv (never into a shared environment)."""
    if not PY_SPY.exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "py-spy"], check=True)


def start_recording(pid: int, seconds: int, output: Path) -> subprocess.Popen:
    """Samples `pid` for `seconds` into `output`, by function (time in C and Cython code counts
    toward the Python function that called it)."""
    return subprocess.Popen([str(PY_SPY), "record", "--pid", str(pid), "--duration", str(seconds),
                             "--rate", "250", "--function", "--format", "raw", "--output", str(output)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


# Frames of the event-loop thread pass through uvloop.run; py-spy counts executor threads blocked in
# a queue wait as active, so the other threads would only add idle time.
EVENT_LOOP_MARK = "(uvloop/__init__.py:"


def top_frames(collapsed: Path, count: int = 20) -> str:
    """The event-loop thread's frames with the most samples on top of the stack (self) and
    anywhere on it (total)."""
    own, anywhere, total = Counter(), Counter(), 0
    for line in collapsed.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if EVENT_LOOP_MARK not in stack:
            continue
        frames, n = stack.split(";"), int(samples)
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            anywhere[frame] += n
    if not total:
        return "no samples of the event-loop thread"

    def listing(counter: Counter) -> list[str]:
        below_root = [(frame, n) for frame, n in counter.most_common() if n < total]  # not main(), run()…
        return [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in below_root[:count]]

    return "\n".join([f"{total} samples of the event-loop thread; self:", *listing(own),
                      "total (inclusive):", *listing(anywhere)])
