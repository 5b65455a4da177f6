"""The splice ending a session itself (sessionend.py through splice.py), with in-memory pipes:
the frame in flight is finished, the reason goes on the error channel, the protocol's close
follows, and the client gets its moment to hang up."""
from __future__ import annotations

import asyncio
import json

import pytest
from wsproto.frame_protocol import FrameProtocol, Opcode

from dataplane import sessionend, wsframes
from dataplane.splice import SpliceStats, splice
from tests.fakekube import spdy

WS_HEAD = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n"
SPDY_HEAD = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n"


class Pipe:
    """One direction: `read` as the splice's readers; `waiting` is set while a read waits."""

    def __init__(self):
        self._chunks: asyncio.Queue[bytes] = asyncio.Queue()
        self.waiting = asyncio.Event()

    def send(self, data: bytes) -> None:
        self._chunks.put_nowait(data)

    async def read(self, limit: int = -1) -> bytes:
        if self._chunks.empty():
            self.waiting.set()
        try:
            data = await self._chunks.get()
        finally:
            self.waiting.clear()
        if not data:
            self._chunks.put_nowait(b"")    # the end stays the end, as on a real connection
        return data


class Sink:
    def __init__(self):
        self.data = bytearray()
        self.closed = False

    async def write(self, data: bytes) -> None:
        self.data += data

    def can_write_eof(self) -> bool:
        return False

    def write_eof(self) -> None:
        self.closed = True

    def close(self) -> None:
        self.closed = True


class Session:
    def __init__(self, ending):
        self.client, self.upstream = Pipe(), Pipe()
        self.to_client, self.to_upstream = Sink(), Sink()
        self.stats = SpliceStats()
        self.ending = ending
        self.task = asyncio.ensure_future(splice(self.client, self.to_client, self.upstream, self.to_upstream,
                                                 self.stats, ending))

    async def server_idle(self) -> None:
        """Until the server → client pump waits for more (everything sent has been forwarded)."""
        async with asyncio.timeout(5):
            while not (self.upstream.waiting.is_set() and self.upstream._chunks.empty()):
                await asyncio.sleep(0)

    async def client_idle(self) -> None:
        async with asyncio.timeout(5):
            while not (self.client.waiting.is_set() and self.client._chunks.empty()):
                await asyncio.sleep(0)

    async def lingering(self) -> None:
        """Until the gateway has ended the session and waits for the client to hang up."""
        async with asyncio.timeout(5):
            while not (self.stats.ended_by == "gateway" and self.client.waiting.is_set()):
                await asyncio.sleep(0)


def ws_frames(data: bytes):
    proto = FrameProtocol(client=True, extensions=[])
    proto.receive_bytes(data)
    return [(f.opcode, f.payload, f.message_finished) for f in proto.received_frames()]


def run(coro):
    asyncio.run(asyncio.wait_for(coro, 20))


def test_a_websocket_session_ends_after_the_frame_in_flight_with_the_reason_and_a_normal_close():
    async def body():
        session = Session(sessionend.for_upgrade(b"websocket", WS_HEAD))
        stdout = wsframes.frame(wsframes.OP_BINARY, b"\x01" + b"o" * 100_000)
        session.upstream.send(stdout[:30_000])
        await session.server_idle()
        session.ending.end("authentication refused: revoked", "credentials revoked")
        session.upstream.send(stdout[30_000:] + wsframes.frame(wsframes.OP_BINARY, b"\x01never forwarded"))
        await session.lingering()             # the client may still talk
        session.client.send(b"ignored")
        await session.lingering()
        assert not session.task.done()
        session.client.send(b"")              # the client hangs up
        stats = await session.task

        frames = ws_frames(bytes(session.to_client.data))
        assert [op for op, _, _ in frames] == [Opcode.BINARY, Opcode.BINARY, Opcode.CLOSE]
        assert frames[0][1] == b"\x01" + b"o" * 100_000
        channel, status = frames[1][1][0], json.loads(frames[1][1][1:])
        assert channel == 3
        assert status == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                          "message": "session ended by AccessPoint: credentials revoked",
                          "reason": "Unauthorized", "code": 401}
        assert tuple(frames[2][1]) == (1000, "")
        assert stats.ended_by == "gateway" and stats.bytes_out == len(stdout)
        assert session.to_upstream.closed

    run(body())


@pytest.mark.parametrize("protocol, expected", [
    ("v4.channel.k8s.io", (Opcode.BINARY, b"\x03{")),
    ("v3.channel.k8s.io", (Opcode.BINARY, b"\x03session ended by AccessPoint: no longer allowed")),
    ("base64.channel.k8s.io", (Opcode.TEXT, b"3")),
])
def test_the_error_channel_speaks_the_negotiated_protocol(protocol, expected):
    ending = sessionend.for_upgrade(b"websocket", WS_HEAD.replace(b"v5.channel.k8s.io", protocol.encode()))
    ending.end("no longer allowed: no binding allows it", "no longer allowed")
    opcode, payload, _ = ws_frames(ending.closing())[0]
    assert opcode == expected[0] and bytes(payload.encode() if isinstance(payload, str) else payload).startswith(expected[1])


def test_a_fragmented_message_is_closed_and_a_closing_server_gets_nothing_added():
    ending = sessionend.for_upgrade(b"websocket", WS_HEAD)
    ending.end("cluster removed", "cluster removed")
    half = wsframes.frame(wsframes.OP_BINARY, b"\x01half", fin=False)
    ending.server.feed(half)
    opcodes = [(op, fin) for op, _, fin in ws_frames(half + ending.closing())]
    # wsproto names a continuation by its message's opcode: the half message ends, then ours
    assert opcodes == [(Opcode.BINARY, False), (Opcode.BINARY, True), (Opcode.BINARY, True), (Opcode.CLOSE, True)]
    ending.server.feed(wsframes.close_frame(1000))
    assert ending.closing() == b""

    tunnel = sessionend.for_upgrade(b"websocket", WS_HEAD.replace(b"v5.channel.k8s.io", b"SPDY/3.1+portforward.k8s.io"))
    tunnel.end("cluster removed", "cluster removed")
    [(opcode, payload, _)] = ws_frames(tunnel.closing())
    assert opcode == Opcode.CLOSE and tuple(payload) == (1008, "session ended by AccessPoint: cluster removed")


def test_a_spdy_session_ends_with_the_status_on_the_error_stream_fin_on_the_others_and_goaway():
    async def body():
        session = Session(sessionend.for_upgrade(b"spdy/3.1", SPDY_HEAD))
        writer = spdy.FrameWriter()
        for sid, kind in ((1, "error"), (3, "stdin"), (5, "stdout"), (7, "stderr")):
            session.client.send(writer.encode(spdy.SynStream(sid, {"streamtype": [kind]})))
        server = spdy.FrameWriter()
        session.upstream.send(server.encode(spdy.Data(7, b"", spdy.FLAG_FIN))
                              + server.encode(spdy.Data(5, b"partial stdout"))[:10])
        await session.client_idle()
        await session.server_idle()
        session.ending.end('no longer allowed: cluster "a" has kubectl access disabled',
                           'cluster "a" has kubectl access disabled')
        session.upstream.send(server.encode(spdy.Data(5, b"partial stdout"))[10:] + b"dropped")
        await session.lingering()
        session.client.send(b"")
        await session.task

        frames = spdy.FrameParser().feed(bytes(session.to_client.data))
        assert frames[:2] == [spdy.Data(7, b"", spdy.FLAG_FIN), spdy.Data(5, b"partial stdout")]
        error, *rest = frames[2:]
        assert error.stream_id == 1 and error.flags == spdy.FLAG_FIN
        status = json.loads(error.data)
        assert (status["reason"], status["code"]) == ("Forbidden", 403)
        assert status["message"] == 'session ended by AccessPoint: cluster "a" has kubectl access disabled'
        assert rest == [spdy.Data(3, b"", spdy.FLAG_FIN), spdy.Data(5, b"", spdy.FLAG_FIN), spdy.GoAway(7, 0)]

    run(body())


def test_an_ending_asked_for_before_the_splice_starts_ends_it_at_once():
    async def body():
        ending = sessionend.for_upgrade(b"websocket", WS_HEAD)
        ending.end("authentication refused: unknown_token", "credentials no longer accepted")
        session = Session(ending)
        await session.lingering()
        session.client.send(b"")
        await session.task
        assert [op for op, _, _ in ws_frames(bytes(session.to_client.data))] == [Opcode.BINARY, Opcode.CLOSE]

    run(body())


def test_a_frame_that_never_completes_ends_the_session_without_a_message(monkeypatch):
    monkeypatch.setattr(sessionend, "BOUNDARY_WAIT", 0.05)

    async def body():
        session = Session(sessionend.for_upgrade(b"websocket", WS_HEAD))
        session.upstream.send(wsframes.frame(wsframes.OP_BINARY, b"\x01" + b"o" * 1000)[:500])
        await session.server_idle()
        session.ending.end("cluster removed", "cluster removed")
        session.client.send(b"")
        await session.task
        assert len(session.to_client.data) == 500        # the torn frame is all there is

    run(body())


def test_unknown_upgrades_have_no_ending():
    assert sessionend.for_upgrade(b"h2c", b"HTTP/1.1 101 Switching Protocols\r\n\r\n") is None
