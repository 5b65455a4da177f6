"""The HTTP/1.1 fast path (dataplane/fastpath.py) keeps the task path's contract: a request
that finds an idle pooled upstream connection is relayed from callbacks, and each outcome
(success, backpressure, client gone, pooled connection closed, upstream failure mid-body, audit
failure) ends as it does on the task path. The first request of each test dials (task path); the
ones after it take the pooled connection (fast path)."""
from __future__ import annotations

import asyncio

from dataplane.pipeline import Gateway

from .helpers import build_request, echo_handler, make_env, read_head, run

PODS = "/clusters/alpha/api/v1/namespaces/default/pods"
SMALL = b'{"kind":"Pod"}'


def _small(writer) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(SMALL) + SMALL)


def _count_task_path(monkeypatch) -> list:
    """Every request that reaches Gateway.handle (the task path), and whether it came prepared."""
    seen = []
    original = Gateway.handle

    async def spy(self, request, response, prepared=None):
        seen.append(prepared is not None)
        await original(self, request, response, prepared)

    monkeypatch.setattr(Gateway, "handle", spy)
    return seen


def test_pooled_requests_are_served_without_a_task_and_audited_alike(tmp_path, monkeypatch):
    async def body():
        task_path = _count_task_path(monkeypatch)
        env = await make_env(tmp_path)
        try:
            c = await env.connect()
            for _ in range(3):
                r = await c.request("GET", PODS + "/web-0", {"User-Agent": "kubectl/v1.32.4"})
                assert r.status == 200 and r.json()["target"] == "/api/v1/namespaces/default/pods/web-0"
                assert r.header("x-accesspoint-request-id")
            assert task_path == [True]            # the first dialled; the next two took the pool
            assert env.upstreams["alpha"].connections == 1
            slow, *fast = env.audit_events()
            assert [e["code"] for e in fast] == [200, 200] and fast[0]["user_agent"] == "kubectl/v1.32.4"
            assert set(fast[0]) == set(slow)      # the same event, whichever path served it
            assert fast[0]["user"] == "alice" and fast[0]["decision"] == "allow"
            assert fast[0]["bytes_out"] == len(r.body)
            # a body, a watch and a refusal keep to the task path, the decision taken once
            task_path.clear()
            assert (await c.request("POST", PODS, body=b"{}")).status == 200
            assert (await c.request("GET", "/clusters/nowhere/api")).status == 404
            assert task_path == [False, True]
            assert env.worker.gateway.metrics.requests_in_flight.labels().value == 0
        finally:
            await env.close()

    run(body)


def test_slow_client_pauses_reading_from_the_api_server(tmp_path, monkeypatch):
    from dataplane.flow import FlowControl

    total = 48 * 1024 * 1024     # more than the kernel's socket buffers on both sides

    async def body():
        requests = [0]
        up_paused = asyncio.Event()
        original_pause_reading = FlowControl.pause_reading

        def spy_pause_reading(self):
            original_pause_reading(self)
            if any(conn.flow is self for conn in env.worker.upstreams._open):
                up_paused.set()

        monkeypatch.setattr(FlowControl, "pause_reading", spy_pause_reading)

        async def big(req, reader, writer):
            requests[0] += 1
            if requests[0] == 1:
                _small(writer)
                await writer.drain()
                return True
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % total)
            sent = 0
            while sent < total:
                writer.write(b"x" * 65536)
                sent += 65536
                await writer.drain()
            return True

        env = await make_env(tmp_path, {"alpha": big})
        try:
            c = await env.connect()
            assert (await c.request("GET", PODS)).status == 200
            c.send(build_request("GET", PODS))              # and do not read yet
            await up_paused.wait()                  # the client's buffers filled: reading paused
            up = next(iter(env.worker.upstreams._open))
            assert up.flow.read_paused
            downstream = next(iter(env.worker.server.connections))
            assert downstream.flow.write_paused
            assert downstream.transport.get_write_buffer_size() <= 1024 * 1024
            r = await c.response()                           # now read everything
            assert r.status == 200 and len(r.body) == total
            assert (await c.request("GET", PODS)).status == 200   # the pooled connection goes on
            assert env.upstreams["alpha"].connections == 1
        finally:
            await env.close()

    run(body, timeout=60)


def test_client_gone_mid_response_ends_the_upstream_exchange_and_is_audited(tmp_path):
    async def body():
        upstream_closed = asyncio.Event()
        requests = [0]

        async def endless(req, reader, writer):
            requests[0] += 1
            if requests[0] == 1:
                _small(writer)
                await writer.drain()
                return True
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            await writer.drain()
            assert await reader.read(1) == b""     # EOF when the gateway lets go
            upstream_closed.set()
            return False

        env = await make_env(tmp_path, {"alpha": endless})
        try:
            c = await env.connect()
            assert (await c.request("GET", PODS)).status == 200
            c.send(build_request("GET", PODS))
            await read_head(c.reader)
            assert await c.reader.readuntil(b"first\r\n")
            await c.close()
            await upstream_closed.wait()
            event = env.audit_events()[-1]
            assert event["code"] == 200 and event["error"] == "client went away"
            assert env.worker.upstreams.idle_count() == 0
        finally:
            await env.close()

    run(body)


def test_a_pooled_connection_the_server_closed_is_replaced_by_a_new_one(tmp_path):
    async def body():
        per_connection: dict = {}

        async def close_on_second(req, reader, writer):
            n = per_connection[writer] = per_connection.get(writer, 0) + 1
            if n == 2:
                return False               # closes without an answer (as an idle timeout would)
            _small(writer)
            await writer.drain()
            return True

        env = await make_env(tmp_path, {"alpha": close_on_second})
        try:
            c = await env.connect()
            assert (await c.request("GET", PODS)).status == 200
            r = await c.request("GET", PODS)
            assert r.status == 200 and r.body == SMALL
            assert env.upstreams["alpha"].connections == 2
            assert [e["code"] for e in env.audit_events()] == [200, 200]
        finally:
            await env.close()

    run(body)


def test_upstream_failing_mid_body_closes_the_client_connection_unended(tmp_path):
    async def body():
        requests = [0]

        async def short(req, reader, writer):
            requests[0] += 1
            if requests[0] == 1:
                _small(writer)
                await writer.drain()
                return True
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789")
            await writer.drain()
            return False

        env = await make_env(tmp_path, {"alpha": short})
        try:
            c = await env.connect()
            assert (await c.request("GET", PODS)).status == 200
            c.send(build_request("GET", PODS))
            head = await read_head(c.reader)
            assert head[0].startswith("HTTP/1.1 200")
            rest = await c.reader.read()
            assert rest == b"0123456789"            # then the connection closes: 90 bytes short
            event = env.audit_events()[-1]
            assert event["code"] == 200 and "closed the connection" in event["error"]
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
            c = await env.connect()
            assert (await c.request("GET", PODS)).body == b"data"

            def broken(event):
                raise OSError("disk full")

            env.worker.audit.append = broken
            c.send(build_request("GET", PODS))
            head = await read_head(c.reader)
            assert head[0].startswith("HTTP/1.1 200")
            rest = await c.reader.read()          # the body never gets its last chunk
            assert b"0\r\n\r\n" not in rest
            assert env.worker.upstreams.idle_count() == 0
        finally:
            del env.worker.audit.append
            await env.close()

    run(body)


def test_pipelined_requests_on_the_fast_path_answer_in_order(tmp_path):
    async def body():
        env = await make_env(tmp_path, {"alpha": echo_handler})
        try:
            c = await env.connect()
            assert (await c.request("GET", PODS)).status == 200
            c.send(b"".join(build_request("GET", f"{PODS}/p{i}") for i in range(4)))
            targets = [(await c.response()).json()["target"] for _ in range(4)]
            assert targets == [f"/api/v1/namespaces/default/pods/p{i}" for i in range(4)]
        finally:
            await env.close()

    run(body)


def test_revocation_ends_a_response_still_arriving_on_the_fast_path(tmp_path):
    from .test_policy_enforcement import apply_policy, cluster_named

    async def body():
        requests = [0]

        async def slow_list(req, reader, writer):
            requests[0] += 1
            if requests[0] == 1:
                _small(writer)
                await writer.drain()
                return True
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n6\r\n{\"a\":1\r\n")
            await writer.drain()
            await reader.read(1)                   # holds the rest until the gateway lets go
            return False

        env = await make_env(tmp_path, {"alpha": slow_list})
        try:
            c = await env.connect()
            assert (await c.request("GET", PODS)).status == 200
            c.send(build_request("GET", PODS))
            assert (await read_head(c.reader))[0].startswith("HTTP/1.1 200")
            await c.reader.readuntil(b'{"a":1\r\n')
            assert len(env.worker.gateway.live) == 1
            apply_policy(env, lambda data: cluster_named(data, "alpha").update(kubectl_enabled=False))
            async with asyncio.timeout(10):       # the body ends with its last chunk, then the connection
                assert (await c.reader.read()).endswith(b"0\r\n\r\n")
            assert len(env.worker.gateway.live) == 0
            event = env.audit_events()[-1]
            assert event["session_ended_by"] == "revoked" and "kubectl access disabled" in event["revocation"]
            assert env.worker.upstreams.idle_count() == 0
        finally:
            await env.close()

    run(body)
