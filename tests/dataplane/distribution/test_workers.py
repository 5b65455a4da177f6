"""`accesspoint gateway --workers 2 --redis-url …` as real processes: each worker follows Redis
and sends its own heartbeat; the spool shared by the workers has exactly one audit shipper."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import redis

from controlplane.snapshots import Publisher
from dataplane.auditship import AUDIT_STREAM, EVENT_FIELD
from dataplane.audit import read_events
from dataplane.heartbeat import APPLIED_CHANNEL, GATEWAY_KEY_PREFIX
from dataplane.pki import CertificateAuthority
from dataplane.signing import generate_signing_key, write_public_key
from dataplane.up import free_port

from ..gateway.test_process import ROOT, _get, _wait_for_lines
from .helpers import WAIT, fleet_state


def _notices(pubsub, wanted: set[bytes]) -> None:
    deadline = time.monotonic() + WAIT
    while wanted:
        assert time.monotonic() < deadline, f"no applied notice from {wanted}"
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
        if message is not None:
            wanted.discard(message["data"])


def test_two_workers_report_apart_and_share_one_audit_shipper(tmp_path, redis_server):
    server_ca, client_ca = CertificateAuthority.create("gw"), CertificateAuthority.create("clients")
    server_ca.issue_server(["127.0.0.1"]).write(tmp_path / "gw.crt", tmp_path / "gw.key")
    client_ca.issue_client("alice", ["devs"]).write(tmp_path / "alice.crt", tmp_path / "alice.key")
    (tmp_path / "client-ca.pem").write_bytes(client_ca.cert_pem)
    key = generate_signing_key()
    write_public_key(key.public_key(), tmp_path / "snap.pub")
    (tmp_path / "secrets").mkdir()
    client = redis.Redis.from_url(redis_server.url)
    Publisher(client, key).publish(fleet_state(1, free_port(), CertificateAuthority.create("cluster").cert_pem))
    pubsub = client.pubsub()
    pubsub.subscribe(APPLIED_CHANNEL)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from dataplane.cli import main; sys.exit(main())", "gateway",
         "--listen", f"127.0.0.1:{port}", "--admin-listen", "",
         "--tls-cert", str(tmp_path / "gw.crt"), "--tls-key", str(tmp_path / "gw.key"),
         "--client-ca", str(tmp_path / "client-ca.pem"), "--snapshot-public-key", str(tmp_path / "snap.pub"),
         "--secrets-dir", str(tmp_path / "secrets"), "--audit-spool", str(tmp_path / "audit.jsonl"),
         "--workers", "2", "--gateway-id", "gw"],
        cwd=ROOT, env=dict(os.environ, ACCESSPOINT_REDIS_URL=redis_server.url), stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_lines(proc, "serving on", 2)
        _notices(pubsub, {b"gw-0 1", b"gw-1 1"})         # one heartbeat per worker, each at revision 1
        for name in ("gw-0", "gw-1"):
            assert json.loads(client.get(GATEWAY_KEY_PREFIX + name))["revision"] == 1

        for _ in range(6):   # an unknown cluster: 404, audited all the same
            answer = _get(port, server_ca.cert_pem, tmp_path / "alice.crt", tmp_path / "alice.key",
                          "/clusters/nowhere/version")
            assert answer.startswith(b"HTTP/1.1 404")
        shipped: list[str] = []
        last = "0-0"
        deadline = time.monotonic() + WAIT
        while len(shipped) < 6:
            assert time.monotonic() < deadline, f"{len(shipped)} of 6 audit events shipped"
            for _, entries in client.xread({AUDIT_STREAM: last}, block=1000) or []:
                for entry_id, fields in entries:
                    last = entry_id
                    shipped.append(json.loads(fields[EVENT_FIELD.encode()])["id"])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        spooled = [event["id"] for event in read_events(tmp_path / "audit.jsonl")]
        assert sorted(shipped) == sorted(spooled) and client.xlen(AUDIT_STREAM) == 6   # each once
        assert not client.exists(GATEWAY_KEY_PREFIX + "gw-0", GATEWAY_KEY_PREFIX + "gw-1")   # left at once
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
        pubsub.close()
        client.close()
