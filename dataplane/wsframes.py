"""WebSocket (RFC 6455) frames of a spliced session: the server → client walker, and the frames
the gateway itself sends to end a session (server frames: never masked)."""
from __future__ import annotations

import struct

from .framewalk import FrameWalker

OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE = 0x0, 0x1, 0x2, 0x8
FIN = 0x80
MAX_CLOSE_REASON = 123          # a control frame's payload is at most 125 bytes, 2 of them the code


class WsFrames(FrameWalker):
    """Follows the server's frames. A data message may be fragmented (a first frame without FIN,
    continuations, the last one with FIN) with control frames between the fragments; no other
    data frame may come before the message ends, which `in_message` tells."""

    def __init__(self) -> None:
        super().__init__()
        self.in_message = False
        self.close_seen = False         # the server started the closing handshake itself

    def _header_size(self, head: bytearray) -> int:
        if len(head) < 2:
            return 0
        size = 2 + (4 if head[1] & 0x80 else 0)
        length = head[1] & 0x7F
        return size + (2 if length == 126 else 8 if length == 127 else 0)

    def _frame(self, head: bytes) -> tuple[int, bool]:
        opcode = head[0] & 0x0F
        if opcode == OP_CLOSE:
            self.close_seen = True
        elif opcode < 0x8:              # data frames; control frames leave a message as it was
            self.in_message = not head[0] & FIN
        length = head[1] & 0x7F
        if length == 126:
            length = struct.unpack_from(">H", head, 2)[0]
        elif length == 127:
            length = struct.unpack_from(">Q", head, 2)[0]
        return length, False


def frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """One unmasked frame, as a server sends it."""
    first = (FIN if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        return bytes((first, n)) + payload
    if n < 1 << 16:
        return struct.pack(">BBH", first, 126, n) + payload
    return struct.pack(">BBQ", first, 127, n) + payload


def close_frame(code: int, reason: str = "") -> bytes:
    raw = reason.encode()[:MAX_CLOSE_REASON].decode("utf-8", "ignore").encode()
    return frame(OP_CLOSE, struct.pack(">H", code) + raw)
