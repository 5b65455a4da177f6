"""FakeKube: a fake Kubernetes API server over TLS for kubectl, the gateway's tests and the quick start."""
from __future__ import annotations

import asyncio
import collections
import logging
import ssl
from pathlib import Path
from typing import Any, Mapping

from . import seed as seeding
from .api import App, RecordedRequest
from .auth import DEFAULT_GATEWAY_USER, Authenticator, Rbac
from .http1 import serve_connection
from .http2 import serve_h2_connection
from .store import Store

log = logging.getLogger(__name__)


def server_ssl_context(cert: str | Path, key: str | Path, client_ca: str | Path | None,
                       http2: bool = False) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    context.set_alpn_protocols(["h2", "http/1.1"] if http2 else ["http/1.1"])
    if client_ca is not None:
        context.load_verify_locations(str(client_ca))
        context.verify_mode = ssl.CERT_OPTIONAL     # verified when presented; tokens work without one
    return context


class FakeKube:
    """Usage (inside a running event loop):

        fake = FakeKube(cert=..., key=..., gateway_token="t", rbac={"users": {"alice": "admin"}})
        await fake.start(); fake.url; fake.store.create({...}); fake.requests; await fake.stop()

    `store` methods are thread-safe, so a test driving the server from another thread (see
    `tests.fakekube.threaded.running`) may call them directly while watches and `logs -f` run.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, cert: str | Path, key: str | Path,
                 gateway_token: str, client_ca: str | Path | None = None,
                 rbac: Mapping[str, Mapping[str, str]] | None = None,
                 seed: list[dict[str, Any]] | None = None,
                 gateway_user: str = DEFAULT_GATEWAY_USER, http2: bool = False):
        self.host = host
        self.port = port
        self.store = Store()
        seeding.install(self.store, seed)
        self._ssl = server_ssl_context(cert, key, client_ca, http2)
        self.app = App(self.store, Authenticator(gateway_token, gateway_user), Rbac(rbac),
                       server_address=lambda: f"{self.host}:{self.port}")
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.alpn_counts: collections.Counter[str | None] = collections.Counter()   # connections per ALPN

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received, in order (method, path+query, headers); upgrades included."""
        return self.app.requests

    def append_log(self, namespace: str, pod: str, container: str, line: str) -> None:
        self.store.append_log(namespace, pod, container, line)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._on_connection, self.host, self.port, ssl=self._ssl,
                                                  ssl_handshake_timeout=10)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stops listening and ends every open connection (watches and streams included)."""
        if self._server is None:
            return
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        stopping = False
        try:
            ssl_object = writer.get_extra_info("ssl_object")
            alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
            self.alpn_counts[alpn] += 1
            if alpn == "h2":
                await serve_h2_connection(self.app, reader, writer)
            else:
                await serve_connection(self.app, reader, writer)
        except asyncio.CancelledError:
            stopping = True
        except (ConnectionError, ssl.SSLError):
            pass
        except Exception:  # noqa: BLE001 - one broken connection must not take the server down
            log.exception("connection failed")
        finally:
            self._connections.discard(task)
            await _close(writer, abort=stopping)


async def _close(writer: asyncio.StreamWriter, abort: bool) -> None:
    """Closes and waits until the socket is really gone (a stopped loop must not leave it behind)."""
    if abort:
        writer.transport.abort()
    else:
        writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), 5)
    except (asyncio.TimeoutError, ConnectionError, ssl.SSLError, OSError):
        writer.transport.abort()
