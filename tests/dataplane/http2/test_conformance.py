"""HTTP/2 edge cases (h2spec is not installable here: no Debian or PyPI package), driven with raw
frames from hyperframe. Each case states what RFC 9113 requires and checks the gateway does it."""
from __future__ import annotations

import asyncio
import ssl

import pytest
from h2.errors import ErrorCodes
from hpack import Encoder
from hyperframe.frame import (ContinuationFrame, DataFrame, Frame, GoAwayFrame, HeadersFrame,
                              PingFrame, RstStreamFrame, SettingsFrame, WindowUpdateFrame)

from tests.dataplane.gateway.helpers import make_env, run

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
REQUEST = [(":method", "GET"), (":scheme", "https"), (":authority", "gw"),
           (":path", "/clusters/alpha/api/v1/namespaces/default/pods")]


def headers(sid: int, end_stream=True, end_headers=True, block=None) -> bytes:
    f = HeadersFrame(sid)
    f.data = block if block is not None else Encoder().encode(REQUEST)
    f.flags = {"END_HEADERS"} if end_headers else set()
    if end_stream:
        f.flags.add("END_STREAM")
    return f.serialize()


def settings(ack=False) -> bytes:
    return SettingsFrame(0, flags={"ACK"} if ack else set()).serialize()


async def exchange(env, payload: bytes, preface: bytes = PREFACE, until=None) -> list[Frame]:
    """Send raw bytes; return every frame the gateway sends until it closes the connection (or
    until `until(frames)` holds)."""
    ctx = env.client_ssl()
    ctx.set_alpn_protocols(["h2"])
    reader, writer = await asyncio.open_connection("127.0.0.1", env.port, ssl=ctx, server_hostname="127.0.0.1")
    writer.write(preface + payload)
    data, frames = bytearray(), []
    try:
        while not (until and until(frames)) and (chunk := await reader.read(65536)):
            data += chunk
            while len(data) >= 9:
                frame, length = Frame.parse_frame_header(bytes(data[:9]))
                if len(data) < 9 + length:
                    break
                frame.parse_body(memoryview(bytes(data[9:9 + length])))
                frames.append(frame)
                del data[:9 + length]
    except (ConnectionError, ssl.SSLError):
        pass
    writer.close()
    return frames


def goaway(frames) -> GoAwayFrame:
    found = [f for f in frames if isinstance(f, GoAwayFrame)]
    assert found, f"no GOAWAY in {frames}"
    return found[-1]


CASES = {
    # §3.4: an invalid preface is a connection error (PROTOCOL_ERROR)
    "bad preface": (b"", b"GET / HTTP/1.1\r\n\r\n" + b"x" * 30, ErrorCodes.PROTOCOL_ERROR),
    # §6.9.1: a WINDOW_UPDATE that overflows 2^31-1 is FLOW_CONTROL_ERROR
    "window overflow": (settings() + WindowUpdateFrame(0, window_increment=2**31 - 1).serialize()
                        + WindowUpdateFrame(0, window_increment=2**31 - 1).serialize(), None,
                        ErrorCodes.FLOW_CONTROL_ERROR),
    # §5.1.1: a stream id lower than one already used is PROTOCOL_ERROR
    "stream id reuse": (settings() + headers(5) + headers(3), None, ErrorCodes.PROTOCOL_ERROR),
    # §5.1: HEADERS on a half-closed (remote) stream → stream error STREAM_CLOSED; the
    # connection carries on
    "headers on closed stream": (settings() + headers(1) + headers(1), None, ErrorCodes.STREAM_CLOSED),
    # §6.10: anything but CONTINUATION inside a header block is PROTOCOL_ERROR
    "interleaved frame in header block": (settings() + headers(1, end_headers=False)
                                          + PingFrame(0, opaque_data=b"12345678").serialize(), None,
                                          ErrorCodes.PROTOCOL_ERROR),
    # CONTINUATION flood (CVE-2024-27316 style): endless CONTINUATION frames are refused
    "continuation flood": (settings() + headers(1, end_headers=False, block=b"")
                           + b"".join(ContinuationFrame(1, data=b"\x40\x01a\x01b").serialize()
                                      for _ in range(200)), None, ErrorCodes.PROTOCOL_ERROR),
    # §6.1: DATA on stream 0 is PROTOCOL_ERROR
    "data on stream 0": (settings() + b"\x00\x00\x01\x00\x00\x00\x00\x00\x00x", None, ErrorCodes.PROTOCOL_ERROR),
}


@pytest.mark.parametrize("case", list(CASES))
def test_protocol_violations_get_goaway_with_the_rfc_code(tmp_path, case):
    payload, preface, code = CASES[case]

    async def body():
        env = await make_env(tmp_path)
        try:
            rst = (lambda fs: any(isinstance(f, RstStreamFrame) for f in fs)) if case == "headers on closed stream" else None
            frames = await exchange(env, payload, PREFACE if preface is None else preface, rst)
            if case == "bad preface":
                # §3.4: the GOAWAY may be omitted for a peer that does not speak HTTP/2 (h2 does)
                assert not any(isinstance(f, GoAwayFrame) and f.error_code != code for f in frames)
            elif case == "headers on closed stream":
                assert any(isinstance(f, RstStreamFrame) and f.stream_id == 1 and f.error_code == code
                           for f in frames), frames
            else:
                assert goaway(frames).error_code == code
            assert not env.upstreams["alpha"].requests or case in ("stream id reuse", "headers on closed stream")
        finally:
            await env.close()
    run(body)


def test_settings_are_acked_and_ping_answered_and_data_on_reset_stream_keeps_the_window(tmp_path):
    async def body():
        env = await make_env(tmp_path)
        try:
            ctx = env.client_ssl()
            ctx.set_alpn_protocols(["h2"])
            reader, writer = await asyncio.open_connection("127.0.0.1", env.port, ssl=ctx,
                                                           server_hostname="127.0.0.1")
            # a POST whose stream the client resets, then DATA beyond it: the gateway must hand
            # the connection window back (§6.9: flow-controlled even on closed streams)
            post = [(":method", "POST"), (":scheme", "https"), (":authority", "gw"),
                    (":path", "/clusters/alpha/api/v1/namespaces/default/configmaps"),
                    ("content-type", "application/json")]
            encoder = Encoder()
            abandoned = b"".join(
                headers(sid, end_stream=False, block=encoder.encode(post))
                + RstStreamFrame(sid, error_code=ErrorCodes.CANCEL).serialize()
                + b"".join(DataFrame(sid, data=b"z" * 16000).serialize() for _ in range(4))
                for sid in range(1, 81, 2))                    # 40 streams, 2.56 MB of dead DATA
            writer.write(PREFACE + settings() + PingFrame(0, opaque_data=b"pingpong").serialize()
                         + abandoned + headers(81, block=encoder.encode(REQUEST)))
            seen: list[Frame] = []
            buf = bytearray()
            while not any(isinstance(f, HeadersFrame) and f.stream_id == 81 for f in seen):
                buf += await reader.read(65536)
                while len(buf) >= 9:
                    frame, length = Frame.parse_frame_header(bytes(buf[:9]))
                    if len(buf) < 9 + length:
                        break
                    frame.parse_body(memoryview(bytes(buf[9:9 + length])))
                    seen.append(frame)
                    del buf[:9 + length]
            assert any(isinstance(f, SettingsFrame) and "ACK" in f.flags for f in seen)
            assert any(isinstance(f, PingFrame) and "ACK" in f.flags and f.opaque_data == b"pingpong" for f in seen)
            returned = sum(f.window_increment for f in seen if isinstance(f, WindowUpdateFrame) and f.stream_id == 0)
            # beyond the initial bump to 4 MiB, the window of the dead streams' DATA came back (h2
            # batches WINDOW_UPDATEs at half the window, so at least 2 MiB of the 2.56 MB)
            assert returned - (4 * 1024 * 1024 - 65535) >= 2 * 1024 * 1024
            writer.close()
        finally:
            await env.close()
    run(body)
