"""Sans-IO SPDY/3.1 for the fake API server: a framer and a server-side session.

kubectl speaks SPDY through moby/spdystream (a fork of golang.org/x/net/spdy). This module is an
independent implementation of the same wire format (draft-mbelshe-spdy-3 plus the 3.1 session
window): frames are parsed from whatever bytes arrive and serialised to bytes; nothing here does
I/O. Header blocks are zlib streams primed with the SPDY/3 dictionary, one compression context per
direction for the life of the connection, so a block can only be decoded after every earlier one.
"""
from __future__ import annotations

import struct
import zlib
from collections import deque
from dataclasses import dataclass, field
from enum import IntEnum

VERSION = 3
MAX_LENGTH = (1 << 24) - 1           # 24-bit length field
MAX_STREAM_ID = (1 << 31) - 1
DEFAULT_WINDOW = 64 * 1024           # SPDY/3.1 initial stream and session window

FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02
SETTINGS_INITIAL_WINDOW_SIZE = 7


class FrameType(IntEnum):
    SYN_STREAM = 1
    SYN_REPLY = 2
    RST_STREAM = 3
    SETTINGS = 4
    PING = 6
    GOAWAY = 7
    HEADERS = 8
    WINDOW_UPDATE = 9


class RstStatus(IntEnum):
    PROTOCOL_ERROR = 1
    INVALID_STREAM = 2
    REFUSED_STREAM = 3
    UNSUPPORTED_VERSION = 4
    CANCEL = 5
    INTERNAL_ERROR = 6
    FLOW_CONTROL_ERROR = 7
    STREAM_IN_USE = 8
    STREAM_ALREADY_CLOSED = 9


class GoAwayStatus(IntEnum):
    OK = 0
    PROTOCOL_ERROR = 1
    INTERNAL_ERROR = 2


def _build_dictionary() -> bytes:
    # The SPDY/3 header dictionary (spec section 2.6.10.1): length-prefixed words, then a raw tail.
    words = (
        "options head post put delete trace accept accept-charset accept-encoding accept-language "
        "accept-ranges age allow authorization cache-control connection content-base "
        "content-encoding content-language content-length content-location content-md5 "
        "content-range content-type date etag expect expires from host if-match if-modified-since "
        "if-none-match if-range if-unmodified-since last-modified location max-forwards pragma "
        "proxy-authenticate proxy-authorization range referer retry-after server te trailer "
        "transfer-encoding upgrade user-agent vary via warning www-authenticate method get status"
    ).split() + ["200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive", "origin"]
    tail = (
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
        "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request"
        "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented"
        "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 "
        "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,"
        "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age="
        "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
    )
    out = bytearray()
    for word in words:
        out += struct.pack(">I", len(word)) + word.encode()
    return bytes(out) + tail.encode()


DICTIONARY = _build_dictionary()
assert len(DICTIONARY) == 1423 and zlib.adler32(DICTIONARY) == 0xE3C6A7C2


class SpdyProtocolError(Exception):
    """The peer broke the protocol; the connection cannot continue (answer with GOAWAY)."""


Headers = dict[str, list[str]]


@dataclass
class SynStream:
    stream_id: int
    headers: Headers
    associated_id: int = 0
    priority: int = 0
    slot: int = 0
    flags: int = 0


@dataclass
class SynReply:
    stream_id: int
    headers: Headers
    flags: int = 0


@dataclass
class RstStream:
    stream_id: int
    status: int


@dataclass
class Settings:
    # (flags, id, value) triples
    entries: list[tuple[int, int, int]] = field(default_factory=list)
    flags: int = 0


@dataclass
class Ping:
    ping_id: int


@dataclass
class GoAway:
    last_good_stream_id: int
    status: int = GoAwayStatus.OK


@dataclass
class HeadersFrame:
    stream_id: int
    headers: Headers
    flags: int = 0


@dataclass
class WindowUpdate:
    stream_id: int
    delta: int


@dataclass
class Data:
    stream_id: int
    data: bytes
    flags: int = 0


Frame = SynStream | SynReply | RstStream | Settings | Ping | GoAway | HeadersFrame | WindowUpdate | Data


def _encode_block(headers: Headers) -> bytes:
    out = bytearray(struct.pack(">I", len(headers)))
    for name, values in headers.items():
        if not name or name != name.lower():
            raise ValueError(f"SPDY header names must be non-empty and lower-case: {name!r}")
        raw_name, raw_value = name.encode(), "\0".join(values).encode()
        out += struct.pack(">I", len(raw_name)) + raw_name + struct.pack(">I", len(raw_value)) + raw_value
    return bytes(out)


def _decode_block(block: bytes) -> Headers:
    def take(pos: int) -> tuple[bytes, int]:
        if pos + 4 > len(block):
            raise SpdyProtocolError("truncated header block")
        (n,) = struct.unpack_from(">I", block, pos)
        if pos + 4 + n > len(block):
            raise SpdyProtocolError("truncated header block")
        return block[pos + 4:pos + 4 + n], pos + 4 + n

    if len(block) < 4:
        raise SpdyProtocolError("truncated header block")
    (count,) = struct.unpack_from(">I", block, 0)
    pos, headers = 4, {}
    for _ in range(count):
        raw_name, pos = take(pos)
        raw_value, pos = take(pos)
        name = raw_name.decode("utf-8", "replace")
        if not name or name != name.lower():
            raise SpdyProtocolError(f"invalid header name {name!r}")
        if name in headers:
            raise SpdyProtocolError(f"duplicate header {name!r}")
        headers[name] = raw_value.decode("utf-8", "replace").split("\0")
    if pos != len(block):
        raise SpdyProtocolError("trailing bytes after header block")
    return headers


class FrameWriter:
    """Serialises frames; owns the outbound header-compression context."""

    def __init__(self) -> None:
        self._deflate = zlib.compressobj(zlib.Z_BEST_COMPRESSION, zlib.DEFLATED, 15, zdict=DICTIONARY)

    def _compress(self, headers: Headers) -> bytes:
        # SYNC_FLUSH ends each block on a byte boundary without resetting the shared context.
        return self._deflate.compress(_encode_block(headers)) + self._deflate.flush(zlib.Z_SYNC_FLUSH)

    @staticmethod
    def _control(ftype: FrameType, flags: int, payload: bytes) -> bytes:
        if len(payload) > MAX_LENGTH:
            raise ValueError("frame too long")
        return struct.pack(">HHI", 0x8000 | VERSION, ftype, (flags << 24) | len(payload)) + payload

    def encode(self, frame: Frame) -> bytes:
        match frame:
            case Data(stream_id, data, flags):
                if not 0 < stream_id <= MAX_STREAM_ID or len(data) > MAX_LENGTH:
                    raise ValueError("invalid DATA frame")
                return struct.pack(">II", stream_id, (flags << 24) | len(data)) + data
            case SynStream(stream_id, headers, associated_id, priority, slot, flags):
                head = struct.pack(">IIBB", stream_id, associated_id, (priority & 7) << 5, slot)
                return self._control(FrameType.SYN_STREAM, flags, head + self._compress(headers))
            case SynReply(stream_id, headers, flags):
                return self._control(FrameType.SYN_REPLY, flags, struct.pack(">I", stream_id) + self._compress(headers))
            case HeadersFrame(stream_id, headers, flags):
                return self._control(FrameType.HEADERS, flags, struct.pack(">I", stream_id) + self._compress(headers))
            case RstStream(stream_id, status):
                return self._control(FrameType.RST_STREAM, 0, struct.pack(">II", stream_id, status))
            case Settings(entries, flags):
                body = struct.pack(">I", len(entries)) + b"".join(
                    struct.pack(">II", (f << 24) | i, v) for f, i, v in entries)
                return self._control(FrameType.SETTINGS, flags, body)
            case Ping(ping_id):
                return self._control(FrameType.PING, 0, struct.pack(">I", ping_id))
            case GoAway(last, status):
                return self._control(FrameType.GOAWAY, 0, struct.pack(">II", last, status))
            case WindowUpdate(stream_id, delta):
                return self._control(FrameType.WINDOW_UPDATE, 0, struct.pack(">II", stream_id, delta))
        raise TypeError(f"not a SPDY frame: {frame!r}")


class FrameParser:
    """Incremental parser: feed() any slice of the byte stream, get the complete frames back."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._inflate = zlib.decompressobj(zdict=DICTIONARY)
        self._broken = False

    def _decompress(self, block: bytes) -> Headers:
        try:
            plain = self._inflate.decompress(block)
        except zlib.error as exc:
            raise SpdyProtocolError(f"header block decompression failed: {exc}") from None
        if self._inflate.unconsumed_tail or self._inflate.eof:
            raise SpdyProtocolError("header block is not a sync-flushed zlib segment")
        return _decode_block(plain)

    def feed(self, data: bytes) -> list[Frame]:
        if self._broken:
            raise SpdyProtocolError("connection already failed")
        self._buf += data
        frames: list[Frame] = []
        try:
            while len(self._buf) >= 8:
                (length,) = struct.unpack_from(">I", self._buf, 4)
                length &= MAX_LENGTH
                if len(self._buf) < 8 + length:
                    break
                raw = bytes(self._buf[:8 + length])
                del self._buf[:8 + length]
                frame = self._parse(raw)
                if frame is not None:
                    frames.append(frame)
        except SpdyProtocolError:
            # The shared zlib context is now unusable, so nothing after this point can be trusted.
            self._broken = True
            raise
        return frames

    def _parse(self, raw: bytes) -> Frame | None:
        word, flags_len = struct.unpack_from(">II", raw, 0)
        flags, payload = flags_len >> 24, raw[8:]
        if not word & 0x80000000:
            stream_id = word & MAX_STREAM_ID
            if stream_id == 0:
                raise SpdyProtocolError("DATA frame on stream 0")
            return Data(stream_id, payload, flags)
        version, ftype = (word >> 16) & 0x7FFF, word & 0xFFFF
        if version != VERSION:
            raise SpdyProtocolError(f"unsupported SPDY version {version}")

        def fixed(n: int) -> None:
            if len(payload) != n:
                raise SpdyProtocolError(f"{FrameType(ftype).name} frame must be {n} bytes, got {len(payload)}")

        def stream_of(pos: int = 0) -> int:
            sid = struct.unpack_from(">I", payload, pos)[0] & MAX_STREAM_ID
            if sid == 0:
                raise SpdyProtocolError(f"{FrameType(ftype).name} on stream 0")
            return sid

        match ftype:
            case FrameType.SYN_STREAM:
                if len(payload) < 10:
                    raise SpdyProtocolError("SYN_STREAM too short")
                sid = stream_of()
                assoc = struct.unpack_from(">I", payload, 4)[0] & MAX_STREAM_ID
                return SynStream(sid, self._decompress(payload[10:]), assoc, payload[8] >> 5, payload[9], flags)
            case FrameType.SYN_REPLY | FrameType.HEADERS:
                if len(payload) < 4:
                    raise SpdyProtocolError(f"{FrameType(ftype).name} too short")
                cls = SynReply if ftype == FrameType.SYN_REPLY else HeadersFrame
                return cls(stream_of(), self._decompress(payload[4:]), flags)
            case FrameType.RST_STREAM:
                fixed(8)
                status = struct.unpack_from(">I", payload, 4)[0]
                if status == 0:
                    raise SpdyProtocolError("RST_STREAM with status 0")
                return RstStream(stream_of(), status)
            case FrameType.SETTINGS:
                if len(payload) < 4:
                    raise SpdyProtocolError("SETTINGS too short")
                (count,) = struct.unpack_from(">I", payload, 0)
                fixed(4 + 8 * count)
                entries = []
                for i in range(count):
                    fid, value = struct.unpack_from(">II", payload, 4 + 8 * i)
                    entries.append((fid >> 24, fid & 0xFFFFFF, value))
                return Settings(entries, flags)
            case FrameType.PING:
                fixed(4)
                return Ping(struct.unpack(">I", payload)[0])
            case FrameType.GOAWAY:
                fixed(8)
                last, status = struct.unpack(">II", payload)
                return GoAway(last & MAX_STREAM_ID, status)
            case FrameType.WINDOW_UPDATE:
                fixed(8)
                sid, delta = struct.unpack(">II", payload)
                delta &= 0x7FFFFFFF
                if delta == 0:
                    raise SpdyProtocolError("WINDOW_UPDATE with delta 0")
                return WindowUpdate(sid & MAX_STREAM_ID, delta)  # stream 0 = session window (3.1)
        # Spec: unknown control frame types must be ignored (NOOP, CREDENTIAL, future types).
        return None


# ---------------------------------------------------------------------------------------------
# Server-side session: stream state, flow control, PING, GOAWAY. Still sans-IO.

@dataclass
class StreamOpened:
    stream_id: int
    headers: Headers
    fin: bool               # the client will send nothing on it (SYN_STREAM with FIN)


@dataclass
class DataReceived:
    stream_id: int
    data: bytes


@dataclass
class StreamEnded:          # the client half-closed (FIN)
    stream_id: int


@dataclass
class StreamReset:
    stream_id: int
    status: int


@dataclass
class ConnectionClosed:     # GOAWAY received
    last_good_stream_id: int


Event = StreamOpened | DataReceived | StreamEnded | StreamReset | ConnectionClosed


@dataclass
class _Stream:
    send_window: int
    recv_window: int
    pending: deque = field(default_factory=deque)   # outbound payload chunks awaiting window
    pending_fin: bool = False
    local_closed: bool = False
    remote_closed: bool = False


class ServerSession:
    """The server end of a SPDY/3.1 connection.

    Flow control: DATA we receive shrinks the receive windows; `consumed()` hands the bytes back
    with WINDOW_UPDATE. DATA we send is held back when the peer's window is exhausted, but only
    once the peer has shown that it does flow control (a WINDOW_UPDATE or an INITIAL_WINDOW_SIZE
    setting): moby/spdystream - kubectl's and the kubelet's library - never sends WINDOW_UPDATE
    and ignores ours, so enforcing the window against it would stall every transfer over 64 KiB.
    """

    def __init__(self, max_frame: int = 32 * 1024, enforce_peer_window: bool = False) -> None:
        self._parser = FrameParser()
        self._writer = FrameWriter()
        self._out = bytearray()
        self._streams: dict[int, _Stream] = {}
        self._last_client_stream = 0
        self._max_frame = max_frame
        self.enforce_peer_window = enforce_peer_window
        self._initial_send_window = DEFAULT_WINDOW
        self.session_send_window = DEFAULT_WINDOW
        self.session_recv_window = DEFAULT_WINDOW
        self.goaway_sent = False
        self.goaway_received = False

    # -- input ------------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> list[Event]:
        try:
            frames = self._parser.feed(data)
        except SpdyProtocolError:
            self.close(GoAwayStatus.PROTOCOL_ERROR)
            raise
        events: list[Event] = []
        for frame in frames:
            events.extend(self._handle(frame))
        return events

    def _handle(self, frame: Frame) -> list[Event]:
        match frame:
            case SynStream(sid, headers, _, _, _, flags):
                if sid % 2 == 0 or sid <= self._last_client_stream:
                    self._send(RstStream(sid, RstStatus.PROTOCOL_ERROR))
                    return []
                self._last_client_stream = sid
                if self.goaway_sent:
                    self._send(RstStream(sid, RstStatus.REFUSED_STREAM))
                    return []
                fin = bool(flags & FLAG_FIN)
                self._streams[sid] = _Stream(self._initial_send_window, DEFAULT_WINDOW, remote_closed=fin,
                                             local_closed=bool(flags & FLAG_UNIDIRECTIONAL))
                return [StreamOpened(sid, headers, fin)]
            case Data(sid, data, flags):
                stream = self._streams.get(sid)
                if stream is None or stream.remote_closed:
                    self._send(RstStream(sid, RstStatus.INVALID_STREAM if stream is None
                                         else RstStatus.STREAM_ALREADY_CLOSED))
                    return []
                stream.recv_window -= len(data)
                self.session_recv_window -= len(data)
                if self.enforce_peer_window and (stream.recv_window < 0 or self.session_recv_window < 0):
                    self._reset(sid, RstStatus.FLOW_CONTROL_ERROR)
                    return [StreamReset(sid, RstStatus.FLOW_CONTROL_ERROR)]
                events: list[Event] = [DataReceived(sid, data)] if data else []
                if flags & FLAG_FIN:
                    stream.remote_closed = True
                    events.append(StreamEnded(sid))
                    self._forget_if_done(sid)
                return events
            case RstStream(sid, status):
                self._streams.pop(sid, None)
                return [StreamReset(sid, status)]
            case Settings(entries):
                for _, sid_, value in entries:
                    if sid_ == SETTINGS_INITIAL_WINDOW_SIZE:
                        self.enforce_peer_window = True
                        delta, self._initial_send_window = value - self._initial_send_window, value
                        for stream in self._streams.values():
                            stream.send_window += delta
                self._flush_pending()
                return []
            case Ping(ping_id):
                if ping_id % 2 == 1:     # client-initiated pings are odd; echo them unchanged
                    self._send(frame)
                return []
            case WindowUpdate(sid, delta):
                self.enforce_peer_window = True
                if sid == 0:
                    self.session_send_window += delta
                elif sid in self._streams:
                    self._streams[sid].send_window += delta
                self._flush_pending()
                return []
            case GoAway(last, _):
                self.goaway_received = True
                return [ConnectionClosed(last)]
            case HeadersFrame() | SynReply():
                return []        # trailing headers / replies to server pushes: nothing to do
        return []

    # -- output -----------------------------------------------------------------------------
    def _send(self, frame: Frame) -> None:
        self._out += self._writer.encode(frame)

    def data_to_send(self) -> bytes:
        out, self._out = bytes(self._out), bytearray()
        return out

    def reply(self, stream_id: int, headers: Headers | None = None, fin: bool = False) -> None:
        self._send(SynReply(stream_id, headers or {}, FLAG_FIN if fin else 0))
        if fin:
            self._mark_local_closed(stream_id)

    def send_data(self, stream_id: int, data: bytes, fin: bool = False) -> None:
        """Queue data (and optionally FIN); it goes out as far as the windows allow."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.local_closed or stream.pending_fin:
            return       # the peer reset it, or we already closed it: drop, like a closed pipe
        for i in range(0, len(data), self._max_frame):
            stream.pending.append(data[i:i + self._max_frame])
        stream.pending_fin = stream.pending_fin or fin
        self._flush_stream(stream_id, stream)

    def end_stream(self, stream_id: int) -> None:
        self.send_data(stream_id, b"", fin=True)

    def pending_bytes(self, stream_id: int) -> int:
        stream = self._streams.get(stream_id)
        return sum(map(len, stream.pending)) if stream else 0

    def consumed(self, stream_id: int, n: int) -> None:
        """The application has taken n received bytes: reopen the windows by that much."""
        if n <= 0:
            return
        self.session_recv_window += n
        self._send(WindowUpdate(0, n))
        stream = self._streams.get(stream_id)
        if stream is not None and not stream.remote_closed:
            stream.recv_window += n
            self._send(WindowUpdate(stream_id, n))

    def reset(self, stream_id: int, status: int = RstStatus.CANCEL) -> None:
        self._reset(stream_id, status)

    def close(self, status: int = GoAwayStatus.OK) -> None:
        if not self.goaway_sent:
            self.goaway_sent = True
            self._send(GoAway(self._last_client_stream, status))

    def _reset(self, stream_id: int, status: int) -> None:
        self._streams.pop(stream_id, None)
        self._send(RstStream(stream_id, status))

    def _flush_pending(self) -> None:
        for sid, stream in list(self._streams.items()):
            self._flush_stream(sid, stream)

    def _flush_stream(self, sid: int, stream: _Stream) -> None:
        while stream.pending:
            chunk = stream.pending[0]
            if self.enforce_peer_window:
                room = min(stream.send_window, self.session_send_window)
                if room <= 0:
                    return
                if len(chunk) > room:
                    chunk, stream.pending[0] = chunk[:room], chunk[room:]
                else:
                    stream.pending.popleft()
            else:
                stream.pending.popleft()
            stream.send_window -= len(chunk)
            self.session_send_window -= len(chunk)
            last = not stream.pending and stream.pending_fin
            self._send(Data(sid, chunk, FLAG_FIN if last else 0))
            if last:
                self._mark_local_closed(sid)
                return
        if stream.pending_fin and not stream.local_closed:
            self._send(Data(sid, b"", FLAG_FIN))
            self._mark_local_closed(sid)

    def _mark_local_closed(self, sid: int) -> None:
        stream = self._streams.get(sid)
        if stream is not None:
            stream.local_closed = True
            self._forget_if_done(sid)

    def _forget_if_done(self, sid: int) -> None:
        stream = self._streams.get(sid)
        if stream is not None and stream.local_closed and stream.remote_closed:
            del self._streams[sid]
