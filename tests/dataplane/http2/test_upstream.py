"""Upstream HTTP/2 to the fake API server: multiplexing, and a connection that dies silently
mid-watch (a frozen TCP path) is detected by the health PINGs."""
from __future__ import annotations

import asyncio
import time

import pytest

from dataplane.pki import CertificateAuthority
from tests.dataplane.gateway.helpers import build_request, make_env, read_head, run
from tests.fakekube.server import FakeKube

from .test_downstream import h2_connect

CMS = "/clusters/alpha/api/v1/namespaces/default/configmaps"
PING_INTERVAL, PING_TIMEOUT = 0.2, 0.3


class FreezableProxy:
    """A TCP relay; `freeze()` silently stops relaying on the connections open so far (a dead
    path: no FIN, no RST), while new connections still work."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.frozen: set = set()
        self.live: list = []
        self.tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def freeze(self) -> None:
        self.frozen.update(self.live)

    async def _relay(self, reader, writer) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        pair = object()
        self.live.append(pair)

        async def pipe(src, dst):
            while data := await src.read(65536):
                if pair not in self.frozen:
                    dst.write(data)
        tasks = [asyncio.ensure_future(pipe(reader, up_writer)), asyncio.ensure_future(pipe(up_reader, writer))]
        self.tasks.update(tasks)
        await asyncio.gather(*tasks, return_exceptions=True)
        for w in (writer, up_writer):
            w.close()

    async def close(self) -> None:
        self._server.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def h2_cluster(tmp_path, upstream_http2="always"):
    ca = CertificateAuthority.create("fake cluster")
    ca.issue_server(["127.0.0.1"]).write(tmp_path / "kube.crt", tmp_path / "kube.key")
    fake = FakeKube(cert=tmp_path / "kube.crt", key=tmp_path / "kube.key", http2=True,
                    gateway_token="gateway-token-alpha", rbac={"users": {"alice": "admin"}})
    await fake.start()
    proxy = FreezableProxy(fake.port)
    await proxy.start()
    env = await make_env(tmp_path, {}, unreachable={"alpha": proxy.port}, cluster_ca=ca,
                         upstream_ping_interval=PING_INTERVAL, upstream_ping_timeout=PING_TIMEOUT,
                         upstream_http2=upstream_http2)
    return fake, proxy, env


def test_requests_are_multiplexed_on_one_upstream_h2_connection(tmp_path):
    async def body():
        fake, proxy, env = await h2_cluster(tmp_path)
        try:
            c = await h2_connect(env)
            watches = [c.request("GET", CMS + "?watch=true") for _ in range(5)]
            lists = [c.request("GET", CMS) for _ in range(20)]
            for sid in lists:
                assert (await c.response(sid)).status == 200
            fake.store.create({"apiVersion": "v1", "kind": "ConfigMap",
                               "metadata": {"name": "seen", "namespace": "default"}})
            for sid in watches:
                await c.wait(lambda sid=sid: b'"seen"' in c.streams[sid].body, "the watch event")
            assert fake.alpn_counts == {"h2": 1}
            assert len(env.worker.upstreams.h2_connections("alpha")) == 1
        finally:
            await env.close()
            await proxy.close()
            await fake.stop()
    run(body)


def test_by_default_only_watches_and_logs_use_upstream_h2(tmp_path):
    """--upstream-http2 streams: long-lived responses get h2's health PINGs, the rest the
    cheaper HTTP/1.1 keep-alive pool."""
    async def body():
        fake, proxy, env = await h2_cluster(tmp_path, upstream_http2="streams")
        try:
            c = await env.connect()
            for _ in range(3):     # one pooled connection, reused
                assert (await c.request("GET", CMS)).status == 200
            n = await h2_connect(env)
            watch = n.request("GET", CMS + "?watch=true")
            assert (await n.get(CMS)).status == 200
            assert (await n.get(CMS)).status == 200
            await n.wait(lambda: n.streams[watch].status == 200, "the watch's headers")
            assert fake.alpn_counts == {"http/1.1": 1, "h2": 1}
            assert len(env.worker.upstreams.h2_connections("alpha")) == 1
        finally:
            await env.close()
            await proxy.close()
            await fake.stop()
    run(body)


@pytest.mark.parametrize("downstream", ["h2", "http/1.1"])
def test_upstream_connection_dying_mid_watch_ends_the_watch_cleanly(tmp_path, downstream):
    async def body():
        fake, proxy, env = await h2_cluster(tmp_path)
        try:
            if downstream == "h2":
                c = await h2_connect(env)
                sid = c.request("GET", CMS + "?watch=true")
                await c.wait(lambda: c.streams[sid].status == 200, "the watch's headers")
            else:
                c = await env.connect()
                c.send(build_request("GET", CMS + "?watch=true"))
                assert (await read_head(c.reader))[0].startswith("HTTP/1.1 200")
            proxy.freeze()
            frozen_at = time.monotonic()
            if downstream == "h2":
                await c.wait(lambda: c.streams[sid].done, "the watch to end")
                assert c.streams[sid].ended            # END_STREAM: client-go resumes the watch
            else:
                tail = await c.reader.readuntil(b"0\r\n\r\n")   # the chunked body's clean end
                assert tail.endswith(b"0\r\n\r\n")
            took = time.monotonic() - frozen_at
            assert took < PING_INTERVAL + PING_TIMEOUT + 1.0, took
            # the dead connection is gone; a new request dials a new one and succeeds
            n = await h2_connect(env)
            assert (await n.get(CMS)).status == 200
            assert fake.alpn_counts["h2"] == 2
            watch = [e for e in env.audit_events() if e["verb"] == "watch"][-1]
            assert watch["code"] == 200 and "PING" in watch["error"]
        finally:
            await env.close()
            await proxy.close()
            await fake.stop()
    run(body)


def test_has_room_counts_streams_without_walking_h2s_stream_table(monkeypatch):
    """The pool asks every connection of a cluster for room on each new stream: that must not
    cost a walk over every open stream (h2's open_outbound_streams), except right at the limit."""
    import h2.connection
    import h2.settings

    from dataplane.upstream_h2 import H2UpstreamConnection, NegotiatingPool

    walks, h2_open = [], [0]
    monkeypatch.setattr(h2.connection.H2Connection, "open_outbound_streams",
                        property(lambda self: walks.append(1) or h2_open[0]))

    async def body():
        pool = NegotiatingPool(secrets_dir=None)
        conn = H2UpstreamConnection(("alpha", 1), asyncio.get_running_loop(), pool)
        conn.conn.remote_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 100})
        conn.streams = {2 * i + 1: object() for i in range(50)}
        assert conn.has_room and not walks
        conn.streams = {2 * i + 1: object() for i in range(100)}
        assert not conn.has_room and not walks          # at the limit: full, no walk either
        conn.streams = {2 * i + 1: object() for i in range(95)}
        h2_open[0] = 100                                 # near the limit, h2's exact count decides
        assert not conn.has_room and len(walks) == 1
        h2_open[0] = 95
        assert conn.has_room and len(walks) == 2
        conn.goaway = True
        assert not conn.has_room
    run(body)


def test_a_new_revision_drops_what_the_pool_kept_for_older_ones(tmp_path):
    """A gateway sees a revision per policy change: nothing per (cluster, revision) may pile up."""
    import copy

    from dataplane.snapshot import Snapshot

    async def body():
        fake, proxy, env = await h2_cluster(tmp_path)
        try:
            pool = env.worker.upstreams
            c = await h2_connect(env)
            assert (await c.get(CMS)).status == 200
            first = env.worker.holder.current.revision
            [old] = pool.h2_connections("alpha")
            for bump in (1, 2):
                data = copy.deepcopy(env.worker.holder.current.data)
                data["revision"] = first + bump
                assert env.worker.holder.apply(Snapshot(data))
                assert (await c.get(CMS)).status == 200
            latest = first + 2
            assert set(pool.protocols) == {("alpha", latest)}
            assert {conn.key for conn in pool.h2_connections()} == {("alpha", latest)}
            assert old.closed   # idle when its revision was left behind
        finally:
            await env.close()
            await proxy.close()
            await fake.stop()
    run(body)
