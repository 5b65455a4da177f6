"""Walking a framed byte stream as it passes through the splice, looking at frame headers only.

A `FrameWalker` is fed the bytes of one direction of an upgraded connection (WebSocket, SPDY/3.1)
exactly as they are forwarded, and knows at every point whether the stream stands at a frame
boundary: that is where the gateway may add frames of its own (sessionend.py). Payloads are
skipped by counting, never copied, unless a subclass asks for one (a small SPDY control frame);
a chunk that lies inside one large payload costs one subtraction.
"""
from __future__ import annotations


class FrameWalker:
    """Subclasses say how long a frame header is and what it announces."""

    def __init__(self) -> None:
        self._head = bytearray()       # a frame header split across chunks
        self._left = 0                 # payload bytes of the current frame still to come
        self._collect: bytearray | None = None   # the current payload, when the subclass wants it

    @property
    def at_boundary(self) -> bool:
        return not self._left and not self._head

    def feed(self, data: bytes, stop_at_boundary: bool = False) -> int:
        """Account for `data`; returns how many of its bytes were taken: all of them, or with
        `stop_at_boundary` only those up to the first frame boundary (0 when already at one)."""
        pos, end = 0, len(data)
        while pos < end:
            if self._left:
                take = min(self._left, end - pos)
                if self._collect is not None:
                    self._collect += data[pos:pos + take]
                self._left -= take
                pos += take
                if not self._left:
                    self._end_payload()
                    if stop_at_boundary:
                        return pos
                continue
            if stop_at_boundary and not self._head:
                return pos
            head = self._head
            need = self._header_size(head) or 2
            while len(head) < need and pos < end:
                take = min(need - len(head), end - pos)
                head += data[pos:pos + take]
                pos += take
                need = self._header_size(head) or need
            if len(head) < need:
                break                        # the rest of the header comes with the next chunk
            length, collect = self._frame(bytes(head))
            head.clear()
            self._left = length
            self._collect = bytearray() if collect and length else None
            if not length:
                self._collect = bytearray() if collect else None
                self._end_payload()
        return pos

    def _end_payload(self) -> None:
        collected, self._collect = self._collect, None
        if collected is not None:
            self._payload(bytes(collected))

    # -- the framing ---------------------------------------------------------------------------
    def _header_size(self, head: bytearray) -> int:
        """The whole header's size once `head` shows it, else 0 (then at least 2 bytes are read)."""
        raise NotImplementedError

    def _frame(self, head: bytes) -> tuple[int, bool]:
        """A complete header: (payload length, whether `_payload` wants the payload)."""
        raise NotImplementedError

    def _payload(self, payload: bytes) -> None:
        """The payload of a frame whose header asked for it."""
