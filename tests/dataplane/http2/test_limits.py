"""HTTP/2 floods and limits: rapid reset, oversized header lists / HPACK bombs, graceful drain."""
from __future__ import annotations

import asyncio
import tracemalloc

import h2.errors
from h2.connection import ConnectionState

from dataplane.http2 import Keepalive, ResetBudget
from tests.dataplane.gateway.helpers import echo_handler, make_env, run

from .test_downstream import PODS, h2_connect


def test_rapid_reset_flood_gets_goaway_with_memory_bounded(tmp_path):
    """Handlers of reset streams count against the stream limit until they end, so the work a
    flood causes is bounded by http2_max_streams, whatever the number of resets."""
    async def body():
        env = await make_env(tmp_path, http2_max_streams=20)
        try:
            c = await h2_connect(env)
            assert (await c.get(PODS)).status == 200
            tracemalloc.start()
            try:
                base, _ = tracemalloc.get_traced_memory()
                tracemalloc.reset_peak()
                for _ in range(40):                      # up to 2000 HEADERS+RST_STREAM pairs
                    if c.closed:
                        break
                    for _ in range(50):
                        sid = c.conn.get_next_available_stream_id()
                        c.conn.send_headers(sid, [(b":method", b"GET"), (b":scheme", b"https"),
                                                  (b":authority", b"gw"), (b":path", PODS.encode())])
                        c.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
                    c._flush()
                    await c.writer.drain()
                await c.wait_closed()
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert c.goaway is not None and c.goaway.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
            assert peak - base < 8 * 1024 * 1024, f"the flood grew the gateway by {peak - base} bytes"
            # a new connection is served
            c2 = await h2_connect(env)
            assert (await c2.get(PODS)).status == 200
        finally:
            await env.close()
    run(body)


def test_reset_budget_counts_per_window():
    now = [0.0]
    budget = ResetBudget(limit=3, window=10, clock=lambda: now[0])
    assert all(budget.spend() for _ in range(3)) and not budget.spend()
    now[0] = 10.0
    assert budget.spend()                                # a new window


def test_keepalive_pings_only_with_streams_and_declares_silence_dead():
    k = Keepalive(interval=30, timeout=15, idle_timeout=60, now=0)
    k.streams_changed(1, 0)
    assert k.tick(29, 1) is None and k.tick(30, 1) == Keepalive.PING
    assert k.tick(44, 1) is None and k.tick(45, 1) == Keepalive.DEAD
    k.acked()
    k.received(50)
    assert k.tick(60, 1) is None
    k.streams_changed(0, 61)
    assert k.tick(120, 0) is None and k.tick(121, 0) == Keepalive.IDLE


def test_oversized_header_list_and_hpack_bomb_are_refused(tmp_path):
    async def body():
        env = await make_env(tmp_path)
        try:
            for headers in ([("x-big", "a" * 70000)],                    # one huge field
                            [("x-bomb", "b" * 4000)] * 40):              # tiny encoded, 160 KB decoded
                c = await h2_connect(env)
                c.request("GET", PODS, headers)
                await c.wait_closed()
                assert c.goaway is not None and c.goaway.error_code in (
                    h2.errors.ErrorCodes.ENHANCE_YOUR_CALM, h2.errors.ErrorCodes.PROTOCOL_ERROR,
                    h2.errors.ErrorCodes.COMPRESSION_ERROR), c.goaway
            assert not env.upstreams["alpha"].requests, "an oversized request reached the cluster"
        finally:
            await env.close()
    run(body)


def test_goaway_on_drain_lets_the_in_flight_stream_finish(tmp_path):
    release = asyncio.Event()
    reached = asyncio.Event()

    async def slow(req, reader, writer) -> bool:
        reached.set()
        await release.wait()
        return await echo_handler(req, reader, writer)

    async def body():
        env = await make_env(tmp_path, {"alpha": slow})
        try:
            c = await h2_connect(env)
            sid = c.request("GET", PODS)
            await reached.wait()
            drain = asyncio.ensure_future(env.worker.server.drain(grace=10))
            await c.wait(lambda: c.goaway is not None, "GOAWAY")
            assert c.goaway.error_code == 0 and c.goaway.last_stream_id == sid
            # h2 (the client library) stops at any GOAWAY; real clients (Go's, kubectl) finish the
            # streams up to last_stream_id, and so does this one
            c.conn.state_machine.state = ConnectionState.CLIENT_OPEN
            late = c.request("GET", PODS)
            await c.wait(lambda: c.streams[late].done, "the late stream's refusal")
            assert c.streams[late].reset == h2.errors.ErrorCodes.REFUSED_STREAM
            release.set()
            r = await c.response(sid)
            assert r.ended and r.status == 200
            await drain
            await c.wait_closed()
        finally:
            await env.close()
    run(body)


class _RecordingTransport:
    """Just enough of an asyncio transport for H2Protocol; keeps every write."""

    def __init__(self):
        self.writes: list[bytes] = []

    def get_extra_info(self, name, default=None):
        return default

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


def test_responses_answered_in_one_loop_turn_leave_in_one_write_and_large_data_at_once():
    """Small responses of streams answered in the same turn of the event loop are batched into
    one transport write (one TLS record, one syscall); DATA beyond DATA_FLUSH_AT is written
    without waiting for the turn to end, so that the transport's buffer stays the backpressure
    signal."""
    import h2.config
    import h2.connection
    import h2.events
    import h2.settings

    from dataplane.http2 import DATA_FLUSH_AT, H2Protocol

    big = b"x" * (DATA_FLUSH_AT + 1)

    async def handler(request, response):
        await response.start(200, [(b"content-type", b"text/plain")])
        await response.write(big if request.target == "/big" else b"small")
        await response.end()

    async def body():
        server = H2Protocol(handler)
        transport = _RecordingTransport()
        server.connection_made(transport)
        client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        client.initiate_connection()
        client.increment_flow_control_window(2 * DATA_FLUSH_AT)
        client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2 * DATA_FLUSH_AT})
        server.data_received(client.data_to_send())
        client.receive_data(b"".join(transport.writes))
        for path in ("/a", "/b", "/c"):
            client.send_headers(client.get_next_available_stream_id(),
                                [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"gw"),
                                 (b":path", path.encode())], end_stream=True)
        transport.writes.clear()
        server.data_received(client.data_to_send())
        await asyncio.sleep(0)          # yield one loop turn: the handlers run, their flush is scheduled
        await asyncio.sleep(0)          # and the next one: the scheduled flush ran
        assert len(transport.writes) == 1, len(transport.writes)
        ended = [e.stream_id for e in client.receive_data(transport.writes[0])
                 if isinstance(e, h2.events.StreamEnded)]
        assert ended == [1, 3, 5]

        client.send_headers(7, [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"gw"),
                                (b":path", b"/big")], end_stream=True)
        transport.writes.clear()
        server.data_received(client.data_to_send())
        for _ in range(3):
            await asyncio.sleep(0)
        received = sum(len(e.data) for w in transport.writes for e in client.receive_data(w)
                       if isinstance(e, h2.events.DataReceived))
        assert received == len(big)
        assert len(transport.writes) >= 2    # the first DATA_FLUSH_AT bytes did not wait for the turn
        server.connection_lost(None)
    run(body)
