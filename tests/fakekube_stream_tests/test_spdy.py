"""The sans-IO SPDY/3.1 framer and server session."""
from __future__ import annotations

import struct
import zlib

import pytest

from tests.fakekube import spdy

ALL_FRAMES = [
    spdy.SynStream(1, {"streamtype": ["error"], "port": ["8080"]}, associated_id=0, priority=3, slot=0),
    spdy.SynStream(3, {"x-multi": ["a", "b"]}, flags=spdy.FLAG_FIN | spdy.FLAG_UNIDIRECTIONAL),
    spdy.SynReply(1, {}, flags=spdy.FLAG_FIN),
    spdy.RstStream(3, spdy.RstStatus.CANCEL),
    spdy.Settings([(0, spdy.SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20), (1, 4, 100)]),
    spdy.Ping(7),
    spdy.GoAway(5, spdy.GoAwayStatus.PROTOCOL_ERROR),
    spdy.HeadersFrame(1, {"trailer": ["yes"]}),
    spdy.WindowUpdate(0, 1024),
    spdy.WindowUpdate(1, 65536),
    spdy.Data(1, b"payload", flags=spdy.FLAG_FIN),
    spdy.Data(3, b""),
]


def _wire(frames: list) -> bytes:
    writer = spdy.FrameWriter()
    return b"".join(writer.encode(f) for f in frames)


def test_dictionary_is_the_spdy3_one() -> None:
    assert len(spdy.DICTIONARY) == 1423
    assert spdy.DICTIONARY.startswith(b"\x00\x00\x00\x07options\x00\x00\x00\x04head")
    assert spdy.DICTIONARY.endswith(b"utf-,*,enq=0.")


def test_round_trip_of_every_frame_type() -> None:
    assert spdy.FrameParser().feed(_wire(ALL_FRAMES)) == ALL_FRAMES


def test_header_blocks_share_one_compression_context() -> None:
    wire = _wire([spdy.SynStream(1, {"streamtype": ["stdout"]}), spdy.SynStream(3, {"streamtype": ["stdout"]})])
    first = spdy.FrameParser().feed(wire)
    assert [f.headers for f in first] == [{"streamtype": ["stdout"]}] * 2
    # The second block back-references the first: it is far shorter and undecodable on its own.
    (length1,) = struct.unpack_from(">I", wire, 4)
    second = wire[8 + (length1 & spdy.MAX_LENGTH):]
    assert len(second) < 8 + (length1 & spdy.MAX_LENGTH)
    with pytest.raises(spdy.SpdyProtocolError):
        spdy.FrameParser().feed(second)


def test_first_header_block_carries_the_dictionary_id() -> None:
    wire = _wire([spdy.SynReply(1, {"a": ["b"]})])
    zheader = wire[12:14]
    assert zheader[1] & 0x20                                  # FDICT
    assert wire[14:18] == struct.pack(">I", zlib.adler32(spdy.DICTIONARY))


def test_feeding_split_at_every_offset() -> None:
    wire = _wire(ALL_FRAMES)
    for cut in range(len(wire) + 1):
        parser = spdy.FrameParser()
        assert parser.feed(wire[:cut]) + parser.feed(wire[cut:]) == ALL_FRAMES


def test_feeding_byte_by_byte() -> None:
    wire, parser, frames = _wire(ALL_FRAMES), spdy.FrameParser(), []
    for i in range(len(wire)):
        frames += parser.feed(wire[i:i + 1])
    assert frames == ALL_FRAMES


def _control(ftype: int, payload: bytes, flags: int = 0, version: int = 3) -> bytes:
    return struct.pack(">HHI", 0x8000 | version, ftype, (flags << 24) | len(payload)) + payload


def _block(pairs: list[tuple[bytes, bytes]]) -> bytes:
    raw = struct.pack(">I", len(pairs)) + b"".join(
        struct.pack(">I", len(k)) + k + struct.pack(">I", len(v)) + v for k, v in pairs)
    deflate = zlib.compressobj(zdict=spdy.DICTIONARY)
    return deflate.compress(raw) + deflate.flush(zlib.Z_SYNC_FLUSH)


@pytest.mark.parametrize("wire", [
    pytest.param(_control(6, b"\x00\x00\x00\x01", version=2), id="wrong-version"),
    pytest.param(_control(3, b"\x00\x00\x00\x01"), id="short-rst"),
    pytest.param(_control(3, b"\x00\x00\x00\x01\x00\x00\x00\x00"), id="rst-status-0"),
    pytest.param(_control(3, b"\x00\x00\x00\x00\x00\x00\x00\x05"), id="rst-stream-0"),
    pytest.param(_control(6, b"\x00\x00\x00\x01\x00"), id="long-ping"),
    pytest.param(_control(7, b"\x00\x00\x00\x01"), id="short-goaway"),
    pytest.param(_control(9, b"\x00\x00\x00\x01\x00\x00\x00\x00"), id="window-delta-0"),
    pytest.param(_control(4, b"\x00\x00\x00\x02" + b"\x00" * 8), id="settings-count-mismatch"),
    pytest.param(_control(1, b"\x00\x00\x00\x01\x00\x00"), id="short-syn-stream"),
    pytest.param(_control(1, b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00" + _block([(b"a", b"b")])),
                 id="syn-stream-0"),
    pytest.param(_control(2, b"\x00\x00\x00\x01" + b"garbage-not-zlib"), id="corrupt-header-block"),
    pytest.param(_control(2, b"\x00\x00\x00\x01" + _block([(b"Upper", b"x")])), id="uppercase-header"),
    pytest.param(_control(2, b"\x00\x00\x00\x01" + _block([(b"a", b"1"), (b"a", b"2")])), id="duplicate-header"),
    pytest.param(_control(2, b"\x00\x00\x00\x01" + _block([(b"", b"x")])), id="empty-header-name"),
    pytest.param(struct.pack(">II", 0, 1) + b"x", id="data-stream-0"),
])
def test_malformed_frames_are_protocol_errors(wire: bytes) -> None:
    parser = spdy.FrameParser()
    with pytest.raises(spdy.SpdyProtocolError):
        parser.feed(wire)
    with pytest.raises(spdy.SpdyProtocolError):
        parser.feed(_wire([spdy.Ping(1)]))         # the connection stays failed


def test_unknown_control_frames_are_ignored() -> None:
    noop = _control(5, b"")
    credential = _control(10, b"\x00" * 12)
    assert spdy.FrameParser().feed(noop + credential + _wire([spdy.Ping(9)])) == [spdy.Ping(9)]


def _client() -> spdy.FrameWriter:
    return spdy.FrameWriter()


def test_session_streams_ping_and_goaway() -> None:
    client, session = _client(), spdy.ServerSession()
    events = session.receive_data(client.encode(spdy.SynStream(1, {"streamtype": ["stdin"]}))
                                  + client.encode(spdy.Data(1, b"abc"))
                                  + client.encode(spdy.Data(1, b"", spdy.FLAG_FIN))
                                  + client.encode(spdy.Ping(5)) + client.encode(spdy.Ping(6)))
    assert events == [spdy.StreamOpened(1, {"streamtype": ["stdin"]}, False), spdy.DataReceived(1, b"abc"),
                      spdy.StreamEnded(1)]
    session.reply(1)
    out = spdy.FrameParser().feed(session.data_to_send())
    assert out == [spdy.Ping(5), spdy.SynReply(1, {})]     # only the client's (odd) ping is echoed
    assert session.receive_data(client.encode(spdy.GoAway(1))) == [spdy.ConnectionClosed(1)]
    session.close()
    assert spdy.FrameParser().feed(session.data_to_send()) == [spdy.GoAway(1, spdy.GoAwayStatus.OK)]


def test_session_rejects_even_and_reused_stream_ids() -> None:
    client, session = _client(), spdy.ServerSession()
    session.receive_data(client.encode(spdy.SynStream(3, {})))
    assert session.receive_data(client.encode(spdy.SynStream(2, {})) + client.encode(spdy.SynStream(3, {}))) == []
    rsts = spdy.FrameParser().feed(session.data_to_send())
    assert rsts == [spdy.RstStream(2, spdy.RstStatus.PROTOCOL_ERROR), spdy.RstStream(3, spdy.RstStatus.PROTOCOL_ERROR)]


def test_session_protocol_error_sends_goaway() -> None:
    session = spdy.ServerSession()
    with pytest.raises(spdy.SpdyProtocolError):
        session.receive_data(_control(6, b"\x00"))
    assert spdy.FrameParser().feed(session.data_to_send()) == [spdy.GoAway(0, spdy.GoAwayStatus.PROTOCOL_ERROR)]


def test_consumed_data_reopens_stream_and_session_windows() -> None:
    client, session = _client(), spdy.ServerSession()
    session.receive_data(client.encode(spdy.SynStream(1, {})) + client.encode(spdy.Data(1, b"x" * 1000)))
    session.data_to_send()
    session.consumed(1, 1000)
    assert spdy.FrameParser().feed(session.data_to_send()) == [spdy.WindowUpdate(0, 1000), spdy.WindowUpdate(1, 1000)]


def test_send_respects_the_peer_window_once_it_does_flow_control() -> None:
    client, session = _client(), spdy.ServerSession(max_frame=16384)
    session.receive_data(client.encode(spdy.SynStream(1, {})) + client.encode(spdy.WindowUpdate(1, 1)))
    session.reply(1)
    session.send_data(1, b"a" * 100_000, fin=True)
    frames = spdy.FrameParser().feed(session.data_to_send())
    sent = sum(len(f.data) for f in frames if isinstance(f, spdy.Data))
    assert sent == spdy.DEFAULT_WINDOW                     # the session window (64 KiB) is the limit
    assert session.pending_bytes(1) == 100_000 - sent
    session.receive_data(client.encode(spdy.WindowUpdate(0, 50_000)))
    frames = spdy.FrameParser().feed(session.data_to_send())
    assert sum(len(f.data) for f in frames) == 1            # now the stream window (64 KiB + 1) binds
    session.receive_data(client.encode(spdy.WindowUpdate(1, 50_000)))
    frames = spdy.FrameParser().feed(session.data_to_send())
    assert sum(len(f.data) for f in frames) == 100_000 - sent - 1
    assert frames[-1].flags == spdy.FLAG_FIN and session.pending_bytes(1) == 0


def test_peer_without_flow_control_is_not_throttled() -> None:
    # moby/spdystream (kubectl, kubelet) never sends WINDOW_UPDATE: we must not stall it.
    client, session = _client(), spdy.ServerSession()
    session.receive_data(client.encode(spdy.SynStream(1, {})))
    session.send_data(1, b"a" * 200_000, fin=True)
    frames = spdy.FrameParser().feed(session.data_to_send())
    assert sum(len(f.data) for f in frames if isinstance(f, spdy.Data)) == 200_000
    assert all(len(f.data) <= 32 * 1024 for f in frames if isinstance(f, spdy.Data))


def test_flow_control_violation_resets_the_stream_when_enforced() -> None:
    client, session = _client(), spdy.ServerSession(enforce_peer_window=True)
    session.receive_data(client.encode(spdy.SynStream(1, {})))
    events = session.receive_data(client.encode(spdy.Data(1, b"z" * (spdy.DEFAULT_WINDOW + 1))))
    assert events == [spdy.StreamReset(1, spdy.RstStatus.FLOW_CONTROL_ERROR)]
    assert spdy.RstStream(1, spdy.RstStatus.FLOW_CONTROL_ERROR) in spdy.FrameParser().feed(session.data_to_send())


def test_initial_window_setting_applies_to_open_streams() -> None:
    client, session = _client(), spdy.ServerSession()
    session.receive_data(client.encode(spdy.SynStream(1, {})))
    session.receive_data(client.encode(spdy.Settings([(0, spdy.SETTINGS_INITIAL_WINDOW_SIZE, 10)])))
    session.send_data(1, b"0123456789abc")
    frames = spdy.FrameParser().feed(session.data_to_send())
    assert [f.data for f in frames] == [b"0123456789"]
