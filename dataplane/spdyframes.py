"""SPDY/3.1 frames of a spliced session (draft-mbelshe-spdy-3, the framing kubectl's
moby/spdystream speaks): walkers for both directions, and the frames the gateway itself sends
to end a session.

The gateway must know which of the client's streams is an error stream (its SYN_STREAM carries
the header `streamtype: error`). Header blocks are zlib streams primed with the SPDY/3
dictionary and one compression context per direction for the connection's life, so every
header block the client sends is inflated, in order, as it passes (never altered: the bytes
forwarded are the client's). That costs one inflate per stream opened; DATA payloads are only
counted. Everything is bounded: a control frame or an inflated header block beyond the limits
stops the walk (`failed`), and the session can then only be cut, without a message.
"""
from __future__ import annotations

import struct
import zlib

from .framewalk import FrameWalker

CONTROL = 0x80000000
STREAM_ID = 0x7FFFFFFF
FLAG_FIN = 0x01
SYN_STREAM, SYN_REPLY, RST_STREAM, GOAWAY, HEADERS = 1, 2, 3, 7, 8
MAX_CONTROL = 64 * 1024          # a control frame the walker will look into
MAX_HEADER_BLOCK = 256 * 1024    # an inflated header block


def _dictionary() -> bytes:
    # SPDY/3 section 2.6.10.1: length-prefixed words, then a raw tail.
    words = (
        "options", "head", "post", "put", "delete", "trace", "accept", "accept-charset",
        "accept-encoding", "accept-language", "accept-ranges", "age", "allow", "authorization",
        "cache-control", "connection", "content-base", "content-encoding", "content-language",
        "content-length", "content-location", "content-md5", "content-range", "content-type",
        "date", "etag", "expect", "expires", "from", "host", "if-match", "if-modified-since",
        "if-none-match", "if-range", "if-unmodified-since", "last-modified", "location",
        "max-forwards", "pragma", "proxy-authenticate", "proxy-authorization", "range", "referer",
        "retry-after", "server", "te", "trailer", "transfer-encoding", "upgrade", "user-agent",
        "vary", "via", "warning", "www-authenticate", "method", "get", "status", "200 OK",
        "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive", "origin"
    )
    tail = (
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
        "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request"
        "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented"
        "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 "
        "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,"
        "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age="
        "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
    )
    return b"".join(struct.pack(">I", len(w)) + w.encode() for w in words) + tail.encode()


DICTIONARY = _dictionary()
assert len(DICTIONARY) == 1423 and zlib.adler32(DICTIONARY) == 0xE3C6A7C2


class _SpdyWalker(FrameWalker):
    def _header_size(self, head: bytearray) -> int:
        return 8


class ServerFrames(_SpdyWalker):
    """Server → client: boundaries, the streams the server has finished, and its GOAWAY."""

    def __init__(self) -> None:
        super().__init__()
        self.finished: set[int] = set()     # streams the server ended with a FIN DATA frame
        self.goaway_seen = False

    def _frame(self, head: bytes) -> tuple[int, bool]:
        word, flags_length = struct.unpack(">II", head)
        if word & CONTROL:
            if word & 0xFFFF == GOAWAY:
                self.goaway_seen = True
        elif flags_length >> 24 & FLAG_FIN:
            self.finished.add(word & STREAM_ID)
        return flags_length & 0xFFFFFF, False


class ClientFrames(_SpdyWalker):
    """Client → server: the streams the client opened, with their `streamtype`, inflating each
    header block with the connection's client-side zlib context."""

    def __init__(self) -> None:
        super().__init__()
        self.streams: dict[int, str] = {}    # open stream id → its streamtype header ("" if none)
        self.last_stream = 0
        self.failed = ""                     # why the walk stopped ("" while it goes on)
        self._inflate = zlib.decompressobj(zdict=DICTIONARY)
        self._type = 0

    def feed(self, data: bytes, stop_at_boundary: bool = False) -> int:
        if self.failed:
            return len(data)
        return super().feed(data, stop_at_boundary)

    def _frame(self, head: bytes) -> tuple[int, bool]:
        word, flags_length = struct.unpack(">II", head)
        length = flags_length & 0xFFFFFF
        if not word & CONTROL:
            return length, False
        self._type = word & 0xFFFF
        wanted = self._type in (SYN_STREAM, SYN_REPLY, HEADERS, RST_STREAM)
        if wanted and length > MAX_CONTROL:
            self.failed = f"control frame of {length} bytes"
            return length, False
        return length, wanted

    def _payload(self, payload: bytes) -> None:
        if self.failed:
            return
        try:
            if self._type == RST_STREAM:
                self.streams.pop(struct.unpack_from(">I", payload)[0] & STREAM_ID, None)
            elif self._type == SYN_STREAM:
                stream_id = struct.unpack_from(">I", payload)[0] & STREAM_ID
                headers = self._headers(payload[10:])
                self.streams[stream_id] = headers.get(b"streamtype", b"").decode("latin-1")
                self.last_stream = max(self.last_stream, stream_id)
            else:                                  # SYN_REPLY, HEADERS: only for the zlib context
                self._headers(payload[4:])
        except (struct.error, zlib.error, ValueError) as exc:
            self.failed = f"unreadable control frame: {exc}"

    def _headers(self, block: bytes) -> dict[bytes, bytes]:
        plain = self._inflate.decompress(block, MAX_HEADER_BLOCK)
        if self._inflate.unconsumed_tail:
            raise ValueError("header block too large")
        return _header_block(plain)


def _header_block(plain: bytes) -> dict[bytes, bytes]:
    (count,), pos, headers = struct.unpack_from(">I", plain), 4, {}
    for _ in range(count):
        (n,) = struct.unpack_from(">I", plain, pos)
        name = plain[pos + 4:pos + 4 + n]
        pos += 4 + n
        (n,) = struct.unpack_from(">I", plain, pos)
        headers[name] = plain[pos + 4:pos + 4 + n]
        pos += 4 + n
    if pos > len(plain):
        raise ValueError("truncated header block")
    return headers


def data_frame(stream_id: int, payload: bytes, fin: bool = False) -> bytes:
    return struct.pack(">II", stream_id, (FLAG_FIN if fin else 0) << 24 | len(payload)) + payload


def goaway_frame(last_good_stream: int, status: int = 0) -> bytes:
    return struct.pack(">HHIII", 0x8003, GOAWAY, 8, last_good_stream, status)
