"""Runs the real `kubectl` binary with a deadline on every call, so no test can hang on it."""
from __future__ import annotations

import os
import queue
import re
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

TIMEOUT = 30.0


@dataclass
class Kubectl:
    kubeconfig: Path
    cache_dir: Path
    env: dict[str, str] | None = None

    def _argv(self, args: tuple[str, ...]) -> list[str]:
        return ["kubectl", "--kubeconfig", str(self.kubeconfig), "--cache-dir", str(self.cache_dir), *args]

    def _env(self, extra: dict[str, str] | None) -> dict[str, str]:
        return {**os.environ, "HOME": str(self.cache_dir), **(self.env or {}), **(extra or {})}

    def run(self, *args: str, input: bytes | None = None, env: dict[str, str] | None = None,
            timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
        return subprocess.run(self._argv(args), input=input, env=self._env(env), capture_output=True,
                              timeout=timeout)

    def ok(self, *args: str, **kw) -> str:
        """Runs kubectl and returns stdout; fails the test with kubectl's stderr otherwise."""
        done = self.run(*args, **kw)
        assert done.returncode == 0, f"kubectl {' '.join(args)} failed ({done.returncode}): {done.stderr.decode()}"
        return done.stdout.decode()

    def fails(self, *args: str, **kw) -> str:
        """Runs kubectl expecting failure; returns stderr."""
        done = self.run(*args, **kw)
        assert done.returncode != 0, f"kubectl {' '.join(args)} unexpectedly succeeded: {done.stdout.decode()}"
        return done.stderr.decode()

    def start(self, *args: str, env: dict[str, str] | None = None) -> "Streaming":
        return Streaming(subprocess.Popen(self._argv(args), env=self._env(env), stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE))


class Streaming:
    """A long-running kubectl (get -w, logs -f, port-forward) whose output lines are awaited."""

    def __init__(self, process: subprocess.Popen):
        self.process = process
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for raw in self.process.stdout:
            self.lines.put(raw.decode(errors="replace").rstrip("\n"))
        self.lines.put(None)

    def expect(self, pattern: str, timeout: float = TIMEOUT) -> re.Match:
        """Waits for an output line matching `pattern` (a regex)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line matching {pattern!r} within {timeout} s; saw {self.seen}")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                stderr = self.process.stderr.read().decode(errors="replace")
                raise AssertionError(f"kubectl ended before {pattern!r}; saw {self.seen}; stderr: {stderr}")
            self.seen.append(line)
            match = re.search(pattern, line)
            if match:
                return match

    def echo(self, line: str) -> None:
        """Types `line` into a running `kubectl exec -i … cat` and waits for it to come back."""
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()
        self.expect(re.escape(line))

    def wait_exit(self, timeout: float = TIMEOUT) -> int:
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream:
                stream.close()
