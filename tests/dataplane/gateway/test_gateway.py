"""The real gateway over real TLS sockets on loopback, against small TLS upstream API servers."""
from __future__ import annotations

import asyncio
import json

import pytest

from dataplane.up import free_port

from .helpers import build_request, echo_handler, make_env, raw_handler, read_head, run

PODS = "/clusters/alpha/api/v1/namespaces/default/pods"


# -- the critical path ---------------------------------------------------------------------------------

def test_forward_with_client_cert_rewrites_identity_headers(tmp_path):
    async def body():
        env = await make_env(tmp_path)
        try:
            c = await env.connect("alice", ["devs"])
            r = await c.request("GET", PODS + "?limit=500&labelSelector=a%3Db", {
                "Authorization": "Bearer bob-token",          # a caller credential: never forwarded
                "X-Forwarded-For": "6.6.6.6", "X-Remote-User": "admin",
                "Connection": "keep-alive, X-Hop", "X-Hop": "1", "Proxy-Authorization": "x",
                "Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
                "User-Agent": "kubectl/v1.32.4 (linux/amd64) kubernetes/4cb5f07",
            })
            assert r.status == 200
            request_id = r.header("x-accesspoint-request-id")
            seen = env.upstreams["alpha"].requests[-1]
            assert seen.target == "/api/v1/namespaces/default/pods?limit=500&labelSelector=a%3Db"
            assert seen.values("authorization") == ["Bearer gateway-token-alpha"]
            assert seen.values("impersonate-user") == ["alice"]
            assert seen.values("impersonate-group") == ["devs"]
            assert seen.values("impersonate-extra-accesspoint.io%2frequest-id") == [request_id]
            assert seen.values("x-forwarded-for") == ["127.0.0.1"]
            for gone in ("x-remote-user", "x-hop", "proxy-authorization"):
                assert seen.values(gone) == [], gone
            assert seen.header("accept") == "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
            assert not any(k.startswith("impersonate-") and v in ("bob", "admin") for k, v in seen.headers)
            events = env.audit_events()
            assert events[-1]["id"] == request_id
            assert events[-1]["user"] == "alice" and events[-1]["decision"] == "allow"
            assert events[-1]["binding"] == "alice-alpha" and events[-1]["code"] == 200
            assert events[-1]["verb"] == "list" and events[-1]["resource"] == "pods"
            assert events[-1]["method"] == "cert" and events[-1]["user_agent"].startswith("kubectl/")
            assert "bob-token" not in json.dumps(events)
            await c.close()
        finally:
            await env.close()

    run(body)


def test_non_resource_urls_go_through_the_chain(tmp_path):
    async def body():
        env = await make_env(tmp_path)
        try:
            c = await env.connect()
            r = await c.request("GET", "/clusters/alpha/version?timeout=32s")
            assert r.status == 200 and r.json()["target"] == "/version?timeout=32s"
            ev = env.audit_events()[-1]
            assert ev["verb"] == "get" and ev["path"] == "/version" and ev["decision"] == "allow"
        finally:
            await env.close()

    run(body)


def test_unauthenticated_is_401_and_audited(tmp_path):
    async def body():
        env = await make_env(tmp_path)
        try:
            c = await env.connect(user=None)
            r = await c.request("GET", PODS)
            assert r.status == 401 and r.json()["reason"] == "Unauthorized"
            r = await c.request("GET", PODS, {"Authorization": "Bearer wrong"})
            assert r.status == 401
            assert env.upstreams["alpha"].requests == []
            events = env.audit_events()
            assert [e["code"] for e in events] == [401, 401]
            assert events[1]["authn_failure"] == "unknown_token" and events[1]["decision"] == "deny"
            text = env.worker.metrics.render().decode()
            assert 'accesspoint_authn_failures_total{reason="unknown_token"} 1' in text
        finally:
            await env.close()

    run(body)


def test_unknown_cluster_is_404_status(tmp_path):
    async def body():
        env = await make_env(tmp_path)
        try:
            c = await env.connect()
            r = await c.request("GET", "/clusters/nope/api/v1/pods")
            assert r.status == 404
            assert r.json()["message"] == 'cluster "nope" not found'
            assert r.json()["kind"] == "Status"
        finally:
            await env.close()

    run(body)


def test_denied_request_is_403_with_kubernetes_message_and_audited(tmp_path):
    async def body():
        env = await make_env(tmp_path)
        try:
            c = await env.connect("alice", ["devs"])
            r = await c.request("GET", "/clusters/beta/api/v1/namespaces/default/pods/p1")
            assert r.status == 403
            assert r.json()["message"] == ('pods "p1" is forbidden: User "alice" cannot get resource "pods" '
                                           'in API group "" in the namespace "default"')
            assert env.upstreams["beta"].requests == []
            r = await c.request("GET", PODS)       # the same connection goes on
            assert r.status == 200
            events = env.audit_events()
            deny, allow = events[-2], events[-1]
            assert deny["decision"] == "deny" and deny["code"] == 403 and deny["cluster"] == "beta"
            assert allow["decision"] == "allow" and allow["binding"] == "alice-alpha" and allow["role"] == "all"
            text = env.worker.metrics.render().decode()
            assert 'accesspoint_decisions_total{result="deny"} 1' in text
            assert 'accesspoint_requests_total{cluster="alpha",verb="list",code="200"} 1' in text
        finally:
            await env.close()

    run(body)


@pytest.mark.parametrize("target", [
    "/clusters/alpha/../beta/api/v1/pods",
    "/clusters/alpha/%2e%2e/beta/api/v1/pods",
    "/clusters/alpha/%2E%2E/beta/api/v1/pods",
    "/clusters/alpha%2Fbeta/api/v1/pods",
    "/clusters/alpha%2f..%2fbeta/api/v1/pods",
    "/clusters//beta/api/v1/pods",
    "/clusters/alpha/..\\beta/api/v1/pods",
    "/clusters/alpha/api/v1/namespaces/default/pods/..%2f..%2f..%2f..%2fbeta",
    "/clusters/./beta/api/v1/pods",
])
def test_path_tricks_cannot_reach_another_cluster(tmp_path, target):
    async def body():
        env = await make_env(tmp_path)
        try:
            c = await env.connect("alice", ["devs"])
            r = await c.request("GET", target)
            assert r.status in (400, 404), r.status
            assert r.json()["kind"] == "Status"
            assert env.upstreams["beta"].requests == []
            assert env.upstreams["alpha"].requests == []
        finally:
            await env.close()

    run(body)


# -- impersonation -------------------------------------------------------------------------------------

def test_caller_impersonation_needs_the_grant(tmp_path):
    async def body():
        env = await make_env(tmp_path)
        try:
            c = await env.connect(user=None)
            r = await c.request("GET", PODS, {"Authorization": "Bearer eve-token", "Impersonate-User": "carol"})
            assert r.status == 403
            assert r.json()["message"] == ('users "carol" is forbidden: User "eve" cannot impersonate resource '
                                           '"users" in API group "" at the cluster scope')
            # bob may impersonate users and groups on alpha; the request is decided for carol
            r = await c.request("GET", PODS, {"Authorization": "Bearer bob-token", "Impersonate-User": "carol",
                                              "Impersonate-Group": "auditors"})
            assert r.status == 200
            seen = env.upstreams["alpha"].requests[-1]
            assert seen.values("impersonate-user") == ["carol"]
            assert seen.values("impersonate-group") == ["auditors"]
            assert seen.values("authorization") == ["Bearer gateway-token-alpha"]
            # bob impersonating eve: granted, but eve may not list pods
            r = await c.request("GET", PODS, {"Authorization": "Bearer bob-token", "Impersonate-User": "eve"})
            assert r.status == 403 and 'User "eve" cannot list' in r.json()["message"]
            # bob has no impersonation grant on beta
            r = await c.request("GET", "/clusters/beta/api", {"Authorization": "Bearer bob-token",
                                                              "Impersonate-User": "carol"})
            assert r.status == 403 and 'User "bob" cannot impersonate' in r.json()["message"]
            events = env.audit_events()
            assert events[0]["user"] == "eve" and events[0]["decision"] == "deny"
            assert events[1]["user"] == "bob" and events[1]["impersonated_user"] == "carol"
            assert events[1]["impersonated_groups"] == ["auditors"] and events[1]["binding"] == "carol-alpha"
            assert len(env.upstreams["alpha"].requests) == 1
        finally:
            await env.close()

    run(body)


# -- HTTP/1.1 framing ----------------------------------------------------------------------------------

SMUGGLING = [
    (b"POST /clusters/alpha/api HTTP/1.1\r\nHost: g\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"POST /clusters/alpha/api HTTP/1.1\r\nHost: g\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400),
    (b"GET /clusters/alpha/api HTTP/1.1\nHost: g\r\n\r\n", 400),
    (b"GET /clusters/alpha/api HTTP/1.1\r\nHost: g\r\nX-A: 1\r\n  folded\r\n\r\n", 400),
    (b"GET /clusters/alpha/api HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: g\r\n\r\n", 414),
    (b"GET /clusters/alpha/api HTTP/1.1\r\nHost: g\r\n" + b"X-Big: " + b"b" * 70000 + b"\r\n\r\n", 431),
    (b"POST /clusters/alpha/api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: g\r\n"
     b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", 400),
]


@pytest.mark.parametrize("raw, code", SMUGGLING)
def test_malformed_requests_get_status_and_close(tmp_path, raw, code):
    async def body():
        env = await make_env(tmp_path)
        try:
            c = await env.connect()
            c.send(raw)
            r = await c.response()
            assert r.status == code
            assert r.json()["kind"] == "Status" and r.json()["code"] == code
            assert r.header("connection") == "close"
            assert await c.closed()
        finally:
            await env.close()

    run(body)


def test_keepalive_and_pipelined_requests_answer_in_order(tmp_path):
    async def body():
        env = await make_env(tmp_path)
        try:
            c = await env.connect()
            c.send(b"".join(build_request("GET", f"/clusters/alpha/api/v1/namespaces/n{i}/pods") for i in range(5)))
            for i in range(5):
                r = await c.response()
                assert r.status == 200
                assert r.json()["target"] == f"/api/v1/namespaces/n{i}/pods"
            r = await c.request("GET", "/clusters/alpha/version")
            assert r.status == 200
            assert env.upstreams["alpha"].connections == 1          # one pooled upstream connection
        finally:
            await env.close()

    run(body)


def test_expect_100_continue(tmp_path):
    async def body():
        env = await make_env(tmp_path)
        try:
            c = await env.connect()
            c.send(build_request("POST", PODS, {"Content-Length": "7", "Expect": "100-continue",
                                                "Content-Type": "application/json"}))
            interim = await read_head(c.reader)
            assert interim[0].startswith("HTTP/1.1 100")
            c.send(b'{"a":1}')
            r = await c.response()
            assert r.status == 200 and r.json()["body"] == '{"a":1}'
            # denied before the body: no 100, a 403 and the connection closes
            c2 = await env.connect()
            c2.send(build_request("POST", "/clusters/beta/api/v1/namespaces/default/pods",
                                  {"Content-Length": "7", "Expect": "100-continue"}))
            r = await c2.response()
            assert r.status == 403 and r.header("connection") == "close"
        finally:
            await env.close()

    run(body)


def test_chunked_request_body_is_streamed_upstream(tmp_path):
    async def body():
        got_first = asyncio.Event()

        @raw_handler
        async def streaming(reader, writer):
            head = await read_head(reader)
            assert ("transfer-encoding", "chunked") in head[1]
            size = int(await reader.readuntil(b"\r\n"), 16)
            assert await reader.readexactly(size + 2) == b"part-one\r\n"
            got_first.set()
            rest = bytearray()
            while True:
                size = int(await reader.readuntil(b"\r\n"), 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    break
                rest += (await reader.readexactly(size + 2))[:-2]
            writer.write(b"HTTP/1.1 201 Created\r\ncontent-length: %d\r\n\r\n" % len(rest) + rest)
            await writer.drain()
            await reader.read()

        env = await make_env(tmp_path, {"alpha": streaming})
        try:
            c = await env.connect()
            c.send(build_request("POST", "/clusters/alpha/api/v1/namespaces/default/configmaps",
                                 {"Transfer-Encoding": "chunked", "Content-Type": "application/json"}))
            c.send(b"8\r\npart-one\r\n")
            await got_first.wait()                       # arrived upstream before the rest was sent
            c.send(b"8\r\npart-two\r\n6\r\n-three\r\n0\r\n\r\n")
            r = await c.response()
            assert r.status == 201 and r.body == b"part-two-three"
            assert env.audit_events()[-1]["bytes_in"] == len(b"part-onepart-two-three")
        finally:
            await env.close()

    run(body)


# -- streaming -----------------------------------------------------------------------------------------

def test_slowloris_is_cut_but_a_slow_stream_is_not(tmp_path):
    async def body():
        release = asyncio.Queue()

        async def watch(req, reader, writer):
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
            while True:
                item = await release.get()
                if item is None:
                    writer.write(b"0\r\n\r\n")
                    await writer.drain()
                    return True
                writer.write(b"%x\r\n%s\r\n" % (len(item), item))
                await writer.drain()

        env = await make_env(tmp_path, {"alpha": watch}, head_timeout=0.3)
        try:
            stream = await env.connect()
            stream.send(build_request("GET", PODS + "?watch=true"))
            head = await read_head(stream.reader)
            assert head[0].startswith("HTTP/1.1 200")
            await release.put(b'{"type":"ADDED"}\n')
            size = int(await stream.reader.readuntil(b"\r\n"), 16)
            assert (await stream.reader.readexactly(size + 2))[:-2] == b'{"type":"ADDED"}\n'
            # a slowloris connection: the head never completes
            slow = await env.connect()
            slow.send(b"GET /clusters/alpha/api HTTP/1.1\r\nHost: g\r\nX-Slow: 1")
            r = await slow.response()
            assert r.status == 408
            assert await slow.closed()
            # the stream outlived the head timeout and still flows
            await release.put(b'{"type":"MODIFIED"}\n')
            size = int(await stream.reader.readuntil(b"\r\n"), 16)
            assert (await stream.reader.readexactly(size + 2))[:-2] == b'{"type":"MODIFIED"}\n'
            await release.put(None)
            assert await stream.reader.readuntil(b"0\r\n\r\n") == b"0\r\n\r\n"
            assert env.audit_events()[-1]["verb"] == "watch"
        finally:
            await env.close()

    run(body)


def test_large_response_with_slow_reader_applies_backpressure(tmp_path, monkeypatch):
    from dataplane.flow import FlowControl
    from dataplane.http1 import HTTP1Protocol

    total = 48 * 1024 * 1024
    chunk = b"x" * 65536

    async def body():
        blocked = asyncio.Event()
        down_paused = asyncio.Event()
        up_paused = asyncio.Event()
        written = [0]
        transports: list = []

        original_pause_writing = HTTP1Protocol.pause_writing
        original_pause_reading = FlowControl.pause_reading

        def spy_pause_writing(self):
            original_pause_writing(self)
            down_paused.set()

        def spy_pause_reading(self):
            original_pause_reading(self)
            if any(conn.flow is self for conn in env.worker.upstreams._open):
                up_paused.set()

        monkeypatch.setattr(HTTP1Protocol, "pause_writing", spy_pause_writing)
        monkeypatch.setattr(FlowControl, "pause_reading", spy_pause_reading)

        async def big(req, reader, writer):
            # a large write buffer: it only grows past 1 MiB when the kernel stops taking bytes,
            # i.e. when the gateway has stopped reading this connection
            writer.transport.set_write_buffer_limits(high=8 * 1024 * 1024)
            transports.append(writer.transport)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % total)
            while written[0] < total:
                writer.write(chunk)
                written[0] += len(chunk)
                if writer.transport.get_write_buffer_size() > 1024 * 1024:
                    blocked.set()
                await writer.drain()
            return True

        env = await make_env(tmp_path, {"alpha": big})
        try:
            c = await env.connect()
            c.send(build_request("GET", PODS))      # and do not read: a slow client
            await down_paused.wait()                # 1. the client's buffers are full
            up = next(iter(env.worker.upstreams._open))
            if not up.flow.read_paused:
                up_paused.clear()
                await up_paused.wait()              # 2. so the gateway stops reading upstream
            if transports[0].get_write_buffer_size() <= 1024 * 1024:
                blocked.clear()
                await blocked.wait()                # 3. so the upstream's writes stall
            assert written[0] < total
            assert up.flow.read_paused
            assert up._body.buffered <= 1024 * 1024                     # gateway memory bounded
            downstream = next(iter(env.worker.server.connections))
            assert downstream.flow.write_paused
            assert downstream.transport.get_write_buffer_size() <= 1024 * 1024
            r = await c.response()                  # now read everything
            assert r.status == 200 and len(r.body) == total
        finally:
            await env.close()

    run(body, timeout=60)


def test_client_disconnect_cancels_the_upstream_request(tmp_path):
    async def body():
        upstream_closed = asyncio.Event()

        async def watch(req, reader, writer):
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            await writer.drain()
            data = await reader.read(1)         # nothing more comes: EOF when the gateway lets go
            assert data == b""
            upstream_closed.set()
            return False

        env = await make_env(tmp_path, {"alpha": watch})
        try:
            c = await env.connect()
            c.send(build_request("GET", PODS + "?watch=1"))
            await read_head(c.reader)
            assert await c.reader.readuntil(b"first\r\n")
            await c.close()
            await upstream_closed.wait()
            events = env.audit_events()
            assert events[-1]["code"] == 200 and events[-1]["verb"] == "watch"
            assert env.worker.upstreams.idle_count() == 0
        finally:
            await env.close()

    run(body)


def test_upstream_unreachable_is_503_status(tmp_path):
    async def body():
        env = await make_env(tmp_path, {"alpha": echo_handler}, unreachable={"gamma": free_port()})
        try:
            c = await env.connect("carol", [])
            r = await c.request("GET", "/clusters/gamma/version")
            assert r.status == 503
            body = r.json()
            assert body["message"] == 'cluster "gamma" is unreachable: connection refused'
            assert body["reason"] == "ServiceUnavailable" and "token" not in body["message"]
            text = env.worker.metrics.render().decode()
            assert 'accesspoint_upstream_errors_total{cluster="gamma",reason="unreachable"} 1' in text
        finally:
            await env.close()

    run(body)


def test_upstream_with_wrong_ca_is_503_with_safe_message(tmp_path):
    async def body():
        env = await make_env(tmp_path)
        try:
            from dataplane.pki import CertificateAuthority
            snapshot = env.worker.holder.current
            other = CertificateAuthority.create("other")
            alpha = snapshot.clusters["alpha"]
            import dataclasses
            snapshot.clusters["alpha"] = dataclasses.replace(alpha, ca_bundle=other.cert_pem.decode())
            env.worker.upstreams._tls.clear()
            c = await env.connect()
            r = await c.request("GET", "/clusters/alpha/version")
            assert r.status == 503
            assert r.json()["message"].startswith('cluster "alpha" is unreachable: TLS certificate verification failed')
        finally:
            await env.close()

    run(body)


# -- upgrades ------------------------------------------------------------------------------------------

UPGRADE_HEADERS = [
    ("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1"), ("Content-Length", "0"),
    ("X-Stream-Protocol-Version", "v5.channel.k8s.io"), ("X-Stream-Protocol-Version", "v4.channel.k8s.io"),
    ("X-Stream-Protocol-Version", "channel.k8s.io"),
]
EXEC = "/clusters/alpha/api/v1/namespaces/default/pods/p1/exec?command=ls&command=-la&stdout=true"


def test_upgrade_is_spliced_both_ways(tmp_path):
    async def body():
        async def exec_handler(req, reader, writer):
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
                         b"X-Stream-Protocol-Version: v5.channel.k8s.io\r\nX-Up: 1\r\n\r\nhello-from-upstream|")
            await writer.drain()
            while True:
                data = await reader.read(65536)
                if not data or data.endswith(b"bye"):
                    writer.write(b"echo:" + data + b"|closing")
                    await writer.drain()
                    return False           # the upstream ends the session
                writer.write(b"echo:" + data + b"|")
                await writer.drain()

        env = await make_env(tmp_path, {"alpha": exec_handler})
        try:
            c = await env.connect()
            c.send(build_request("POST", EXEC, UPGRADE_HEADERS) + b"early-bytes")
            head = await read_head(c.reader)
            assert head[0] == "HTTP/1.1 101 Switching Protocols"
            assert ("x-up", "1") in head[1] and ("x-stream-protocol-version", "v5.channel.k8s.io") in head[1]
            got = await c.reader.readuntil(b"hello-from-upstream|")
            assert got == b"hello-from-upstream|"
            assert await c.reader.readuntil(b"|") == b"echo:early-bytes|"
            c.send(b"stdin-1")
            assert await c.reader.readuntil(b"|") == b"echo:stdin-1|"
            c.send(b"bye")
            assert await c.reader.readuntil(b"|closing") == b"echo:bye|closing"
            assert await c.closed()       # upstream EOF is passed on after every byte arrived
            seen = env.upstreams["alpha"].requests[0]
            assert seen.method == "POST" and seen.header("upgrade") == "SPDY/3.1"
            assert seen.values("x-stream-protocol-version") == ["v5.channel.k8s.io", "v4.channel.k8s.io",
                                                                "channel.k8s.io"]
            assert seen.values("impersonate-user") == ["alice"] and seen.header("content-length") == "0"
            ev = env.audit_events()[-1]
            assert ev["code"] == 101 and ev["subresource"] == "exec" and ev["verb"] == "create"
            assert ev["bytes_in"] == len(b"early-bytesstdin-1bye")
            assert ev["bytes_out"] == len(b"hello-from-upstream|echo:early-bytes|echo:stdin-1|echo:bye|closing")
            assert ev["session_start"] <= ev["session_end"]
        finally:
            await env.close()

    run(body)


def test_websocket_upgrade_forwards_subprotocols_and_non_101_passes_through(tmp_path):
    async def body():
        async def refuse(req, reader, writer):
            payload = b'{"kind":"Status","code":400,"message":"websocket not supported here"}'
            writer.write(b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nx-from: upstream\r\n"
                         b"content-length: %d\r\n\r\n" % len(payload) + payload)
            await writer.drain()
            return True

        env = await make_env(tmp_path, {"alpha": refuse})
        try:
            c = await env.connect()
            r = await c.request("GET", EXEC, [
                ("Connection", "Upgrade"), ("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13"),
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("Sec-WebSocket-Protocol", "v5.channel.k8s.io"), ("Sec-WebSocket-Protocol", "v4.channel.k8s.io")])
            assert r.status == 400 and r.header("x-from") == "upstream"
            assert r.json()["message"] == "websocket not supported here"
            seen = env.upstreams["alpha"].requests[0]
            assert seen.method == "GET" and seen.header("upgrade") == "websocket"
            assert seen.values("sec-websocket-protocol") == ["v5.channel.k8s.io", "v4.channel.k8s.io"]
            assert env.audit_events()[-1]["code"] == 400
        finally:
            await env.close()

    run(body)


def test_upgrade_denied_before_reaching_upstream(tmp_path):
    async def body():
        env = await make_env(tmp_path)
        try:
            c = await env.connect()
            r = await c.request("POST", EXEC.replace("alpha", "beta"), UPGRADE_HEADERS)
            assert r.status == 403 and "cannot create resource \"pods/exec\"" in r.json()["message"]
            assert env.upstreams["beta"].requests == []
        finally:
            await env.close()

    run(body)


# -- admin, reload, drain ------------------------------------------------------------------------------

def test_metrics_are_exposed_on_the_admin_port(tmp_path):
    async def body():
        env = await make_env(tmp_path)
        try:
            c = await env.connect()
            assert (await c.request("GET", PODS)).status == 200
            port = env.worker.admin.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            text = (await reader.read()).decode()
            writer.close()
            assert 'accesspoint_requests_total{cluster="alpha",verb="list",code="200"} 1' in text
            assert "accesspoint_request_duration_seconds_bucket" in text
            assert 'accesspoint_decisions_total{result="allow"} 1' in text
        finally:
            await env.close()

    run(body)


def test_drain_closes_idle_connections_and_finishes_in_flight(tmp_path):
    async def body():
        release = asyncio.Event()
        started = asyncio.Event()

        async def slow(req, reader, writer):
            started.set()
            await release.wait()
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\ndone")
            await writer.drain()
            return True

        env = await make_env(tmp_path, {"alpha": slow})
        try:
            idle = await env.connect()
            busy = await env.connect()
            busy.send(build_request("GET", PODS))
            await started.wait()
            drain = asyncio.ensure_future(env.worker.server.drain(30))
            assert await idle.closed()              # idle keep-alive connection closed at once
            release.set()
            r = await busy.response()               # in-flight request finishes
            assert r.status == 200 and r.body == b"done" and r.header("connection") == "close"
            await drain
        finally:
            await env.close()

    run(body)


def test_sighup_reload_applies_a_newer_snapshot(tmp_path):
    async def body():
        env = await make_env(tmp_path)
        try:
            assert env.worker.holder.current.revision == 1
            assert env.worker.reload_snapshot()                  # same revision: kept
            (tmp_path / "snapshot.json").write_text("not a snapshot")
            assert not env.worker.reload_snapshot()              # bad file: the old one stays
            assert env.worker.holder.current.revision == 1
        finally:
            await env.close()

    run(body)


def test_drain_lets_a_stream_run_until_the_grace_expires_then_aborts_it(tmp_path):
    async def body():
        async def watch(req, reader, writer):
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            await writer.drain()
            await reader.read()           # until the gateway lets go
            return False

        env = await make_env(tmp_path, {"alpha": watch})
        try:
            c = await env.connect()
            c.send(build_request("GET", PODS + "?watch=true"))
            await read_head(c.reader)
            assert await c.reader.readuntil(b"first\r\n")
            await env.worker.server.drain(0.2)   # returns once the grace expired and the stream ended
            assert await c.closed()
            ev = env.audit_events()[-1]
            assert ev["verb"] == "watch" and ev["code"] == 200   # audited before the spool closes
        finally:
            await env.close()

    run(body)


def test_upstream_dial_timeout_is_503_status(tmp_path):
    async def body():
        async def silent(reader, writer):      # accepts TCP, never answers the TLS handshake
            await reader.read()
            writer.close()

        blackhole = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = blackhole.sockets[0].getsockname()[1]
        env = await make_env(tmp_path, {"alpha": echo_handler}, unreachable={"gamma": port},
                             upstream_dial_timeout=0.3)
        try:
            c = await env.connect("carol", [])
            r = await c.request("GET", "/clusters/gamma/version")
            assert r.status == 503
            assert r.json()["message"] == 'cluster "gamma" is unreachable: dial timed out after 0.3s'
        finally:
            await env.close()
            blackhole.close()

    run(body)


def test_head_204_and_304_responses_have_no_body_and_keep_the_connection(tmp_path):
    async def body():
        async def answers(req, reader, writer):
            if req.method == "HEAD":
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1234\r\n\r\n")
            elif req.header("if-none-match"):
                writer.write(b"HTTP/1.1 304 Not Modified\r\netag: \"abc\"\r\n\r\n")
            else:
                writer.write(b"HTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\n"
                             b"HTTP/1.1 204 No Content\r\n\r\n")
            await writer.drain()
            return True

        env = await make_env(tmp_path, {"alpha": answers})
        try:
            c = await env.connect()
            r = await c.request("HEAD", "/clusters/alpha/openapi/v3")
            assert r.status == 200 and r.header("content-length") == "1234" and r.body == b""
            r = await c.request("GET", "/clusters/alpha/openapi/v3/api/v1?hash=x", {"If-None-Match": '"abc"'})
            assert r.status == 304 and r.header("etag") == '"abc"' and r.body == b""
            r = await c.request("DELETE", PODS + "/p1", {"Content-Type": "application/json"},
                                b'{"propagationPolicy":"Background"}')
            assert r.status == 204 and r.body == b""
            assert env.upstreams["alpha"].requests[-1].body == b'{"propagationPolicy":"Background"}'
            r = await c.request("GET", "/clusters/alpha/version", {"If-None-Match": '"abc"'})
            assert r.status == 304                      # the same connection still works
            assert env.upstreams["alpha"].connections == 1
        finally:
            await env.close()

    run(body)


def test_a_response_whose_audit_fails_does_not_complete(tmp_path):
    async def body():
        async def stream(req, reader, writer):
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\ndata\r\n0\r\n\r\n")
            await writer.drain()
            return True

        env = await make_env(tmp_path, {"alpha": stream})
        try:
            def broken(event):
                raise OSError("disk full")

            env.worker.audit.append = broken
            c = await env.connect()
            c.send(build_request("GET", PODS))
            head = await read_head(c.reader)
            assert head[0].startswith("HTTP/1.1 200")
            rest = await c.reader.read()          # the body never gets its last chunk
            assert b"0\r\n\r\n" not in rest
        finally:
            del env.worker.audit.append
            await env.close()

    run(body)
