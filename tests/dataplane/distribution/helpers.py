"""Harness for the gateway's Redis side: an in-process gateway configured with `--redis-url` only
(no snapshot file), fed by the real control-plane Publisher through a private redis-server, and
waits on Redis itself (blocking reads, pub/sub) instead of sleeps."""
from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path

import redis
import redis.asyncio

from controlplane.model import (Binding, Cluster, ClusterSelector, Credential, Revocation, Role, Rule, State,
                                Subject, Token)
from controlplane.snapshots import Publisher
from dataplane.auditship import AUDIT_STREAM, EVENT_FIELD
from dataplane.config import GatewayConfig
from dataplane.heartbeat import GATEWAY_KEY_PREFIX
from dataplane.pki import CertificateAuthority
from dataplane.server import Worker
from dataplane.signing import generate_signing_key, write_public_key

from ..gateway.helpers import Env, Upstream, UpHandler, sha

WAIT = 20.0                 # bound on every wait: a failing test fails instead of hanging
GATEWAY_ID = "gw-test"
ISSUED_AT = "2026-11-23T08:00:00Z"
BOB_TOKEN = "bob-token"
ALL = Rule(verbs=("*",), api_groups=("*",), resources=("*",))


def fleet_state(revision: int, port: int, ca_pem: bytes, *, alice_bound: bool = True,
                revoked_users: tuple[str, ...] = ()) -> State:
    """Cluster alpha at `port`; alice (client certificate) and bob (token) may do anything there."""
    subjects = [Subject("user", "bob")] + ([Subject("user", "alice")] if alice_bound else [])
    return State(
        revision=revision, committed_at=ISSUED_AT,
        clusters=(Cluster(name="alpha", endpoint=f"https://127.0.0.1:{port}", ca_bundle=ca_pem.decode(),
                          credential=Credential(kind="token", ref="file:alpha.token")),),
        roles=(Role("all", (ALL,)),),
        bindings=(Binding("alpha-all", "all", tuple(subjects), ClusterSelector(names=("alpha",))),),
        tokens=(Token(id="t-bob", sha256=sha(BOB_TOKEN), user="bob"),),
        revocations=tuple(Revocation("user", user) for user in revoked_users))


@dataclass
class Fleet:
    """One gateway worker, its upstream `alpha`, and the control plane's side of Redis."""
    env: Env
    client: redis.Redis            # the control plane's connection
    publisher: Publisher
    revision: int = 0

    @property
    def worker(self) -> Worker:
        return self.env.worker

    async def readyz(self) -> int:
        host, port = self.worker.admin.sockets[0].getsockname()[:2]
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET /readyz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        status_line = await reader.readline()
        writer.close()
        await writer.wait_closed()
        return int(status_line.split()[1])

    def publish(self, **state_options) -> int:
        self.revision += 1
        up = self.env.upstreams["alpha"]
        assert self.publisher.publish(fleet_state(self.revision, up.port, self.env.cluster_ca.cert_pem,
                                                  **state_options))
        return self.revision

    def revoke_user(self, user: str) -> int:
        """What the control plane does first on a revocation: a signed delta, at once."""
        self.revision += 1
        self.publisher.publish_revocations(self.revision, ISSUED_AT, [Revocation("user", user)])
        return self.revision

    async def applied(self, revision: int) -> None:
        """Wait until the worker's holder runs `revision` (a snapshot or a delta overlay)."""
        seen = asyncio.Event()
        holder = self.worker.holder

        def check(_snapshot=None) -> None:
            current = holder.current
            if current is not None and current.revision >= revision:
                seen.set()

        holder.subscribe(check)
        check()
        async with asyncio.timeout(WAIT):
            await seen.wait()

    def heartbeat(self) -> dict | None:
        raw = self.client.get(GATEWAY_KEY_PREFIX + GATEWAY_ID)
        return json.loads(raw) if raw is not None else None

    async def close(self) -> None:
        await self.env.close()
        self.client.close()


async def start_fleet(tmp: Path, redis_url: str, handler: UpHandler, **config_overrides) -> Fleet:
    """A gateway whose only source of policy is Redis (nothing published yet)."""
    env = Env(tmp=tmp, client_ca=CertificateAuthority.create("clients"),
              server_ca=CertificateAuthority.create("gateway"), cluster_ca=CertificateAuthority.create("cluster"))
    up = Upstream(env.cluster_ca, handler)
    await up.start(tmp)
    env.upstreams["alpha"] = up
    secrets = tmp / "secrets"
    secrets.mkdir(exist_ok=True)
    (secrets / "alpha.token").write_text("gateway-token-alpha\n")
    key = generate_signing_key()
    write_public_key(key.public_key(), tmp / "snapshot.pub")
    env.server_ca.issue_server(["127.0.0.1"]).write(tmp / "gw.crt", tmp / "gw.key")
    (tmp / "client-ca.pem").write_bytes(env.client_ca.cert_pem)
    options = dict(listen="127.0.0.1:0", tls_cert=str(tmp / "gw.crt"), tls_key=str(tmp / "gw.key"),
                   client_ca=str(tmp / "client-ca.pem"), snapshot_public_key=str(tmp / "snapshot.pub"),
                   secrets_dir=str(secrets), audit_spool=str(tmp / "audit.jsonl"), admin_listen="127.0.0.1:0",
                   redis_url=redis_url, gateway_id=GATEWAY_ID)
    options.update(config_overrides)
    env.config = GatewayConfig(**options)
    env.config.validate()
    env.worker = Worker(env.config)
    await env.worker.start()
    client = redis.Redis.from_url(redis_url)
    return Fleet(env, client, Publisher(client, key))


async def next_applied_notice(pubsub: redis.asyncio.client.PubSub, revision: int) -> None:
    """Wait for the heartbeat's `<id> <revision>` notice on the applied channel."""
    wanted = f"{GATEWAY_ID} {revision}".encode()
    async with asyncio.timeout(WAIT):
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None and message["data"] == wanted:
                return


async def audit_ids_in_stream(redis_url: str, count: int) -> list[str]:
    """The ids of the first `count` events in the audit stream, waiting (blocking reads) for them;
    then a last look that nothing more (a duplicate) follows."""
    client = redis.asyncio.Redis.from_url(redis_url)
    ids: list[str] = []
    last = "0-0"
    try:
        deadline = time.monotonic() + WAIT
        while len(ids) < count:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"only {len(ids)} of {count} audit events arrived"
            reply = await client.xread({AUDIT_STREAM: last}, block=int(remaining * 1000))
            for _, entries in reply:
                for entry_id, fields in entries:
                    last = entry_id
                    ids.append(json.loads(fields[EVENT_FIELD.encode()])["id"])
        extra = await client.xrange(AUDIT_STREAM, min=f"({last.decode() if isinstance(last, bytes) else last}")
        ids += [json.loads(fields[EVENT_FIELD.encode()])["id"] for _, fields in extra]
    finally:
        await client.aclose()
    return ids

