"""wrk (HTTP/1.1) and h2load (HTTP/2): the command lines and what their output says."""
from __future__ import annotations

import re
import statistics
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .processes import pinned

_UNIT_US = {"us": 1.0, "ms": 1_000.0, "s": 1_000_000.0, "m": 60_000_000.0}


@dataclass(frozen=True)
class LoadResult:
    requests: int      # completed with a 2xx
    errors: int        # non-2xx responses and socket errors
    seconds: float
    p50_us: float
    p99_us: float

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def _duration_us(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(number) * _UNIT_US[unit]


def parse_wrk(output: str) -> LoadResult:
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m),", output)
    if total is None:
        raise ValueError(f"wrk printed no request count:\n{output}")
    requests, seconds = int(total[1]), _duration_us(total[2] + total[3]) / 1e6
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    failed = int(non_2xx[1]) if non_2xx else 0
    errors = failed + (sum(int(n) for n in socket_errors.groups()) if socket_errors else 0)
    percentile = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", output, re.MULTILINE))
    return LoadResult(requests=requests - failed, errors=errors, seconds=seconds,
                      p50_us=_duration_us(percentile["50"]) if "50" in percentile else float("nan"),
                      p99_us=_duration_us(percentile["99"]) if "99" in percentile else float("nan"))


def parse_h2load(output: str, log: str) -> LoadResult:
    """h2load's summary for counts; its per-request log (start, status, µs) for percentiles."""
    finished = re.search(r"finished in ([\d.]+)(us|ms|s|m),", output)
    failed = re.search(r"requests: .* (\d+) failed,", output)   # non-2xx and requests without a response
    status = re.search(r"status codes: (\d+) 2xx", output)
    if not (finished and failed and status):
        raise ValueError(f"h2load printed no summary:\n{output}")
    durations = sorted(int(line.split("\t")[2]) for line in log.splitlines() if line.count("\t") == 2)
    cuts = statistics.quantiles(durations, n=100) if len(durations) >= 2 else [float("nan")] * 99
    return LoadResult(requests=int(status[1]), errors=int(failed[1]),
                      seconds=_duration_us(finished[1] + finished[2]) / 1e6, p50_us=cuts[49], p99_us=cuts[98])


def _run(argv: list[str], core: int, seconds: float) -> str:
    done = subprocess.run(pinned(core, argv), capture_output=True, text=True, timeout=seconds + 30)
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def wrk(url: str, headers: list[str], connections: int, seconds: float, core: int) -> LoadResult:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s"]
    for header in headers:
        argv += ["-H", header]
    return parse_wrk(_run([*argv, url], core, seconds))


def h2load(url: str, headers: list[str], connections: int, streams: int, seconds: float, core: int) -> LoadResult:
    with tempfile.NamedTemporaryFile("r", suffix=".h2load.log") as log:
        argv = ["h2load", f"-c{connections}", f"-m{streams}", "-D", str(seconds), "--log-file", log.name]
        for header in headers:
            argv += ["-H", header]
        output = _run([*argv, url], core, seconds)
        return parse_h2load(output, Path(log.name).read_text())
