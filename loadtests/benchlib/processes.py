"""Processes pinned to a core, readiness checks, and the CPU time a process tree has used."""
from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
READY_TIMEOUT = 30.0


def pinned(core: int, argv: list[str]) -> list[str]:
    return ["taskset", "-c", str(core), *argv]


class Pinned:
    """A long-running process on one core, in its own session so that stopping it stops its
    children (nginx workers, gateway workers) and a terminal's Ctrl-C reaches only the harness."""

    def __init__(self, name: str, core: int, argv: list[str], log: Path, cwd: Path | None = None,
                 env: dict | None = None):
        self.name, self.log = name, log
        with open(log, "ab") as out:
            self.process = subprocess.Popen(pinned(core, argv), stdout=out, stderr=subprocess.STDOUT,
                                            cwd=cwd, env=env, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, grace: float = 10.0) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.pid, signal.SIGKILL)  # whatever of its session is left
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait()


def wait_until(predicate, target: Pinned, timeout: float = READY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if not target.alive():
            raise RuntimeError(f"{target.name} exited with status {target.process.returncode} "
                               f"before it was ready:\n{target.log_tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{target.name} was not ready within {timeout:.0f} s:\n{target.log_tail()}")
        time.sleep(0.05)


def tls_accepts(port: int, alpn: list[str] | None = None) -> str | None | bool:
    """The ALPN protocol a TLS handshake with 127.0.0.1:`port` selects (None when none), or
    False when the handshake fails."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    if alpn:
        context.set_alpn_protocols(alpn)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as raw:
            with context.wrap_socket(raw) as tls:
                return tls.selected_alpn_protocol()
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def process_tree(pid: int) -> list[int]:
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending += _children(current)
    return tree


def wait_until_idle(pids: list[int], timeout: float = 10.0, window: float = 0.2, busy: float = 0.1) -> None:
    """Waits (at most `timeout`) until the process trees of `pids` together use less than `busy`
    of a core over `window` seconds: a target still working off the last run skews the next."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = sum(cpu_seconds(pid) for pid in pids)
        time.sleep(window)
        if sum(cpu_seconds(pid) for pid in pids) - before < busy * window:
            return


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` and its live descendants (all threads), in seconds."""
    ticks = 0
    for member in process_tree(pid):
        try:
            stat = Path(f"/proc/{member}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "; comm may hold spaces
        ticks += int(fields[11]) + int(fields[12])   # utime, stime: fields 14 and 15 of stat(5)
    return ticks / CLOCK_TICKS
