"""Admin listener: /healthz, /readyz and /metrics over plain HTTP/1.1 (loopback by default).

Kept apart from the gateway port so that probes and scrapes never compete with, or get
authenticated like, API traffic.
"""
from __future__ import annotations

import asyncio
import logging

import h11

from dataplane.metrics import GatewayMetrics
from dataplane.snapshot import SnapshotHolder

log = logging.getLogger(__name__)

METRICS_CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
TEXT_CONTENT_TYPE = b"text/plain; charset=utf-8"
MAX_REQUEST_BYTES = 16 * 1024
READ_TIMEOUT = 30.0


def _answer(method: bytes, target: bytes, holder: SnapshotHolder, metrics: GatewayMetrics) -> tuple[int, bytes, bytes]:
    """(status, content type, body) for one admin request."""
    path = target.split(b"?", 1)[0]
    if method not in (b"GET", b"HEAD"):
        return 405, TEXT_CONTENT_TYPE, b"method not allowed\n"
    if path == b"/healthz":
        return 200, TEXT_CONTENT_TYPE, b"ok"
    if path == b"/readyz":
        if holder.current is None:
            return 503, TEXT_CONTENT_TYPE, b"no snapshot applied yet"
        return 200, TEXT_CONTENT_TYPE, b"ok"
    if path == b"/metrics":
        return 200, METRICS_CONTENT_TYPE, metrics.render()
    return 404, TEXT_CONTENT_TYPE, b"not found\n"


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 holder: SnapshotHolder, metrics: GatewayMetrics) -> None:
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_BYTES)
    try:
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                data = await asyncio.wait_for(reader.read(65536), READ_TIMEOUT)
                connection.receive_data(data)
                continue
            if isinstance(event, h11.Request):
                status, content_type, body = _answer(event.method, event.target, holder, metrics)
                headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()),
                           (b"cache-control", b"no-store")]
                writer.write(connection.send(h11.Response(status_code=status, headers=headers)))
                if event.method != b"HEAD":
                    writer.write(connection.send(h11.Data(data=body)))
                writer.write(connection.send(h11.EndOfMessage()))
                await writer.drain()
            elif isinstance(event, h11.ConnectionClosed) or connection.our_state is h11.MUST_CLOSE:
                break
            elif connection.our_state is h11.DONE and connection.their_state is h11.DONE:
                connection.start_next_cycle()
    except h11.RemoteProtocolError as exc:
        if connection.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            body = b"bad request\n"
            writer.write(connection.send(h11.Response(
                status_code=exc.error_status_hint,
                headers=[(b"content-type", TEXT_CONTENT_TYPE), (b"content-length", str(len(body)).encode()),
                         (b"connection", b"close")])))
            writer.write(connection.send(h11.Data(data=body)))
            writer.write(connection.send(h11.EndOfMessage()))
    except (asyncio.TimeoutError, ConnectionError):
        pass
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except ConnectionError:
            pass


async def start_admin_server(host: str, port: int, holder: SnapshotHolder,
                             metrics: GatewayMetrics) -> asyncio.AbstractServer:
    """Serve the admin endpoints; `metrics` reads snapshot revision and age from `holder`."""
    metrics.track_snapshots(holder)
    server = await asyncio.start_server(
        lambda r, w: _serve(r, w, holder, metrics), host, port, limit=MAX_REQUEST_BYTES)
    log.info("admin listener on %s", ", ".join(str(s.getsockname()) for s in server.sockets))
    return server
