"""The gateway's HTTP/2 listener, end to end over TLS on loopback (h2 as the client)."""
from __future__ import annotations

import asyncio

from tests.dataplane.gateway.helpers import echo_handler, make_env, run

from .client import H2Client

PODS = "/clusters/alpha/api/v1/namespaces/default/pods"


async def h2_connect(env, user="alice", groups=("devs",), settings=None) -> H2Client:
    client = await H2Client.connect(env.port, env.client_ssl(user, groups), settings)
    env.clients.append(client)
    return client


def test_many_multiplexed_requests_each_decided_and_audited(tmp_path):
    async def body():
        env = await make_env(tmp_path)
        try:
            c = await h2_connect(env)
            sids = [c.request("GET", f"{PODS}/p{i}") for i in range(40)]
            sids.append(c.request("GET", "/clusters/beta/api/v1/pods"))     # alice: denied on beta
            for i, sid in enumerate(sids[:-1]):
                r = await c.response(sid)
                assert r.status == 200, r.body
                assert r.json()["target"] == f"/api/v1/namespaces/default/pods/p{i}"
                assert r.json()["headers"].count(["impersonate-user", "alice"]) == 1
            denied = await c.response(sids[-1])
            assert denied.status == 403 and denied.json()["kind"] == "Status"
            events = env.audit_events()
            assert len(events) == 41 and {e["protocol"] for e in events} == {"h2"}
            assert sum(e["decision"] == "allow" for e in events) == 40
        finally:
            await env.close()
    run(body)


WATCH_EVENT = b'{"type":"ADDED","object":{"pad":"' + b"y" * 16000 + b'"}}\n'
WATCH_EVENTS = 64          # about 1 MB per watch


async def watch_or_echo(req, reader, writer) -> bool:
    """Watches stream WATCH_EVENTS large events (chunked) and end; everything else is echoed."""
    if "watch=true" not in req.target:
        return await echo_handler(req, reader, writer)
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
    for _ in range(WATCH_EVENTS):
        writer.write(b"%x\r\n" % len(WATCH_EVENT) + WATCH_EVENT + b"\r\n")
        await writer.drain()
    writer.write(b"0\r\n\r\n")
    await writer.drain()
    return True


def test_a_slow_reading_watch_does_not_stall_the_other_streams(tmp_path):
    async def body():
        env = await make_env(tmp_path, {"alpha": watch_or_echo})
        try:
            c = await h2_connect(env)
            slow = c.request("GET", PODS + "?watch=true", slow=True)
            fast = c.request("GET", PODS + "?watch=true&fast=1")
            gets = [c.request("GET", f"{PODS}/p{i}") for i in range(20)]
            assert (await c.response(fast)).body == WATCH_EVENT * WATCH_EVENTS
            for sid in gets:
                assert (await c.response(sid)).status == 200
            # the slow stream got no more than its window (65535, the client's INITIAL_WINDOW_SIZE)
            state = c.streams[slow]
            assert not state.done and len(state.body) <= 65535
            c.ack(slow)                               # it reads at last: everything arrives
            await c.wait(lambda: state.done, "the slow watch to finish")
            assert state.ended and state.body == WATCH_EVENT * WATCH_EVENTS
        finally:
            await env.close()
    run(body)


def test_rst_stream_cancels_the_upstream_request_and_is_audited(tmp_path):
    reached, upstream_gone = asyncio.Event(), asyncio.Event()

    async def hanging_watch(req, reader, writer) -> bool:
        if "watch=true" not in req.target:
            return await echo_handler(req, reader, writer)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        await writer.drain()
        reached.set()
        try:
            await reader.read(1)
        except ConnectionError:
            pass
        upstream_gone.set()                     # the gateway closed the upstream connection
        return False

    async def body():
        env = await make_env(tmp_path, {"alpha": hanging_watch})
        try:
            c = await h2_connect(env)
            sid = c.request("GET", PODS + "?watch=true")
            await reached.wait()
            await c.wait(lambda: c.streams[sid].status == 200, "the watch's headers")
            c.reset(sid)                            # kubectl abandons the watch: CANCEL
            await upstream_gone.wait()
            other = await c.get(PODS)                # the connection carries on
            assert other.status == 200
            events = [e for e in env.audit_events() if e["verb"] == "watch"]
            assert len(events) == 1 and events[0]["protocol"] == "h2"
        finally:
            await env.close()
    run(body)
