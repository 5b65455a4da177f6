"""The data path's shortcuts keep the behaviour of the slow path they replace: one write per small
response, the lazy keep-alive/head timer, cached header blocks, request ids and timestamps."""
from __future__ import annotations

import asyncio
import datetime
import random
import time
import uuid

import pytest

from dataplane import headers as hdrs
from dataplane.http1 import HTTP1Protocol
from dataplane.pipeline import _iso, _request_id
from dataplane.status import StatusError
from tests.dataplane.gateway.helpers import build_request, make_env, run

from .test_units import FakeTransport

PODS = "/clusters/alpha/api/v1/namespaces/default/pods"


class CountingTransport(FakeTransport):
    def __init__(self):
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data):
        super().write(data)
        self.writes.append(bytes(data))


async def _serve_one(handler) -> CountingTransport:
    """One request through an HTTP1Protocol on a fake transport; the handler's task finished."""
    done = asyncio.Event()

    async def wrapped(request, response):
        try:
            await handler(request, response)
        finally:
            done.set()

    protocol = HTTP1Protocol(wrapped)
    transport = CountingTransport()
    protocol.connection_made(transport)
    protocol.data_received(b"GET /x HTTP/1.1\r\nhost: g\r\n\r\n")
    async with asyncio.timeout(5):
        await done.wait()
    await asyncio.sleep(0)      # the handler task's own finish
    return transport


def test_small_response_leaves_in_one_write():
    async def body():
        async def handler(request, response):
            await response.start(200, [(b"content-length", b"5")])
            await response.write(b"hello")
            await response.end()

        transport = await _serve_one(handler)
        assert transport.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"]

        async def chunked(request, response):
            await response.start(200, [])
            await response.write(b"hello")
            await response.end()

        transport = await _serve_one(chunked)
        assert len(transport.writes) == 2
        assert b"".join(transport.writes) == (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                                              b"5\r\nhello\r\n0\r\n\r\n")

    run(body)


def test_head_leaves_alone_when_the_body_is_not_ready():
    """A watch with no event yet: the client must see the head at once, not with the first event."""
    async def body():
        seen = asyncio.Event()
        heads: list[bytes] = []

        async def watch(request, response):
            await response.start(200, [])
            await asyncio.sleep(0)              # one turn of the loop: nothing to send yet
            await asyncio.sleep(0)
            heads.extend(transport.writes)
            seen.set()
            await response.write(b"{}\n")
            await response.end()

        protocol = HTTP1Protocol(watch)
        transport = CountingTransport()
        protocol.connection_made(transport)
        protocol.data_received(b"GET /x?watch=true HTTP/1.1\r\nhost: g\r\n\r\n")
        async with asyncio.timeout(5):
            await seen.wait()
        assert heads == [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"]

    run(body)


def test_idle_keepalive_connection_closes_and_a_slow_second_head_times_out(tmp_path):
    async def body():
        env = await make_env(tmp_path, keepalive_timeout=0.5, head_timeout=0.3)
        try:
            idle = await env.connect()
            assert (await idle.request("GET", PODS)).status == 200
            started = time.monotonic()
            assert await idle.closed()
            assert time.monotonic() - started < 5

            slow = await env.connect()
            assert (await slow.request("GET", PODS)).status == 200
            slow.send(b"GET " + PODS.encode() + b" HTTP/1.1\r\nHost: g\r\n")   # never completes
            started = time.monotonic()
            r = await slow.response()
            assert r.status == 408 and time.monotonic() - started < 5
            assert await slow.closed()

            busy = await env.connect()     # requests in a row are never cut by the idle timer
            deadline = time.monotonic() + 1.2
            while time.monotonic() < deadline:
                assert (await busy.request("GET", PODS)).status == 200
        finally:
            await env.close()

    run(body)


def test_iso_matches_datetime():
    rng = random.Random(5)
    stamps = [0.0, 1.9995, 1.9999995, 2e9 + 0.0004999, time.time()]
    stamps += [rng.uniform(0, 4e9) for _ in range(2000)]
    stamps += [rng.randrange(0, 4_000_000_000) + rng.choice((0.9999995, 0.0000005, 0.9995)) for _ in range(2000)]
    for ts in stamps:
        expected = datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).isoformat(
            timespec="milliseconds").replace("+00:00", "Z")
        assert _iso(ts) == expected, ts


def test_request_ids_are_random_v4_uuids():
    ids = {_request_id() for _ in range(2000)}
    assert len(ids) == 2000
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_impersonation_block_is_cached_and_still_refuses_control_characters():
    imp = hdrs.Impersonate("alice", ("devs", "ops"), "u-1", (("scopes", ("a", "b")),))
    first = hdrs.impersonation_block(imp)
    assert hdrs.impersonation_block(hdrs.Impersonate("alice", ("devs", "ops"), "u-1",
                                                     (("scopes", ("a", "b")),))) is first
    assert list(first) == [(b"impersonate-user", b"alice"), (b"impersonate-group", b"devs"),
                           (b"impersonate-group", b"ops"), (b"impersonate-uid", b"u-1"),
                           (b"impersonate-extra-scopes", b"a"), (b"impersonate-extra-scopes", b"b")]
    out = hdrs.upstream_request_headers([], host=b"h", token=None, impersonate=imp, request_id="r-1",
                                        client_ip="")
    assert (b"impersonate-extra-accesspoint.io%2Frequest-id", b"r-1") in out
    for _ in range(2):     # a refusal is not cached as a success
        with pytest.raises(StatusError):
            hdrs.impersonation_block(hdrs.Impersonate("eve\r\nx: y", ()))


def test_plain_path_shortcut_accepts_exactly_the_allowed_characters():
    from dataplane import routing

    for char in map(chr, range(0x300)):
        assert bool(routing._PLAIN.fullmatch("/a" + char)) == (char in routing._ALLOWED), repr(char)
    assert routing._decode("/api/v1/namespaces/default/pods/web-0") == "/api/v1/namespaces/default/pods/web-0"
    assert routing._decode("/api/%61pi") == "/api/api"


def test_idle_upstream_connections_are_swept_after_the_idle_timeout(tmp_path):
    async def body():
        env = await make_env(tmp_path, upstream_idle_timeout=0.3)
        try:
            c = await env.connect()
            for _ in range(3):
                assert (await c.request("GET", PODS)).status == 200
            assert env.worker.upstreams.idle_count("alpha") == 1      # one connection, reused
            deadline = time.monotonic() + 5
            while env.worker.upstreams.idle_count("alpha"):
                assert time.monotonic() < deadline, "the idle connection was never closed"
                await asyncio.sleep(0.05)
            assert (await c.request("GET", PODS)).status == 200       # a new one is dialled
        finally:
            await env.close()

    run(body)


def test_a_forked_worker_never_reuses_its_parents_random_bytes():
    import os

    _request_id()                       # the parent's pool now holds bytes for later ids
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:                        # the child: its next id, then leave at once
        os.write(write_end, _request_id().encode())
        os._exit(0)
    os.close(write_end)
    child_id = os.read(read_end, 100).decode()
    os.close(read_end)
    os.waitpid(pid, 0)
    assert uuid.UUID(child_id).version == 4
    assert child_id != _request_id()
