import asyncio

import pytest

from dataplane.admin import start_admin_server
from dataplane.metrics import GatewayMetrics
from dataplane.snapshot import Snapshot, SnapshotHolder

from .helpers import snapshot_data


async def _exchange(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    data = await asyncio.wait_for(reader.read(), 10)  # the requests below end with Connection: close
    writer.close()
    await writer.wait_closed()
    return data


def _get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n".encode()


def _split(response: bytes) -> tuple[bytes, bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    return head, body


@pytest.fixture
def run():
    def run(scenario):
        async def main():
            holder, metrics = SnapshotHolder(), GatewayMetrics()
            server = await start_admin_server("127.0.0.1", 0, holder, metrics)
            port = server.sockets[0].getsockname()[1]
            try:
                return await scenario(port, holder, metrics)
            finally:
                server.close()
                await server.wait_closed()
        return asyncio.run(main())
    return run


def test_healthz_and_readyz_follow_the_snapshot(run):
    async def scenario(port, holder, metrics):
        head, body = _split(await _exchange(port, _get("/healthz")))
        assert head.startswith(b"HTTP/1.1 200") and body == b"ok"

        head, body = _split(await _exchange(port, _get("/readyz")))
        assert head.startswith(b"HTTP/1.1 503") and body == b"no snapshot applied yet"

        holder.apply(Snapshot(snapshot_data()))
        head, body = _split(await _exchange(port, _get("/readyz")))
        assert head.startswith(b"HTTP/1.1 200") and body == b"ok"
    run(scenario)


def test_metrics_endpoint_serves_prometheus_text(run):
    async def scenario(port, holder, metrics):
        holder.apply(Snapshot(snapshot_data(revision=42)))
        metrics.decisions_total.labels(result="allow").inc()
        head, body = _split(await _exchange(port, _get("/metrics")))
        assert head.startswith(b"HTTP/1.1 200")
        assert b"content-type: text/plain; version=0.0.4" in head.lower()
        assert b'accesspoint_decisions_total{result="allow"} 1\n' in body
        assert b"accesspoint_snapshot_revision 42\n" in body
    run(scenario)


def test_keep_alive_serves_several_requests_on_one_connection(run):
    async def scenario(port, holder, metrics):
        keep = b"GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n"
        response = await _exchange(port, keep + keep + _get("/healthz"))
        assert response.count(b"HTTP/1.1 200") == 3
    run(scenario)


@pytest.mark.parametrize("raw, status", [
    (_get("/nope"), b"404"),
    (b"POST /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", b"405"),
    (b"GET /healthz HTTP/1.1\r\n\r\n", b"400"),  # no Host
    (b"NONSENSE\r\n\r\n", b"400"),
])
def test_bad_requests(run, raw, status):
    async def scenario(port, holder, metrics):
        response = await _exchange(port, raw)
        assert response.startswith(b"HTTP/1.1 " + status)
    run(scenario)
