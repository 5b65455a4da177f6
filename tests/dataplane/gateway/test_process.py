"""`accesspoint gateway --workers 2` as real processes: SO_REUSEPORT workers, per-worker admin
ports, a crashed worker restarted, SIGTERM drains and exits 0."""
from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path

from dataplane.pki import CertificateAuthority
from dataplane.up import free_port
from dataplane.signing import generate_signing_key, write_public_key
from dataplane.snapshot import sign_snapshot

from .helpers import snapshot_dict

ROOT = Path(__file__).resolve().parents[3]


def _wait_for_lines(proc: subprocess.Popen, needle: str, count: int) -> list[str]:
    seen: list[str] = []
    lines: list[str] = []
    for line in proc.stderr:
        lines.append(line)
        if needle in line:
            seen.append(line)
            if len(seen) == count:
                return seen
    raise AssertionError("gateway exited early:\n" + "".join(lines))


def _get(port: int, ca_pem: bytes, cert: Path, key: Path, path: str) -> bytes:
    ctx = ssl.create_default_context(cadata=ca_pem.decode())
    ctx.load_cert_chain(cert, key)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(f"GET {path} HTTP/1.1\r\nHost: g\r\nConnection: close\r\n\r\n".encode())
            out = bytearray()
            while chunk := tls.recv(65536):
                out += chunk
            return bytes(out)


def _admin(port: int, path: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".encode())
        out = bytearray()
        while chunk := s.recv(65536):
            out += chunk
        return bytes(out)


def test_workers_share_the_port_and_drain_on_sigterm(tmp_path):
    server_ca = CertificateAuthority.create("gw")
    client_ca = CertificateAuthority.create("clients")
    server_ca.issue_server(["127.0.0.1"]).write(tmp_path / "gw.crt", tmp_path / "gw.key")
    client_ca.issue_client("alice", ["devs"]).write(tmp_path / "alice.crt", tmp_path / "alice.key")
    (tmp_path / "client-ca.pem").write_bytes(client_ca.cert_pem)
    key = generate_signing_key()
    write_public_key(key.public_key(), tmp_path / "snap.pub")
    dead_port = free_port()
    (tmp_path / "snap.json").write_bytes(sign_snapshot(
        snapshot_dict({"alpha": (dead_port, CertificateAuthority.create("cluster").cert_pem)}), key))
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "alpha.token").write_text("t")
    port, admin = free_port(), free_port()
    env = dict(os.environ, ACCESSPOINT_LISTEN=f"127.0.0.1:{port}", ACCESSPOINT_ADMIN_LISTEN=f"127.0.0.1:{admin}")
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from dataplane.cli import main; sys.exit(main())", "gateway",
         "--tls-cert", str(tmp_path / "gw.crt"), "--tls-key", str(tmp_path / "gw.key"),
         "--client-ca", str(tmp_path / "client-ca.pem"), "--snapshot", str(tmp_path / "snap.json"),
         "--snapshot-public-key", str(tmp_path / "snap.pub"), "--secrets-dir", str(secrets),
         "--audit-spool", str(tmp_path / "audit.jsonl"), "--workers", "2"],
        cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_lines(proc, "serving on", 2)
        # both admin endpoints answer (admin port + worker index)
        assert b"200" in _admin(admin, "/healthz").split(b"\r\n")[0]
        assert b"200" in _admin(admin + 1, "/healthz").split(b"\r\n")[0]
        # a request through the shared port: alpha is down, so a Status 503
        answer = _get(port, server_ca.cert_pem, tmp_path / "alice.crt", tmp_path / "alice.key",
                      "/clusters/alpha/version")
        assert answer.startswith(b"HTTP/1.1 503") and b'is unreachable: connection refused' in answer
        # a worker that dies is restarted
        children = [int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
        assert len(children) == 2
        os.kill(children[0], signal.SIGKILL)
        _wait_for_lines(proc, "serving on", 1)
        children = [int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
        assert len(children) == 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
