"""Fixtures: certificates, a FakeKube on a loopback thread, and a real-kubectl runner."""
from __future__ import annotations

import os
import queue
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from dataplane.pki import CertificateAuthority
from tests.fakekube.server import FakeKube
from tests.fakekube.threaded import running

TOKEN = "gateway-secret-token"
RBAC = {"users": {"alice": "admin", "bob": "view"}, "groups": {"devs": "admin", "viewers": "view"}}


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    ca: CertificateAuthority


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority.create("fakekube test CA")
    (root / "ca.crt").write_bytes(ca.cert_pem)
    ca.issue_server(["127.0.0.1", "localhost"]).write(root / "server.crt", root / "server.key")
    return Pki(root / "ca.crt", root / "server.crt", root / "server.key", ca)


@pytest.fixture
def fake(pki: Pki) -> Iterator[FakeKube]:
    with running(cert=pki.server_cert, key=pki.server_key, gateway_token=TOKEN, rbac=RBAC,
                 client_ca=pki.ca_cert) as server:
        yield server


class Stream:
    """A running kubectl whose stdout lines are read with timeouts (never a bare blocking read)."""

    def __init__(self, proc: subprocess.Popen[str]):
        self.proc = proc
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def line(self, timeout: float = 15) -> str:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no output from kubectl within {timeout}s") from None
        if line is None:
            raise AssertionError(f"kubectl ended (rc={self.proc.wait()}): {self.stderr()}")
        return line

    def until(self, predicate, timeout: float = 15) -> str:
        while True:
            line = self.line(timeout)
            if predicate(line):
                return line

    def wait(self, timeout: float = 15) -> int:
        return self.proc.wait(timeout=timeout)

    def stderr(self) -> str:
        return self.proc.stderr.read() if self.proc.stderr and self.proc.poll() is not None else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe:
                pipe.close()


class Kubectl:
    def __init__(self, kubeconfig: Path, cache_dir: Path):
        self.kubeconfig = kubeconfig
        self.cache_dir = cache_dir
        self._streams: list[Stream] = []

    def _argv(self, args: tuple[str, ...], as_user: str | None, as_groups: tuple[str, ...]) -> list[str]:
        argv = ["kubectl", f"--kubeconfig={self.kubeconfig}", f"--cache-dir={self.cache_dir}"]
        if as_user:
            argv.append(f"--as={as_user}")
        argv += [f"--as-group={g}" for g in as_groups]
        return argv + list(args)

    def run(self, *args: str, as_user: str | None = "alice", as_groups: tuple[str, ...] = (),
            stdin: str | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self._argv(args, as_user, as_groups), input=stdin, capture_output=True,
                              text=True, timeout=timeout, env=_env())

    def ok(self, *args: str, **kwargs) -> str:
        result = self.run(*args, **kwargs)
        assert result.returncode == 0, f"kubectl {' '.join(args)} failed: {result.stderr}"
        return result.stdout

    def stream(self, *args: str, as_user: str | None = "alice") -> Stream:
        proc = subprocess.Popen(self._argv(args, as_user, ()), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=_env())
        stream = Stream(proc)
        self._streams.append(stream)
        return stream

    def close(self) -> None:
        for stream in self._streams:
            stream.stop()


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
    env["HOME"] = env.get("HOME", "/tmp")
    return env


@pytest.fixture
def kubectl(fake: FakeKube, pki: Pki, tmp_path: Path) -> Iterator[Kubectl]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not on PATH")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(f"""apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster:
    server: {fake.url}
    certificate-authority: {pki.ca_cert}
users:
- name: gateway
  user:
    token: {TOKEN}
contexts:
- name: fake
  context: {{cluster: fake, user: gateway, namespace: default}}
current-context: fake
""")
    client = Kubectl(kubeconfig, tmp_path / "cache")
    try:
        yield client
    finally:
        client.close()
