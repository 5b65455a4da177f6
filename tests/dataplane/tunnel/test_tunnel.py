"""Requests through an agent tunnel: the same pipeline as the direct path, the agent's
credential and impersonation at the API server, refusals on both ends, flow control per stream,
dead tunnels noticed by PINGs, drain notices."""
from __future__ import annotations

import ssl
import time

import pytest

from dataplane.pki import CertificateAuthority
from dataplane.signing import generate_signing_key
from dataplane.tunnel.assertion import AssertionSigner
from dataplane.tunnel.protocol import HelloError
from dataplane.upstream_h2 import STREAM_WINDOW
from tests.dataplane.gateway.helpers import build_request, echo_handler, read_head, run
from tests.dataplane.tunnel.helpers import AGENT_TOKEN, eventually, make_tunnel_env

PODS = "/clusters/alpha/api/v1/namespaces/default/pods"


def test_request_reaches_the_api_server_with_the_agents_credential_and_the_callers_identity(tmp_path):
    async def body():
        t = await make_tunnel_env(tmp_path)
        try:
            await t.start_agent()
            client = await t.env.connect("alice", ["devs"])
            resp = await client.request("GET", PODS + "?limit=500", {"Accept": "application/json"})
            assert resp.status == 200, resp.body
            seen = t.api.requests[-1]
            assert seen.target == "/api/v1/namespaces/default/pods?limit=500"
            assert seen.values("authorization") == [f"Bearer {AGENT_TOKEN}"]
            assert seen.header("impersonate-user") == "alice"
            assert seen.values("impersonate-group") == ["devs"]
            assert seen.header("impersonate-extra-accesspoint.io%2frequest-id") == resp.header("x-accesspoint-request-id")
            assert seen.header("x-accesspoint-assertion") is None
            event = [e for e in t.env.audit_events() if e["cluster"] == "alpha"][-1]
            assert event["decision"] == "allow" and event["code"] == 200 and event["binding"] == "alice-alpha"

            resp = await client.request("POST", PODS, {"Content-Type": "application/json"}, body=b'{"kind":"Pod"}')
            assert resp.status == 200 and resp.json()["body"] == '{"kind":"Pod"}'
        finally:
            await t.close()
    run(body)


def test_callers_cannot_forge_tunnel_fields_and_policy_still_decides(tmp_path):
    async def body():
        t = await make_tunnel_env(tmp_path)
        try:
            agent = await t.start_agent()
            client = await t.env.connect("alice", ["devs"])
            resp = await client.request("GET", PODS, {"X-Accesspoint-Assertion": "forged", "Accesspoint-Control": "drain",
                                                      "Accesspoint-Upgrade": "websocket"})
            assert resp.status == 200
            names = {name for name, _ in t.api.requests[-1].headers}
            assert not any(name.startswith(("accesspoint-", "x-accesspoint-")) for name in names)
            assert agent.connected == 1 and len(t.tunnels.tunnels("alpha")) == 1   # no drain happened
            eve = await t.env.connect("eve", [])
            before = len(t.api.requests)
            denied = await eve.request("GET", PODS)
            assert denied.status == 403 and denied.json()["kind"] == "Status"
            assert len(t.api.requests) == before
        finally:
            await t.close()
    run(body)


def test_without_a_live_tunnel_the_answer_is_503_naming_the_cluster(tmp_path):
    async def body():
        t = await make_tunnel_env(tmp_path)
        try:
            client = await t.env.connect("alice", ["devs"])
            resp = await client.request("GET", PODS)
            assert resp.status == 503
            status = resp.json()
            assert status["kind"] == "Status" and 'cluster "alpha"' in status["message"]
            assert "no agent tunnel" in status["message"]
            assert (await client.request("GET", "/clusters/beta/api")).status == 200   # direct clusters unaffected
        finally:
            await t.close()
    run(body)


async def _upgrade_echo(reader, writer) -> None:
    """An API server that switches to a byte echo after the upgrade request."""
    head = await read_head(reader)
    assert head is not None and dict(head[1]).get("upgrade") == "websocket"
    writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n")
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
_upgrade_echo.raw = True


def test_upgrades_become_a_byte_pipe_through_the_tunnel(tmp_path):
    async def body():
        t = await make_tunnel_env(tmp_path, handler=_upgrade_echo)
        try:
            await t.start_agent()
            client = await t.env.connect("alice", ["devs"])
            client.send(build_request("GET", PODS + "/web-0/exec?command=cat&stdin=true", {
                "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Protocol": "v5.channel.k8s.io"}))
            resp = await client.response()
            assert resp.status == 101 and resp.header("sec-websocket-protocol") == "v5.channel.k8s.io"
            payload = bytes(range(256)) * 1024
            client.send(payload)
            echoed = await client.reader.readexactly(len(payload))
            assert echoed == payload
            await client.close()
            event = await eventually(lambda: [e for e in t.env.audit_events() if e.get("upgrade")], "the session's audit")
            assert event[-1]["code"] == 101 and event[-1]["bytes_in"] >= len(payload)
        finally:
            await t.close()
    run(body)


async def _endless_log(req, reader, writer) -> bool:
    """/big/log streams without end; everything else is echoed."""
    if "/big/log" not in req.target:
        return await echo_handler(req, reader, writer)
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n" % 65536 + b"x" * 65536 + b"\r\n"
    while True:
        writer.write(chunk)
        await writer.drain()


def test_a_stalled_reader_does_not_slow_another_stream_on_the_same_tunnel(tmp_path):
    async def body():
        t = await make_tunnel_env(tmp_path, handler=_endless_log)
        try:
            await t.start_agent()
            stalled = await t.env.connect("alice", ["devs"])
            stalled.send(build_request("GET", PODS + "/big/log?follow=true"))      # never read
            tunnel = t.tunnels.tunnels("alpha")[0]

            def window_full():
                # what the stalled stream holds, unread: flow control stops the agent well before more
                return any(s.buffered() >= STREAM_WINDOW // 2 for s in tunnel.streams.values())
            await eventually(window_full, "the stalled stream's data piled up")
            client = await t.env.connect("alice", ["devs"])
            for _ in range(20):
                started = time.monotonic()
                resp = await client.request("GET", PODS + "/web-0")
                assert resp.status == 200
                assert time.monotonic() - started < 2.0, "a request waited behind the stalled stream"
            assert len(t.tunnels.tunnels("alpha")) == 1 and window_full()
        finally:
            await t.close()
    run(body)


def test_the_agent_refuses_unsigned_expired_foreign_and_other_cluster_assertions(tmp_path):
    class Fixed:
        def __init__(self, value: bytes):
            self.value = value

        def sign(self, *args, **kwargs) -> bytes:
            return self.value

    class OtherCluster(AssertionSigner):
        def sign(self, cluster, *args):
            return super().sign("beta", *args)

    async def body():
        t = await make_tunnel_env(tmp_path)
        try:
            await t.start_agent()
            good = t.tunnels.signer
            valid = good.sign("alpha", "GET", "/api/v1/namespaces/default/pods", "alice")
            cases = [
                (Fixed(b""), "carries no identity assertion"),
                (Fixed(valid.partition(b".")[0] + b"."), "not signed by the gateway fleet"),
                (AssertionSigner(generate_signing_key()), "not signed by the gateway fleet"),
                (AssertionSigner(t.assertion_key, clock=lambda: time.time() - 120), "has expired"),
                (OtherCluster(t.assertion_key), 'is for cluster "beta", not "alpha"'),
                (Fixed(valid), "is for another request"),       # replayed onto another path
            ]
            client = await t.env.connect("alice", ["devs"])
            for signer, reason in cases:
                t.tunnels.signer = signer
                resp = await client.request("GET", PODS + "/web-0")
                assert resp.status == 403, (reason, resp.body)
                status = resp.json()
                assert status["kind"] == "Status" and reason in status["message"]
                assert 'agent of cluster "alpha" refused' in status["message"]
            assert t.api.requests == []
            t.tunnels.signer = good
            assert (await client.request("GET", PODS + "/web-0")).status == 200
        finally:
            await t.close()
    run(body)


def test_tunnels_are_accepted_only_from_certificates_the_snapshot_allows_for_the_cluster(tmp_path):
    async def body():
        from dataplane.agent import Agent

        t = await make_tunnel_env(tmp_path)
        try:
            refused = [
                (t.agent_config(cn="agent-beta"), 'not allowed to serve cluster "alpha"'),
                (t.agent_config(cluster="beta"), 'cluster "beta" is not a tunnel cluster'),
                (t.agent_config(cluster="nosuch"), 'cluster "nosuch" is not a tunnel cluster'),
            ]
            for config, reason in refused:
                with pytest.raises(HelloError, match=reason):
                    await Agent(config).connect()
            stranger = t.agent_config(ca=CertificateAuthority.create("not the agent CA"))
            with pytest.raises((ssl.SSLError, ConnectionError, HelloError)):
                await Agent(stranger).connect()
            assert t.tunnels.tunnels() == []
        finally:
            await t.close()
    run(body)


def test_a_tunnel_that_stops_answering_pings_is_dropped_within_seconds(tmp_path):
    async def body():
        t = await make_tunnel_env(tmp_path, tunnel_ping_interval=0.2, tunnel_ping_timeout=0.3)
        try:
            agent = await t.start_agent(ping_interval=30.0)
            tunnel = next(iter(agent.tunnels))
            tunnel.transport.pause_reading()          # the agent hangs: PINGs go unanswered
            started = time.monotonic()
            await eventually(lambda: not t.tunnels.tunnels("alpha"), "the dead tunnel dropped")
            assert time.monotonic() - started < 3.0
        finally:
            await t.close()
    run(body)


def test_a_drain_notice_makes_the_agent_dial_again_while_streams_finish(tmp_path):
    async def body():
        t = await make_tunnel_env(tmp_path, handler=_endless_log)
        try:
            agent = await t.start_agent()
            old = t.tunnels.tunnels("alpha")[0]
            streaming = await t.env.connect("alice", ["devs"])
            streaming.send(build_request("GET", PODS + "/big/log?follow=true"))
            first = await read_head(streaming.reader)
            assert first is not None and " 200 " in first[0]
            t.tunnels.drain()
            await eventually(lambda: agent.connected == 2, "the agent's second tunnel")
            assert old in t.tunnels.tunnels("alpha") and old.draining and old.streams   # the stream goes on
            assert await streaming.reader.readexactly(65536)
            client = await t.env.connect("alice", ["devs"])
            assert (await client.request("GET", PODS)).status == 200
            new = [c for c in t.tunnels.tunnels("alpha") if c is not old]
            assert len(new) == 1 and t.api.requests[-1].target == "/api/v1/namespaces/default/pods"
            await streaming.close()
            await eventually(lambda: old not in t.tunnels.tunnels("alpha"), "the drained tunnel closed")
        finally:
            await t.close()
    run(body)
