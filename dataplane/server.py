"""Gateway processes: the supervisor, the workers, the listener, signals and graceful drain.

- `--workers 1` (default): the process is the worker.
- `--workers N`: the parent forks N workers, each binding the listen port with SO_REUSEPORT
  (the kernel spreads connections) and serving its admin endpoint on admin port + its index.
  The parent supervises: a worker that dies is restarted (with a back-off when it keeps dying);
  SIGTERM/SIGINT and SIGHUP are forwarded to every worker.
- SIGTERM in a worker: stop accepting, close idle keep-alive connections, let in-flight requests
  finish and streams run until the drain grace expires, abort what is left, exit.
- SIGHUP in a worker: re-read the snapshot file (applied only when valid and not older).
- `--redis-url` (distribution.py): every worker follows the snapshots in Redis and sends its own
  heartbeat; the spool's one audit shipper runs in the parent (in the worker when it is alone).

The protocol spoken on a connection is chosen in one place, `PROTOCOLS`, keyed by the ALPN the
TLS handshake negotiated (no ALPN → HTTP/1.1, as kubectl's upgrade connections send none).
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time

from . import http1, http2
from .config import ConfigError, GatewayConfig
from .logsetup import add_log_level, setup_logging
from .pipeline import Gateway

log = logging.getLogger("accesspoint.server")

# negotiated ALPN → protocol class; None is "no ALPN".
PROTOCOLS: dict[str | None, type] = {
    "h2": http2.H2Protocol,
    "http/1.1": http1.HTTP1Protocol,
    None: http1.HTTP1Protocol,
}


class _AlpnDispatch(asyncio.Protocol):
    """Exists only until the handshake is done: picks the protocol by ALPN and steps aside."""

    def __init__(self, server: "GatewayServer"):
        self._server = server

    def connection_made(self, transport: asyncio.Transport) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        cls = PROTOCOLS.get(alpn)
        if cls is None:
            transport.abort()
            return
        protocol = self._server.new_protocol(cls)
        transport.set_protocol(protocol)
        protocol.connection_made(transport)

    def connection_lost(self, exc) -> None:
        pass


class GatewayServer:
    """One worker's TLS listener and its connections."""

    def __init__(self, config: GatewayConfig, gateway: Gateway):
        self.config = config
        self.gateway = gateway
        self.connections: set = set()
        self._server: asyncio.AbstractServer | None = None
        self._ssl = config.server_ssl_context()
        self._all_closed = asyncio.Event()
        self._all_closed.set()
        self._handlers: set[asyncio.Task] = set()

    async def _handle(self, request, response, prepared=None) -> None:
        task = asyncio.current_task()
        self._handlers.add(task)
        try:
            await self.gateway.handle(request, response, prepared)
        finally:
            self._handlers.discard(task)

    def new_protocol(self, cls):
        c = self.config
        if cls is http2.H2Protocol:
            extra = {"limits": http2.H2Limits.from_config(c)}
        else:   # HTTP/1.1: requests without a body or upgrade may take the fast path (fastpath.py)
            extra = {"fast": self.gateway.serve_fast}
        protocol = cls(self._handle, head_timeout=c.head_timeout,
                       keepalive_timeout=c.keepalive_timeout, max_head=c.max_head_size,
                       max_line=c.max_line_size, on_close=self._closed, **extra)
        self.connections.add(protocol)
        self._all_closed.clear()
        return protocol

    def _closed(self, protocol) -> None:
        self.connections.discard(protocol)
        if not self.connections:
            self._all_closed.set()

    async def start(self, sock=None) -> None:
        loop = asyncio.get_running_loop()
        sock = sock if sock is not None else self.config.bind_socket()
        self._server = await loop.create_server(
            lambda: _AlpnDispatch(self), sock=sock, ssl=self._ssl,
            ssl_handshake_timeout=self.config.head_timeout, backlog=1024)

    @property
    def port(self) -> int:
        return self._server.sockets[0].getsockname()[1]

    async def drain(self, grace: float) -> None:
        """Stop accepting, finish in-flight requests, give streams `grace` seconds, then abort."""
        if self._server is not None:
            self._server.close()
        for protocol in list(self.connections):
            protocol.shutdown()
        if self.connections:
            try:
                async with asyncio.timeout(grace):
                    await self._all_closed.wait()
            except TimeoutError:
                log.warning("drain grace expired: aborting %d connection(s)", len(self.connections))
                for protocol in list(self.connections):
                    protocol.abort()
        # aborted connections cancel their requests; let each write its audit event
        if self._handlers:
            await asyncio.gather(*list(self._handlers), return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()


# -- a worker ---------------------------------------------------------------------------------------

class Worker:
    """Everything one worker process runs; usable in-process (tests) as well."""

    def __init__(self, config: GatewayConfig, index: int = 0):
        from .audit import AuditSpool
        from .metrics import GatewayMetrics
        from .snapshot import SnapshotHolder, resolve_credential
        from .tunnel.gateway import TunnelRegistry, UpstreamRoutes, replica_id
        from .tunnel.membership import Member
        from .tunnel.metrics import GatewayTunnelMetrics
        from .upstream_h2 import NegotiatingPool

        self.config = config
        self.index = index
        self.holder = SnapshotHolder()
        self.metrics = GatewayMetrics()
        self.audit = AuditSpool(config.audit_spool)
        self.upstreams = NegotiatingPool(
            secrets_dir=config.secrets_dir, dial_timeout=config.upstream_dial_timeout,
            max_idle=config.upstream_pool_size, idle_timeout=config.upstream_idle_timeout,
            resolve_credential=resolve_credential, ping_interval=config.upstream_ping_interval,
            ping_timeout=config.upstream_ping_timeout, http2=config.upstream_http2)
        # clusters with `tunnel: true` are served through agents' tunnels (docs/tunnels.md)
        # this replica as agents see it (tunnel/membership.py): one tunnel per worker of each replica
        self.tunnel_member = Member(replica_id(config), config.workers, config.tunnel_advertise or None)
        self.tunnels = TunnelRegistry(_assertion_signer(config), ping_interval=config.tunnel_ping_interval,
                                      ping_timeout=config.tunnel_ping_timeout)
        self.tunnels.metrics = GatewayTunnelMetrics(self.metrics.registry, self.tunnels)
        self.tunnel_listener = None
        self.fleet = None                 # tunnel/membership.FleetWatcher with --redis-url and tunnels
        self.gateway = Gateway(self.holder, config, self.audit, self.metrics,
                               UpstreamRoutes(self.upstreams, self.tunnels))
        self.server = GatewayServer(config, self.gateway)
        self.admin: asyncio.AbstractServer | None = None
        self.distribution = None          # the Redis side (distribution.py) with --redis-url
        self._public_key = None

    def public_key(self):
        from .signing import load_public_key

        if self._public_key is None:
            self._public_key = load_public_key(self.config.snapshot_public_key)
        return self._public_key

    def reload_snapshot(self) -> bool:
        """(Re-)read the snapshot file; a bad or older snapshot leaves the current one in place."""
        from .snapshot import SnapshotError, load_snapshot_file

        if not self.config.snapshot:
            return False                  # following Redis only: nothing to re-read
        try:
            snapshot = load_snapshot_file(self.config.snapshot, self.public_key())
        except (SnapshotError, OSError, ValueError) as exc:
            log.error("worker %d: snapshot not loaded: %s", self.index, exc)
            return False
        applied = self.holder.apply(snapshot)
        if applied and self.distribution is not None:
            self.distribution.applied(self.holder.current)
        return applied

    async def start(self, sock=None) -> None:
        from .admin import start_admin_server
        from .distribution import Distribution

        self.reload_snapshot()
        if self.config.redis_url:
            try:
                public_key = self.public_key()
            except (OSError, ValueError) as exc:
                raise ConfigError(f"--snapshot-public-key: {exc}") from None
            self.distribution = Distribution(self.config, self.index, self.holder, self.metrics, public_key)
            await self.distribution.start()
        loop = asyncio.get_running_loop()
        self.audit.start_periodic_fsync(loop)
        await self.server.start(sock)
        if self.config.tunnel_port:
            from .tunnel.gateway import TunnelListener

            self.tunnel_listener = TunnelListener(self.tunnels, self.holder, self.config.tunnel_ssl_context(),
                                                  handshake_timeout=self.config.head_timeout,
                                                  gateway_id=self.tunnel_member.gateway, worker=self.index,
                                                  workers=self.config.workers, audit=self.audit.append)
            await self.tunnel_listener.start(self.config.listen_address[0], self.config.tunnel_port)
            if self.distribution is not None:
                from .distribution import redis_client
                from .tunnel.gateway import follow_fleet

                self.fleet = follow_fleet(self.distribution.heartbeat, self.tunnels, self.tunnel_member,
                                          self.index, redis_client(self.config))
        address = self.config.admin_address(self.index)
        if address is not None:
            self.admin = await start_admin_server(address[0], address[1], self.holder, self.metrics)
        log.info("worker %d (pid %d) serving on %s", self.index, os.getpid(), self.config.listen)

    async def stop(self, grace: float | None = None) -> None:
        if self.distribution is not None:
            await self.distribution.leave_fleet()
        if self.admin is not None:
            self.admin.close()
        if self.tunnel_listener is not None:
            self.tunnel_listener.close()
        if self.fleet is not None:
            await self.fleet.stop()
        self.tunnels.drain()          # agents open tunnels elsewhere; streams in flight finish here
        await self.server.drain(self.config.drain_grace if grace is None else grace)
        if self.distribution is not None:
            await self.distribution.stop()   # after the drain: revocations still end streams
        self.tunnels.close()
        self.upstreams.close()
        if self.admin is not None:
            await self.admin.wait_closed()
        self.audit.close()

    async def run_until_signalled(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload_snapshot)
        await self.start()
        await stop.wait()
        log.info("worker %d draining (grace %gs)", self.index, self.config.drain_grace)
        await self.stop()


def _assertion_signer(config: GatewayConfig):
    """The fleet's identity-assertion signer when this gateway serves tunnels, else None."""
    if not config.tunnel_port:
        return None
    from .signing import load_private_key
    from .tunnel.assertion import AssertionSigner

    return AssertionSigner(load_private_key(config.tunnel_assertion_key), ttl=config.tunnel_assertion_ttl)


def run_worker(config: GatewayConfig, index: int = 0) -> int:
    import uvloop

    try:
        uvloop.run(Worker(config, index).run_until_signalled())
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    return 0


# -- the supervisor -----------------------------------------------------------------------------------

def _spawn(config: GatewayConfig, index: int) -> int:
    pid = os.fork()
    if pid == 0:   # the child: a worker with default signal dispositions
        code = 1
        try:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
            code = run_worker(config, index)
        except BaseException:
            log.exception("worker %d crashed", index)
        finally:
            os._exit(code)
    return pid


def supervise(config: GatewayConfig) -> int:
    """Fork `config.workers` workers and keep them running until SIGTERM/SIGINT."""
    children: dict[int, int] = {}
    started: dict[int, float] = {}
    stopping = False

    def forward(sig, _frame) -> None:
        nonlocal stopping
        if sig in (signal.SIGTERM, signal.SIGINT):
            stopping = True
        for pid in list(children):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    for index in range(config.workers):
        pid = _spawn(config, index)
        children[pid] = index
        started[index] = time.monotonic()
    # The spool's one shipper lives here, not in the workers; started after the first forks so
    # that they do not inherit a copy of a thread that may hold a lock.
    shipper = None
    if config.redis_url:
        from .distribution import start_audit_shipper
        shipper = start_audit_shipper(config)
    exit_code = 0
    while children:
        try:
            pid, wait_status = os.wait()
        except ChildProcessError:
            break
        index = children.pop(pid, None)
        if index is None:
            continue
        code = os.waitstatus_to_exitcode(wait_status)
        if stopping:
            exit_code = exit_code or (code if code > 0 else 0)
            continue
        log.error("worker %d (pid %d) exited with %d: restarting", index, pid, code)
        if time.monotonic() - started[index] < 1.0:
            time.sleep(1.0)        # crash loop back-off (the supervisor has nothing else to do)
        if stopping:
            continue
        new_pid = _spawn(config, index)
        children[new_pid] = index
        started[index] = time.monotonic()
    if shipper is not None:
        shipper.stop()
    return exit_code


def run(config: GatewayConfig) -> int:
    if config.workers <= 1:
        return run_worker(config, 0)
    return supervise(config)


# -- the `accesspoint gateway` subcommand --------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    GatewayConfig.add_arguments(parser)
    add_log_level(parser)


def command(ns: argparse.Namespace) -> int:
    setup_logging(ns.log_level)
    try:
        config = GatewayConfig.from_namespace(ns)
        config.validate()
        config.server_ssl_context()         # fail now, in the parent, on bad certificates
        if config.tunnel_port:
            config.tunnel_ssl_context()
            _assertion_signer(config)
    except ConfigError as exc:
        print(f"accesspoint gateway: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"accesspoint gateway: TLS configuration: {exc}", file=sys.stderr)
        return 2
    return run(config)
