"""The gateway's Redis side end to end: a gateway configured with `--redis-url` only learns its
policy from the real control-plane Publisher, reports heartbeats, ends revoked identities' live
streams, and ships its audit spool exactly once across a Redis outage."""
from __future__ import annotations

import asyncio

import redis.asyncio

from dataplane.audit import read_events
from dataplane.heartbeat import APPLIED_CHANNEL
from dataplane.server import Worker

from ..gateway.helpers import build_request, echo_handler, read_chunked, read_head, run
from .helpers import BOB_TOKEN, WAIT, Fleet, audit_ids_in_stream, next_applied_notice, start_fleet

PODS = "/clusters/alpha/api/v1/namespaces/default/pods"
EXEC = "/clusters/alpha/api/v1/namespaces/default/pods/p1/exec?command=sh&stdin=true&stdout=true"
UPGRADE = [("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1"), ("Content-Length", "0"),
           ("X-Stream-Protocol-Version", "v5.channel.k8s.io")]
BOB = [("Authorization", f"Bearer {BOB_TOKEN}")]


class Alpha:
    """Upstream `alpha`: watches stream until the gateway lets go, exec echoes until it does;
    `ended` receives (kind, user) as the gateway's side of each closes."""

    def __init__(self) -> None:
        self.ended: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

    async def __call__(self, req, reader, writer) -> bool:
        user = req.header("impersonate-user") or ""
        try:
            if req.header("upgrade"):
                writer.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n"
                             b"ready|")
                await writer.drain()
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
                return False
            if "watch=1" in req.target:
                event = b'{"type":"ADDED"}\n'
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n"
                             b"\r\n%x\r\n%s\r\n" % (len(event), event))
                await writer.drain()
                await reader.read(1)      # nothing more comes: EOF (or a reset) when the gateway lets go
                return False
            return await echo_handler(req, reader, writer)
        finally:
            if req.header("upgrade") or "watch=1" in req.target:
                self.ended.put_nowait(("exec" if req.header("upgrade") else "watch", user))


async def read_one_chunk(reader) -> bytes:
    size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
    data = await reader.readexactly(size)
    assert await reader.readexactly(2) == b"\r\n"
    return data


async def open_watch(fleet: Fleet, user: str | None, headers=()):
    client = await fleet.env.connect(user=user)
    client.send(build_request("GET", PODS + "?watch=1", list(headers)))
    line, _ = await read_head(client.reader)
    assert " 200 " in line
    assert b"ADDED" in await read_one_chunk(client.reader)
    return client


async def get(fleet: Fleet, user: str | None = "alice", headers=()) -> int:
    client = await fleet.env.connect(user=user)
    return (await client.request("GET", PODS, list(headers))).status


def test_gateway_with_only_redis_becomes_ready_routes_and_reports_heartbeats(tmp_path, redis_server):
    async def body():
        fleet = await start_fleet(tmp_path, redis_server.url, echo_handler)
        notices = redis.asyncio.Redis.from_url(redis_server.url).pubsub()
        try:
            await notices.subscribe(APPLIED_CHANNEL)
            assert fleet.worker.holder.current is None
            assert await fleet.readyz() == 503
            assert await get(fleet) == 503                     # fail closed without a snapshot

            revision = fleet.publish()
            await fleet.applied(revision)
            assert await fleet.readyz() == 200
            client = await fleet.env.connect()
            resp = await client.request("GET", PODS)
            assert resp.status == 200 and ["impersonate-user", "alice"] in resp.json()["headers"]

            await next_applied_notice(notices, revision)        # written in the same MULTI as the key
            beat = fleet.heartbeat()
            assert beat["revision"] == revision and beat["applied_at"] and beat["id"] == "gw-test"
            assert (tmp_path / "snapshot.cache.json").is_file()   # the disk copy, beside the spool
        finally:
            await notices.aclose()
            await fleet.env.close()
        assert fleet.heartbeat() is None                       # a stopped worker leaves the fleet at once
        fleet.client.close()

    run(body, timeout=40)


def test_revocation_ends_the_identitys_watch_and_exec_and_refuses_its_next_request(tmp_path, redis_server):
    async def body():
        alpha = Alpha()
        fleet = await start_fleet(tmp_path, redis_server.url, alpha)
        try:
            await fleet.applied(fleet.publish())
            bob_watch = await open_watch(fleet, None, BOB)
            bob_exec = await fleet.env.connect(user=None)
            bob_exec.send(build_request("POST", EXEC, UPGRADE + BOB))
            assert "101" in (await read_head(bob_exec.reader))[0]
            assert await bob_exec.reader.readuntil(b"ready|")
            alice_watch = await open_watch(fleet, "alice")
            assert len(fleet.worker.gateway.live) == 3

            fleet.revoke_user("bob")                 # the signed delta, before any full snapshot
            async with asyncio.timeout(WAIT):
                assert await read_chunked(bob_watch.reader) == b""   # the body ends with its last chunk
                assert await bob_watch.closed()
                assert await bob_exec.closed()
                assert {await alpha.ended.get(), await alpha.ended.get()} == {("watch", "bob"), ("exec", "bob")}
            assert len(fleet.worker.gateway.live) == 1                # alice's watch runs on
            assert await get(fleet, None, BOB) == 401

            # a new snapshot that no longer binds alice: her decision is taken again, and refused
            await fleet.applied(fleet.publish(alice_bound=False, revoked_users=("bob",)))
            async with asyncio.timeout(WAIT):
                assert await read_chunked(alice_watch.reader) == b""
                assert await alice_watch.closed()
                assert await alpha.ended.get() == ("watch", "alice")
            assert len(fleet.worker.gateway.live) == 0

            ended = {(e["user"], e["verb"]): e for e in fleet.env.audit_events()
                     if e.get("session_ended_by") == "revoked"}
            assert set(ended) == {("bob", "watch"), ("bob", "create"), ("alice", "watch")}
            assert ended["bob", "watch"]["revocation"] == "authentication refused: revoked"
            assert ended["bob", "create"]["subresource"] == "exec" and ended["bob", "create"]["session_end"]
            assert ended["alice", "watch"]["revocation"].startswith("no longer allowed")
            revoked = fleet.worker.metrics.streams_revoked_total
            assert revoked.labels(kind="watch").value == 2 and revoked.labels(kind="exec").value == 1
        finally:
            await fleet.close()

    run(body, timeout=40)


def test_audit_ships_exactly_once_across_an_outage_and_a_restart_from_the_disk_copy(tmp_path, redis_server):
    async def body():
        fleet = await start_fleet(tmp_path, redis_server.url, echo_handler)
        try:
            await fleet.applied(fleet.publish())
            for _ in range(3):
                assert await get(fleet) == 200
            shipped_before = await audit_ids_in_stream(redis_server.url, 3)

            redis_server.stop()
            for _ in range(4):
                assert await get(fleet) == 200        # serving and spooling go on
            # a worker (re)started while Redis is down serves from its disk copy
            await fleet.env.worker.stop(grace=0)
            fleet.env.worker = Worker(fleet.env.config)
            await fleet.env.worker.start()
            assert fleet.worker.holder.current.revision == 1
            for _ in range(2):
                assert await get(fleet) == 200

            redis_server.start()                     # empty again: it keeps nothing on disk
            # The 3 shipped before were never stored (no control plane ingested them) and died with
            # that Redis: they are shipped again with the 6 new ones, each once.
            shipped_after = await audit_ids_in_stream(redis_server.url, 9)
            spooled = [event["id"] for event in read_events(tmp_path / "audit.jsonl")]
            assert len(spooled) == 9 and set(shipped_before) < set(spooled)
            assert sorted(shipped_after) == sorted(spooled)   # none lost, none twice

            await fleet.applied(fleet.publish())     # and the next snapshot applies
        finally:
            await fleet.close()

    run(body, timeout=50)
