"""A control plane for tests: its configuration, API tokens and call metadata; pub/sub helpers; and
a fake gateway that reports applied revisions through the real heartbeat module."""
from __future__ import annotations

import secrets
import threading
from pathlib import Path

import redis

from controlplane.config import ControlPlaneConfig
from controlplane.snapshots import SNAPSHOT_CHANNEL, SNAPSHOT_REVISION_KEY
from dataplane.heartbeat import Heartbeat
from dataplane.pki import CertificateAuthority
from dataplane.signing import write_private_key

ADMIN_TOKEN = "admin-" + secrets.token_hex(16)
READER_TOKEN = "reader-" + secrets.token_hex(16)
ADMIN = [("authorization", f"Bearer {ADMIN_TOKEN}")]
READER = [("authorization", f"Bearer {READER_TOKEN}")]
GATEWAY_URL = "https://gateway.test:8443"


def plane_config(root: Path, redis_url: str, signing_key) -> ControlPlaneConfig:
    (root / "admin.token").write_text(ADMIN_TOKEN)
    (root / "reader.token").write_text(READER_TOKEN)
    write_private_key(signing_key, root / "signing.pem")
    (root / "gateway-ca.crt").write_bytes(CertificateAuthority.create("test gateway CA").cert_pem)
    config = ControlPlaneConfig(
        listen="127.0.0.1:0", store=f"sqlite:///{root / 'cp.db'}", redis_url=redis_url,
        signing_key=str(root / "signing.pem"), admin_token_file=str(root / "admin.token"),
        read_only_token_file=str(root / "reader.token"), state_dir=str(root / "state"),
        gateway_url=GATEWAY_URL, gateway_ca=str(root / "gateway-ca.crt"), replica_id="test-replica", grace=1)
    config.validate()
    return config


def subscribe(client, channel: str):
    """A pub/sub connection whose subscription the server has confirmed (no race with publish)."""
    pubsub = client.pubsub()
    pubsub.subscribe(channel)
    confirmation = pubsub.get_message(timeout=5)
    assert confirmation and confirmation["type"] == "subscribe"
    return pubsub


def next_message(pubsub, timeout: float = 5) -> bytes:
    message = pubsub.get_message(timeout=timeout)
    assert message and message["type"] == "message", message
    return message["data"]


class FakeGateway:
    """Loads the published revision at start, then applies every snapshot notice at once and
    reports it, as a gateway does."""

    def __init__(self, redis_url: str, gateway_id: str):
        self._client = redis.Redis.from_url(redis_url)
        self.heartbeat = Heartbeat(self._client, gateway_id, version="test")
        self._notices = subscribe(self._client, SNAPSHOT_CHANNEL)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "FakeGateway":
        published = self._client.get(SNAPSHOT_REVISION_KEY)   # after subscribing: no revision falls between
        if published is not None:
            self.heartbeat.applied(int(published))
        self.heartbeat.beat()   # live before the test goes on
        self.heartbeat.start()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.heartbeat.stop()
        self._notices.close()
        self._client.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self._notices.get_message(timeout=0.05)
            if message is not None and message["type"] == "message":
                self.heartbeat.applied(int(message["data"]))
