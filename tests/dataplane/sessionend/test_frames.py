"""The frame walkers of the splice (framewalk.py, wsframes.py, spdyframes.py): boundaries found
whatever way the bytes are split, payloads never mistaken for headers, the SPDY client's stream
types learnt from compressed header blocks, and the bounds."""
from __future__ import annotations

import os
import random
import struct

import pytest

from dataplane import spdyframes, wsframes
from tests.fakekube import spdy


def masked(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A client frame (masked), with the long length forms where the payload needs them."""
    key = os.urandom(4)
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    plain = wsframes.frame(opcode, payload, fin)
    header_end = len(plain) - len(payload)
    head = bytearray(plain[:header_end])
    head[1] |= 0x80
    return bytes(head) + key + body


def ws_stream() -> tuple[bytes, list[int]]:
    """Frames of every header form, a fragmented message with a PING inside; and the offsets
    at which each frame ends."""
    frames = [
        wsframes.frame(wsframes.OP_BINARY, b"\x01hello"),
        wsframes.frame(wsframes.OP_BINARY, b"\x01" + b"x" * 300),               # 16-bit length
        wsframes.frame(wsframes.OP_BINARY, b"\x02" + os.urandom(70_000)),       # 64-bit length
        wsframes.frame(wsframes.OP_BINARY, b""),                                 # empty payload
        masked(wsframes.OP_BINARY, b"\x01" + b"\x81\x7f" * 200),               # looks like headers
        wsframes.frame(wsframes.OP_BINARY, b"\x01part one,", fin=False),
        wsframes.frame(0x9, b"ping"),
        wsframes.frame(wsframes.OP_CONTINUATION, b" part two"),
    ]
    ends, pos = [], 0
    for f in frames:
        pos += len(f)
        ends.append(pos)
    return b"".join(frames), ends


def splits(data: bytes, rng: random.Random) -> list[bytes]:
    chunks, pos = [], 0
    while pos < len(data):
        n = rng.choice((1, 2, 3, 7, 100, 5000, 65536))
        chunks.append(data[pos:pos + n])
        pos += n
    return chunks


@pytest.mark.parametrize("seed", range(8))
def test_websocket_boundaries_are_found_however_the_frames_are_split(seed):
    data, ends = ws_stream()
    walker, pos = wsframes.WsFrames(), 0
    for chunk in splits(data, random.Random(seed)):
        assert walker.feed(chunk) == len(chunk)
        pos += len(chunk)
        assert walker.at_boundary == (pos in ends)
    assert walker.at_boundary and not walker.in_message and not walker.close_seen


def test_a_websocket_fragmented_message_is_followed_across_control_frames():
    walker = wsframes.WsFrames()
    walker.feed(wsframes.frame(wsframes.OP_BINARY, b"\x01a", fin=False))
    assert walker.at_boundary and walker.in_message
    walker.feed(wsframes.frame(0xA, b"pong"))
    assert walker.in_message
    walker.feed(wsframes.frame(wsframes.OP_CONTINUATION, b"b"))
    assert not walker.in_message
    walker.feed(wsframes.close_frame(1000))
    assert walker.close_seen


@pytest.mark.parametrize("seed", range(8))
def test_stopping_at_a_websocket_boundary_takes_exactly_the_rest_of_the_frame(seed):
    data, ends = ws_stream()
    rng = random.Random(seed)
    cut = rng.randrange(1, len(data))
    walker = wsframes.WsFrames()
    walker.feed(data[:cut])
    following = next(end for end in ends if end >= cut)
    taken = 0
    for chunk in splits(data[cut:], rng):
        n = walker.feed(chunk, stop_at_boundary=True)
        taken += n
        if walker.at_boundary:
            break
        assert n == len(chunk)
    assert cut + taken == following
    assert walker.feed(data[following:], stop_at_boundary=True) == 0     # already at one


def client_spdy() -> tuple[bytes, dict[int, str]]:
    """What kubectl sends for `exec -i` over SPDY: five SYN_STREAMs sharing one zlib context,
    stdin DATA, a reset stream, a PING and an unknown control frame."""
    writer = spdy.FrameWriter()
    out = bytearray()
    types = {1: "error", 3: "stdin", 5: "stdout", 7: "stderr", 9: "resize"}
    for sid, kind in types.items():
        out += writer.encode(spdy.SynStream(sid, {"streamtype": [kind]}))
    out += writer.encode(spdy.Data(3, b"\x80\x03\x00\x01" * 5000))       # looks like control frames
    out += writer.encode(spdy.RstStream(9, spdy.RstStatus.CANCEL))
    out += writer.encode(spdy.Ping(1))
    out += struct.pack(">HHI", 0x8003, 10, 4) + b"abcd"                  # CREDENTIAL: ignored
    out += writer.encode(spdy.SynStream(11, {"streamtype": ["data"], "port": ["80"]}))
    del types[9]
    types[11] = "data"
    return bytes(out), types


@pytest.mark.parametrize("seed", range(8))
def test_the_spdy_client_walker_learns_stream_types_however_the_frames_are_split(seed):
    data, types = client_spdy()
    walker = spdyframes.ClientFrames()
    for chunk in splits(data, random.Random(seed)):
        walker.feed(chunk)
    assert not walker.failed
    assert walker.streams == types
    assert walker.last_stream == 11 and walker.at_boundary


def test_the_spdy_server_walker_sees_finished_streams_and_goaway():
    writer = spdy.FrameWriter()
    data = (writer.encode(spdy.SynReply(1, {})) + writer.encode(spdy.Data(5, b"out" * 30000))
            + writer.encode(spdy.Data(5, b"", spdy.FLAG_FIN)) + writer.encode(spdy.Data(7, b"x")))
    walker = spdyframes.ServerFrames()
    for chunk in splits(data, random.Random(1)):
        walker.feed(chunk)
    assert walker.finished == {5} and not walker.goaway_seen and walker.at_boundary
    walker.feed(writer.encode(spdy.GoAway(0))[:5])
    assert not walker.at_boundary
    walker.feed(writer.encode(spdy.GoAway(0))[5:])
    assert walker.goaway_seen and walker.at_boundary


def test_the_spdy_client_walker_gives_up_on_oversized_or_broken_header_blocks():
    big = spdyframes.ClientFrames()
    frame = spdy.FrameWriter().encode(spdy.SynStream(1, {"x": [os.urandom(100_000).hex()]}))
    assert big.feed(frame) == len(frame)
    assert big.failed.startswith("control frame of") and big.streams == {}
    assert big.feed(b"anything at all") == 15          # bytes still pass, uncounted

    bomb = spdyframes.ClientFrames()
    block = spdy.FrameWriter()._compress({"x": ["a" * (spdyframes.MAX_HEADER_BLOCK + 1)]})
    assert len(block) < spdyframes.MAX_CONTROL
    bomb.feed(struct.pack(">HHI", 0x8003, 1, 10 + len(block)) + struct.pack(">IIBB", 1, 0, 0, 0) + block)
    assert bomb.failed and bomb.streams == {}

    garbage = spdyframes.ClientFrames()
    garbage.feed(struct.pack(">HHI", 0x8003, 1, 14) + struct.pack(">IIBB", 1, 0, 0, 0) + b"junk")
    assert garbage.failed.startswith("unreadable control frame")


def test_the_frames_the_gateway_sends_parse_as_the_protocols_say():
    parser = spdy.FrameParser()
    frames = parser.feed(spdyframes.data_frame(1, b"why", fin=True) + spdyframes.goaway_frame(9))
    assert frames == [spdy.Data(1, b"why", spdy.FLAG_FIN), spdy.GoAway(9, 0)]
    assert wsframes.close_frame(1008, "é" * 100)[1] <= 125       # cut on a character, not a byte
