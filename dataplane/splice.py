"""The byte pipe after a 101 (exec, attach, cp, port-forward).

Two pumps, one per direction, each `read()` from one side and `write()` (awaiting the other
side's drain: backpressure) to the other. The readers hand out the bytes their parsers had
already buffered first. An EOF in one direction is passed on as `write_eof()` on the other side
(a half-close where the transport supports it; over TLS, which cannot half-close, the writer
closes after flushing) while the other direction keeps running where the half-close was
possible; where it was not (TLS), the session ends with that EOF. There is no idle timeout. The
splice ends when both directions have ended or either side has failed.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


class Reader(Protocol):
    async def read(self, limit: int = -1) -> bytes: ...


class Writer(Protocol):
    async def write(self, data: bytes) -> None: ...
    def can_write_eof(self) -> bool: ...
    def write_eof(self) -> None: ...
    def close(self) -> None: ...


ENDED = "ended"     # what an `ending`'s server → client pump returns when the gateway ended it


@dataclass
class SpliceStats:
    session_start: float = field(default_factory=time.time)
    session_end: float = 0.0
    bytes_in: int = 0      # client → upstream
    bytes_out: int = 0     # upstream → client
    ended_by: str = ""     # "client", "upstream", "error", "cancelled", "gateway"


async def _pump(reader: Reader, writer: Writer, stats: SpliceStats, attr: str,
                observe: Callable[[bytes], Any] | None = None) -> bool:
    """Copy until EOF; True when the EOF was passed on as a half-close (the other direction
    may go on), False when the writer cannot half-close (the session is over). `observe` sees
    every chunk before it is passed on."""
    while True:
        data = await reader.read(65536)
        if not data:
            half_close = writer.can_write_eof()
            writer.write_eof()
            return half_close
        if observe is not None:
            observe(data)
        setattr(stats, attr, getattr(stats, attr) + len(data))
        await writer.write(data)


async def splice(client_reader: Reader, client_writer: Writer, upstream_reader: Reader,
                 upstream_writer: Writer, stats: SpliceStats | None = None,
                 ending: Any = None) -> SpliceStats:
    """Pipe bytes both ways until both directions end (or one side fails). With `ending` (a
    sessionend.SessionEnding) the gateway can end the session itself, telling the client why."""
    stats = stats or SpliceStats()
    observe = ending.observe_in if ending is not None else None
    up = asyncio.ensure_future(_pump(client_reader, upstream_writer, stats, "bytes_in", observe))
    if ending is None:
        down = asyncio.ensure_future(_pump(upstream_reader, client_writer, stats, "bytes_out"))
    else:
        down = asyncio.ensure_future(ending.pump_out(upstream_reader, client_writer, stats))
    pending = {up, down}
    try:
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                failed = task.exception() is not None
                if not failed and task.result() == ENDED:
                    # the gateway ended it: nothing more goes upstream; the client may hang up
                    stats.ended_by = "gateway"
                    up.cancel()
                    await asyncio.gather(up, return_exceptions=True)
                    pending = set()
                    await ending.linger(client_reader)
                    break
                if not stats.ended_by:
                    stats.ended_by = "error" if failed else ("client" if task is up else "upstream")
                if failed or not task.result():
                    # a side failed, or an EOF could not be passed on as a half-close (TLS):
                    # the other direction cannot go on either
                    for other in pending:
                        other.cancel()
                    await asyncio.gather(*pending, return_exceptions=True)
                    pending = set()
                    break
    except asyncio.CancelledError:
        stats.ended_by = "cancelled"
        up.cancel()
        down.cancel()
        await asyncio.gather(up, down, return_exceptions=True)
        raise
    finally:
        stats.session_end = time.time()
        upstream_writer.close()
    return stats
