"""A tiny API-server stand-in that holds tens of thousands of watches cheaply (loadtests/bench_idle.py).

ALPN h2 and http/1.1, as a real API server offers them (the gateway picks per request kind). A
watch (`watch=true` in the query) is answered with a 200, one ADDED event, and then held open
without an end; any other GET gets a small Pod (HTTP/1.1: keep-alive; request bodies are not
expected). HTTP/2: 250 concurrent streams per connection, Go's default as the API server uses
it; PINGs are answered (by h2 itself); reset streams are forgotten.

    python -m loadtests.idle_upstream --port 6443 --cert upstream.crt --key upstream.key
"""
from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import uvloop

MAX_STREAMS = 250
POD = json.dumps({"kind": "Pod", "apiVersion": "v1", "metadata": {
    "name": "web-0", "namespace": "default", "resourceVersion": "1001"}}).encode()
WATCH_EVENT = json.dumps({"type": "ADDED", "object": json.loads(POD)}).encode() + b"\n"


def is_watch(target: bytes) -> bool:
    return b"watch=true" in target.partition(b"?")[2]


class Upstream(asyncio.Protocol):
    """Hands the connection to the protocol that ALPN chose."""

    def __init__(self):
        self.protocol: asyncio.Protocol | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:
        alpn = transport.get_extra_info("ssl_object").selected_alpn_protocol()
        self.protocol = H2Upstream() if alpn == "h2" else Http1Upstream()
        self.protocol.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.protocol.data_received(data)


class Http1Upstream(asyncio.Protocol):
    def __init__(self):
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.holding = False     # a watch was answered: the connection now only waits for its end

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.holding:
            return
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0 and not self.holding:
            target = bytes(self.buffer[:self.buffer.find(b"\r\n")]).split(b" ")[1]
            del self.buffer[:end + 4]
            if is_watch(target):
                self.holding = True
                self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                     b"Transfer-Encoding: chunked\r\n\r\n"
                                     + b"%x\r\n%s\r\n" % (len(WATCH_EVENT), WATCH_EVENT))
            else:
                self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                     b"Content-Length: %d\r\n\r\n%s" % (len(POD), POD))


class H2Upstream(asyncio.Protocol):
    def __init__(self):
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.conn.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_STREAMS})
        self.conn.initiate_connection()
        transport.write(self.conn.data_to_send())

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            print(f"closing a connection: {exc!r}", file=sys.stderr, flush=True)
            self.transport.close()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                self._answer(event.stream_id, dict(event.headers).get(b":path", b""))
            elif isinstance(event, h2.events.DataReceived):
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        self.transport.write(self.conn.data_to_send())

    def _answer(self, stream_id: int, path: bytes) -> None:
        watch = is_watch(path)
        body = WATCH_EVENT if watch else POD
        headers = [(b":status", b"200"), (b"content-type", b"application/json")]
        if not watch:
            headers.append((b"content-length", str(len(body)).encode()))
        self.conn.send_headers(stream_id, headers)
        self.conn.send_data(stream_id, body, end_stream=not watch)   # a watch stays open


async def serve(port: int, cert: str, key: str) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["h2", "http/1.1"])
    server = await asyncio.get_running_loop().create_server(Upstream, "127.0.0.1", port, ssl=context,
                                                            backlog=4096)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    ns = parser.parse_args()
    uvloop.run(serve(ns.port, ns.cert, ns.key))


if __name__ == "__main__":
    main()
