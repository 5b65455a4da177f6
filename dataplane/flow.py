"""Flow control shared by both sides of the proxy (uvicorn's flow_control.py, extended).

`FlowControl` is one small object per transport: `drain()` waits while the transport's write
buffer is above its high-water mark (asyncio calls `pause_writing`/`resume_writing`), and
`connection_lost()` wakes every waiter. `pause_reading`/`resume_reading` are idempotent.

`ByteQueue` is the read side: bytes received from a transport wait here until a consumer takes
them; above `high_water` buffered bytes the transport stops reading, below `low_water` it resumes.
That is how the two sides are tied: a consumer that is itself waiting in `drain()` on the other
side stops taking bytes, this queue fills, and reading pauses.

`ChunkBuffer` is the waiting part every such read-side buffer shares (this queue, an HTTP/2 stream's
body on either side); `PipeReader` reads a byte pipe after a 101; `transport_peer` is what a
downstream connection learns of its client from the transport.
"""
from __future__ import annotations

import asyncio
from collections import deque

from cryptography import x509

HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024


class ConnectionGone(ConnectionError):
    """The peer went away while we were writing to it."""


class Flag:
    """A one-way flag with asyncio.Event's `set`/`is_set` but nothing to wait on: cheaper to make
    once per request (whoever must wake up is cancelled or woken explicitly)."""

    __slots__ = ("_set",)

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set


class FlowControl:
    def __init__(self, transport: asyncio.BaseTransport):
        self._transport = transport
        self.read_paused = False
        self.write_paused = False
        self.closed = False
        self._writable = asyncio.Event()
        self._writable.set()

    # reading ---------------------------------------------------------------------------------
    def pause_reading(self) -> None:
        if not self.read_paused and not self.closed:
            self.read_paused = True
            try:
                self._transport.pause_reading()
            except (RuntimeError, AttributeError):  # closing transport
                pass

    def resume_reading(self) -> None:
        if self.read_paused and not self.closed:
            self.read_paused = False
            try:
                self._transport.resume_reading()
            except (RuntimeError, AttributeError):
                pass

    # writing (called by the Protocol's pause_writing/resume_writing) ----------------------------
    def pause_writing(self) -> None:
        if not self.write_paused:
            self.write_paused = True
            self._writable.clear()

    def resume_writing(self) -> None:
        if self.write_paused:
            self.write_paused = False
            self._writable.set()

    async def drain(self) -> None:
        """Return when the peer may take more bytes; raise ConnectionGone once it is gone."""
        if self.closed:
            raise ConnectionGone("connection closed")
        if self.write_paused:
            await self._writable.wait()
            if self.closed:
                raise ConnectionGone("connection closed")

    def connection_lost(self) -> None:
        self.closed = True
        self._writable.set()


def transport_peer(transport: asyncio.BaseTransport) -> tuple[tuple[str, int], x509.Certificate | None]:
    """The client's (host, port) (("", 0) when unknown) and its TLS certificate, if it sent one."""
    client: tuple[str, int] = ("", 0)
    peer_cert: x509.Certificate | None = None
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        client = (str(peer[0]), int(peer[1]))
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is not None:
        der = ssl_object.getpeercert(binary_form=True)
        if der:
            peer_cert = x509.load_der_x509_certificate(der)
    return client, peer_cert


class ChunkBuffer:
    """Chunks fed by a protocol callback and taken by one reader: `_wait_readable()` waits until a
    chunk is buffered (True), the end is reached (False) or a stored exception is raised."""

    def __init__(self, eof: bool = False):
        self._chunks: deque = deque()
        self._eof = eof
        self._exc: BaseException | None = None
        self._waiter: asyncio.Future | None = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait_readable(self) -> bool:
        while not self._chunks:
            if self._exc is not None:
                raise self._exc
            if self._eof:
                return False
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return True


class ByteQueue(ChunkBuffer):
    """Bytes from a transport, consumed by one reader, with read-side backpressure."""

    def __init__(self, flow: FlowControl | None, high_water: int = HIGH_WATER,
                 low_water: int = LOW_WATER):
        super().__init__()
        self._flow = flow
        self._size = 0
        self.high_water = high_water
        self.low_water = low_water
        self.total = 0          # bytes ever fed

    @property
    def buffered(self) -> int:
        return self._size

    @property
    def at_eof(self) -> bool:
        return self._eof and not self._chunks

    def feed(self, data: bytes) -> None:
        if not data:
            return
        self._chunks.append(bytes(data))
        self._size += len(data)
        self.total += len(data)
        if self._flow is not None and self._size > self.high_water:
            self._flow.pause_reading()
        self._wake()

    def feed_eof(self) -> None:
        self._eof = True
        self._wake()

    def set_exception(self, exc: BaseException) -> None:
        if self._exc is None and not self._eof:
            self._exc = exc
        self._wake()

    async def read(self, limit: int = -1) -> bytes:
        """The next bytes (at most `limit` when > 0); b"" at EOF; raises the stored exception."""
        if not await self._wait_readable():
            return b""
        chunk = self._chunks.popleft()
        if 0 < limit < len(chunk):
            self._chunks.appendleft(chunk[limit:])
            chunk = chunk[:limit]
        self._size -= len(chunk)
        if self._flow is not None and self._size <= self.low_water:
            self._flow.resume_reading()
        return chunk

    async def read_all(self, limit: int) -> bytes:
        out = bytearray()
        while True:
            chunk = await self.read()
            if not chunk:
                return bytes(out)
            out += chunk
            if len(out) > limit:
                raise ValueError("body too large")


class PipeReader:
    """Reads from a byte pipe after a 101 (either side); a lost connection reads as the end."""

    def __init__(self, queue: ByteQueue):
        self._queue = queue

    async def read(self, limit: int = -1) -> bytes:
        try:
            return await self._queue.read(limit)
        except ConnectionError:
            return b""
