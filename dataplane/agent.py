"""`accesspoint agent`: the in-cluster end of a reverse tunnel (docs/tunnels.md).

The agent dials the gateway's tunnel port (TLS, its own client certificate, the gateway's CA
pinned), names its cluster, and once accepted serves HTTP/2 on that connection: each stream is a
caller's request, which tunnel/forwarder.py checks and sends to the API server with the agent's
own credential (a service account allowed only to impersonate). The credential never leaves the
cluster; the gateway fleet's public key is all it needs to trust.

High availability (tunnel/coverage.py): the agent keeps one tunnel to every worker process of
every gateway replica. It runs one dial loop per address, the `--gateway` addresses (a load
balancer, or a list of replicas) and the direct addresses the gateways advertise in their member
list (tunnel/membership.py), each dialling while it can give a tunnel the agent lacks; the
gateway's `OK` line says which replica and worker took a tunnel, and a duplicate is closed.

Reconnects: exponential backoff with jitter per address after a failure (tunnel/backoff.py); a
tunnel that stayed up for a while counts as a success. A drain notice from the gateway (it is
shutting down) makes the agent dial again at once while the old tunnel finishes its streams.
SIGTERM/SIGINT: close the tunnels and exit. `--metrics-listen`: /metrics and /healthz.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import math
import signal
import ssl
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from . import enrollment
from . import headers as hdrs
from .http2 import H2Limits, H2Protocol
from .logsetup import add_log_level, setup_logging
from .options import ConfigError, add_option_groups, options_from_namespace, raise_problems
from .tunnel import membership, protocol
from .tunnel.assertion import AssertionVerifier
from .tunnel.backoff import Backoff
from .tunnel.coverage import Coverage
from .tunnel.metrics import AgentMetrics
from .tunnel.forwarder import ApiServer, Forwarder, TokenFile

log = logging.getLogger("accesspoint.agent")

ENV_PREFIX = "ACCESSPOINT_AGENT_"
STABLE_AFTER = 10.0      # seconds a tunnel must have lived for its loss to restart the backoff
DUPLICATES_PER_WORKER = 4  # consecutive duplicate tunnels per known gateway worker before backing off
STREAM_WINDOW = 1024 * 1024
MAX_HEADER_LIST = 1024 * 1024     # assertions of callers with many groups are large


@dataclass
class AgentConfig:
    gateway: str = ""
    server_name: str = ""
    cluster: str = ""
    cert: str = ""
    key: str = ""
    ca: str = ""
    assertion_key: str = ""
    api_server: str = ""
    api_ca: str = ""
    token_file: str = ""
    dial_timeout: float = 10.0
    ping_interval: float = 5.0
    ping_timeout: float = 5.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    max_streams: int = 250
    metrics_listen: str = ""
    controlplane: str = ""
    controlplane_ca: str = ""
    bootstrap_token_file: str = ""
    state_dir: str = ""

    HELP = {
        "gateway": "HOST:PORT of the gateways' tunnel port (a load balancer in front of the fleet), or "
                   "several, comma-separated",
        "server_name": "name in the gateway's certificate (default: HOST of --gateway)",
        "cluster": "the cluster this agent serves, as the gateway's snapshot names it",
        "cert": "PEM file with the agent's client certificate",
        "key": "PEM file with the client certificate's private key",
        "ca": "PEM file with the CA of the gateways' serving certificate",
        "assertion_key": "Ed25519 public key (PEM) of the gateway fleet, which signs identity assertions",
        "api_server": "https URL of the API server (in a pod: https://kubernetes.default.svc)",
        "api_ca": "PEM file with the API server's CA",
        "token_file": "file with the agent's service-account token (re-read when it changes)",
        "dial_timeout": "seconds to connect, handshake and be accepted",
        "ping_interval": "seconds of silence on the tunnel before a keep-alive PING",
        "ping_timeout": "seconds a PING may go unanswered before the tunnel is declared dead",
        "backoff_initial": "first reconnect delay in seconds (doubles per failure, with jitter)",
        "backoff_max": "largest reconnect delay in seconds",
        "max_streams": "concurrent requests per tunnel (SETTINGS_MAX_CONCURRENT_STREAMS)",
        "metrics_listen": "HOST:PORT for /metrics and /healthz over plain HTTP (empty: none)",
        "controlplane": "HOST:PORT of the control plane API: enroll with the bootstrap token, then renew "
                        "(docs/tunnels.md, Registration); needs --state-dir",
        "controlplane_ca": "PEM CA that verifies the control plane API (plaintext only to a loopback address)",
        "bootstrap_token_file": "file with the one-time bootstrap token (used while --state-dir holds no "
                                "unexpired certificate)",
        "state_dir": "directory for the enrolled certificate and key (0600) and the gateways' CA; the default "
                     "of --cert, --key and --ca",
    }

    def _state_dir_defaults(self) -> None:
        if self.state_dir:   # enrollment writes the certificate with its key, and the gateways' CA, here
            state = Path(self.state_dir)
            self.cert = self.cert or str(state / enrollment.CREDENTIALS_FILE)
            self.key = self.key or self.cert
            self.ca = self.ca or str(state / enrollment.GATEWAY_CA_FILE)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        add_option_groups(parser, cls, {
            "gateway": ("gateway", "server_name", "cluster", "cert", "key", "ca", "assertion_key"),
            "cluster": ("api_server", "api_ca", "token_file"),
            "tunnel": ("dial_timeout", "ping_interval", "ping_timeout", "backoff_initial", "backoff_max",
                       "max_streams", "metrics_listen"),
            "registration": ("controlplane", "controlplane_ca", "bootstrap_token_file", "state_dir"),
        }, cls.HELP, ENV_PREFIX)

    @classmethod
    def from_namespace(cls, ns: argparse.Namespace, environ=None) -> "AgentConfig":
        return options_from_namespace(cls, ns, ENV_PREFIX, environ)

    def validate(self) -> None:
        """Every problem at once; fills --cert, --key and --ca from --state-dir first."""
        self._state_dir_defaults()
        problems: list[str] = []
        for address in self.gateway_addresses or [""]:
            if not _host_port_ok(address):
                problems.append(f"--gateway: expected HOST:PORT[,HOST:PORT...], got {self.gateway!r}")
                break
        if self.metrics_listen and not _host_port_ok(self.metrics_listen):
            problems.append(f"--metrics-listen: expected HOST:PORT, got {self.metrics_listen!r}")
        if not self.cluster:
            problems.append("--cluster is required")
        for name in ("cert", "key", "ca", "assertion_key", "api_ca", "token_file"):
            value = getattr(self, name)
            flag = "--" + name.replace("_", "-")
            if not value:
                problems.append(f"{flag} is required")
            elif self.state_dir and name in ("cert", "key", "ca"):
                pass     # enrollment writes them (checked when the TLS context is built)
            elif not Path(value).is_file():
                problems.append(f"{flag}: {value} is not a readable file")
        try:
            url = urlsplit(self.api_server)
            url_ok = url.scheme == "https" and bool(url.hostname)
        except ValueError:
            url_ok = False
        if not url_ok:
            problems.append("--api-server must be an https:// URL")
        if min(self.dial_timeout, self.ping_interval, self.ping_timeout, self.backoff_initial) <= 0:
            problems.append("--dial-timeout, --ping-interval, --ping-timeout and --backoff-initial must be positive")
        if self.backoff_max < self.backoff_initial:
            problems.append("--backoff-max must not be below --backoff-initial")
        if not 1 <= self.max_streams <= 10000:
            problems.append("--max-streams must be between 1 and 10000")
        if bool(self.controlplane) != bool(self.state_dir):
            problems.append("--controlplane and --state-dir go together (enrollment and renewal)")
        if self.bootstrap_token_file and not self.state_dir:
            problems.append("--bootstrap-token-file needs --controlplane and --state-dir")
        raise_problems(problems)

    @property
    def gateway_addresses(self) -> list[str]:
        return [a.strip() for a in self.gateway.split(",") if a.strip()]

    def tunnel_ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_verify_locations(cafile=self.ca)
        ctx.load_cert_chain(self.cert, self.key)
        ctx.set_alpn_protocols([protocol.ALPN])
        return ctx


class AgentTunnel(asyncio.Protocol):
    """One tunnel: the greeting, then an HTTP/2 server (`H2Protocol`) on the same connection.
    `accepted` resolves to the gateway's protocol.Accepted (which replica and worker); a tunnel
    to a worker the agent already holds one to is closed before it speaks HTTP/2 (`duplicate`),
    so the gateway never sends a request on it."""

    def __init__(self, agent: "Agent", address: str):
        self._agent = agent
        self.address = address
        self._reader = protocol.LineReader()
        self.accepted: asyncio.Future = asyncio.get_running_loop().create_future()
        self.closed = asyncio.Event()
        self.drain = asyncio.Event()
        self.transport: asyncio.Transport | None = None
        self.h2: H2Protocol | None = None
        self.duplicate = False

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None or ssl_object.selected_alpn_protocol() != protocol.ALPN:
            self._fail(protocol.HelloError(f"the gateway did not negotiate ALPN {protocol.ALPN}"))
            return
        transport.write(protocol.greeting(self._agent.config.cluster))

    def data_received(self, data: bytes) -> None:
        if self.accepted.done():
            return
        try:
            got = self._reader.feed(data)
            if got is None:
                return
            line, rest = got
            accepted = protocol.parse_answer(line)
        except protocol.HelloError as exc:
            self._fail(exc)
            return
        if not self._agent.coverage.offer(self.address, accepted, self):
            self.duplicate = True
            self.accepted.set_result(accepted)
            self.transport.close()
            return
        self.h2 = self._agent.new_server(self)
        self.transport.set_protocol(self.h2)
        self.h2.connection_made(self.transport)
        self.accepted.set_result(accepted)
        if rest:
            self.h2.data_received(rest)

    def _fail(self, exc: Exception) -> None:
        if not self.accepted.done():
            self.accepted.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc) -> None:      # before the greeting was answered
        self._fail(ConnectionError("the gateway closed the connection before answering"))
        self.closed.set()

    def on_control(self, command: bytes, headers) -> None:
        if command == protocol.DRAIN:
            log.info("the gateway behind %s is draining: dialling again", self.address)
            self.drain.set()
        elif command == protocol.MEMBERS:
            try:
                members = membership.decode(hdrs.header_value(headers, protocol.MEMBERS_HEADER) or b"")
            except ValueError as exc:
                log.warning("ignored a malformed member list from %s: %s", self.address, exc)
                return
            self._agent.learn(members)

    def server_closed(self, _protocol) -> None:
        self.closed.set()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class Agent:
    def __init__(self, config: AgentConfig):
        from .signing import load_public_key
        from .upstream_h2 import NegotiatingPool

        self.config = config
        verifier = AssertionVerifier(load_public_key(config.assertion_key), config.cluster)
        api = ApiServer(config.cluster, config.api_server, Path(config.api_ca).read_text())
        self.pool = NegotiatingPool(secrets_dir=None)
        self.forwarder = Forwarder(verifier, self.pool, api, TokenFile(config.token_file))
        self.ssl = config.tunnel_ssl_context()
        self.coverage = Coverage(config.gateway_addresses)
        self.metrics = AgentMetrics()
        self.metrics.tunnels.set_function(lambda: len(self.coverage.held))
        self.metrics.gateway_workers.set_function(
            lambda: sum(m.workers for m in self.coverage.members.values()))
        self.tunnels: set[AgentTunnel] = set()
        self.connected = 0            # tunnels accepted and kept so far (tests and logs)
        self._change = asyncio.Event()
        self._backoffs: dict[str, Backoff] = {}
        self._wait_before: dict[str, float] = {}     # address → delay owed after a tunnel loss
        self._watchers: set[asyncio.Task] = set()

    def reload_tls(self, _renewed=None) -> None:
        """A renewed certificate: new tunnels present it; open ones keep the old until they end."""
        self.ssl = self.config.tunnel_ssl_context()

    def new_server(self, tunnel: AgentTunnel) -> H2Protocol:
        c = self.config
        limits = H2Limits(max_concurrent_streams=c.max_streams, stream_window=STREAM_WINDOW,
                          connection_window=2 ** 31 - 1, ping_interval=c.ping_interval, ping_timeout=c.ping_timeout)
        metrics = self.metrics

        async def handle(request, response) -> None:
            metrics.streams.inc()
            metrics.streams_total.inc()
            try:
                await self.forwarder.handle(request, response, tunnel.on_control)
            finally:
                metrics.streams.dec()

        server = H2Protocol(handle, head_timeout=c.dial_timeout, keepalive_timeout=math.inf,
                            max_head=MAX_HEADER_LIST, limits=limits, on_close=tunnel.server_closed)
        server.keepalive = protocol.TunnelKeepalive(c.ping_interval, c.ping_timeout, math.inf, time.monotonic(),
                                                    on_rtt=metrics.rtt_seconds.observe)
        return server

    def learn(self, members: list[membership.Member]) -> None:
        self.coverage.learn(members)
        self._changed()

    def _changed(self) -> None:
        """Wake every loop waiting for a change (each waits on the event current when it looked)."""
        self._change.set()
        self._change = asyncio.Event()

    async def connect(self, address: str | None = None) -> AgentTunnel:
        """One tunnel, accepted by the gateway (HelloError when refused); not yet counted as held."""
        address = address or self.coverage.seeds[0]
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        loop = asyncio.get_running_loop()
        tunnel = AgentTunnel(self, address)
        try:
            async with asyncio.timeout(self.config.dial_timeout):
                await loop.create_connection(lambda: tunnel, host, int(port), ssl=self.ssl,
                                             server_hostname=self.config.server_name or host,
                                             ssl_handshake_timeout=self.config.dial_timeout)
                await tunnel.accepted
        except BaseException:
            if (tunnel.accepted.done() and not tunnel.accepted.cancelled() and not tunnel.accepted.exception()
                    and not tunnel.duplicate):
                self.coverage.lost(tunnel)        # accepted, then the dial timed out around it
            tunnel.close()
            raise
        return tunnel

    async def run(self, stop: asyncio.Event) -> None:
        """One dial loop per address worth dialling, re-planned whenever the member list changes."""
        loops: dict[str, asyncio.Task] = {}
        try:
            while not stop.is_set():
                change = self._change
                addresses = self.coverage.addresses()
                for address in addresses:
                    if address not in loops or loops[address].done():
                        loops[address] = asyncio.ensure_future(self._dial_loop(address, stop))
                for address in [a for a in loops if a not in addresses]:
                    loops.pop(address).cancel()          # a replica that left the fleet
                await _first(change.wait(), stop.wait())
        finally:
            for task in loops.values():
                task.cancel()
            await asyncio.gather(*loops.values(), return_exceptions=True)
            self.close()

    async def _dial_loop(self, address: str, stop: asyncio.Event) -> None:
        backoff = self._backoffs.setdefault(address, Backoff(self.config.backoff_initial, self.config.backoff_max))
        duplicates = 0
        while not stop.is_set():
            change = self._change
            delay = self._wait_before.pop(address, 0.0)
            if delay:
                log.warning("tunnel via %s closed; again in %.1fs", address, delay)
                await _sleep(delay, stop)
                continue
            if not self.coverage.wanted(address):
                await _first(change.wait(), stop.wait())
                continue
            try:
                tunnel = await self.connect(address)
            except (OSError, ssl.SSLError, TimeoutError, protocol.HelloError) as exc:
                self.metrics.dials_total.labels(result="refused" if isinstance(exc, protocol.HelloError)
                                                else "failed").inc()
                delay = backoff.next()
                log.warning("tunnel via %s: %s; again in %.1fs", address, _reason(exc), delay)
                await _sleep(delay, stop)
                continue
            accepted: protocol.Accepted = tunnel.accepted.result()
            if tunnel.duplicate:          # that worker already has our tunnel: dial again
                self.metrics.dials_total.labels(result="duplicate").inc()
                duplicates += 1
                known = sum(m.workers for m in self.coverage.members.values())
                if duplicates >= DUPLICATES_PER_WORKER * max(1, known):
                    duplicates = 0
                    await _sleep(backoff.next(), stop)
                continue
            duplicates = 0
            self.metrics.dials_total.labels(result="accepted").inc()
            self.tunnels.add(tunnel)
            self.connected += 1
            log.info("tunnel of cluster %s via %s is up (gateway %s, worker %d of %d)", self.config.cluster,
                     address, accepted.gateway, accepted.worker + 1, accepted.workers)
            watcher = asyncio.ensure_future(self._watch(address, tunnel, backoff))
            self._watchers.add(watcher)
            watcher.add_done_callback(self._watchers.discard)
            self._changed()

    async def _watch(self, address: str, tunnel: AgentTunnel, backoff: Backoff) -> None:
        """Until the tunnel closes or drains: then its worker needs a tunnel again."""
        started = time.monotonic()
        await _first(tunnel.closed.wait(), tunnel.drain.wait())
        self.coverage.lost(tunnel)
        drained = tunnel.drain.is_set()
        self.metrics.reconnects_total.labels(cause="drained" if drained else "closed").inc()
        if drained or time.monotonic() - started >= STABLE_AFTER:
            backoff.reset()
        if not drained:            # a lost gateway: not all agents at once (jitter), nor in a tight loop
            self._wait_before[address] = backoff.next()
        self._changed()
        await tunnel.closed.wait()       # a drained tunnel finishes its streams first
        self.tunnels.discard(tunnel)

    def close(self) -> None:
        for task in list(self._watchers):
            task.cancel()
        for tunnel in list(self.tunnels):
            tunnel.close()
        self.pool.close()


def _host_port_ok(address: str) -> bool:
    host, _, port = address.rpartition(":")
    return bool(host.strip("[]")) and port.isdigit() and 0 < int(port) < 65536


def _reason(exc: BaseException) -> str:
    if isinstance(exc, protocol.HelloError):
        return exc.reason
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed ({exc.verify_message})"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


async def _sleep(delay: float, stop: asyncio.Event) -> None:
    try:
        async with asyncio.timeout(delay):
            await stop.wait()
    except TimeoutError:
        pass


async def _first(*coroutines) -> None:
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def serve_metrics(address: str, metrics: AgentMetrics) -> asyncio.AbstractServer:
    """/metrics and /healthz over plain HTTP/1.0-style exchanges (one request per connection)."""
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b""
            if path == b"/metrics":
                status, body = b"200 OK", metrics.render()
            elif path == b"/healthz":
                status, body = b"200 OK", b"ok"
            else:
                status, body = b"404 Not Found", b"not found\n"
            writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: text/plain; version=0.0.4\r\n"
                         b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
            await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    host, _, port = address.rpartition(":")
    return await asyncio.start_server(answer, host.strip("[]"), int(port), limit=16 * 1024)


# -- the `accesspoint agent` subcommand ------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    AgentConfig.add_arguments(parser)
    add_log_level(parser)


def _enroll_if_needed(config: AgentConfig) -> None:
    token_file = Path(config.bootstrap_token_file) if config.bootstrap_token_file else None
    with enrollment.controlplane_channel(config.controlplane, config.controlplane_ca) as channel:
        enrollment.ensure_enrolled(enrollment.agent_service(channel), config.cluster, token_file,
                                   Path(config.state_dir))


async def _keep_renewed(config: AgentConfig, agent: Agent, stop: asyncio.Event) -> None:
    with enrollment.controlplane_channel(config.controlplane, config.controlplane_ca) as channel:
        await enrollment.keep_renewed(enrollment.agent_service(channel), Path(config.state_dir), stop,
                                      agent.reload_tls)


async def _main(config: AgentConfig) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    agent = Agent(config)
    if config.metrics_listen:
        await serve_metrics(config.metrics_listen, agent.metrics)
    if config.state_dir:
        await asyncio.gather(agent.run(stop), _keep_renewed(config, agent, stop))
    else:
        await agent.run(stop)


def command(ns: argparse.Namespace) -> int:
    import uvloop

    setup_logging(ns.log_level)
    try:
        config = AgentConfig.from_namespace(ns)
        config.validate()
    except ConfigError as exc:
        print(f"accesspoint agent: {exc}", file=sys.stderr)
        return 2
    if config.state_dir:
        try:
            _enroll_if_needed(config)
        except (enrollment.EnrollmentError, OSError) as exc:
            print(f"accesspoint agent: enrollment: {exc}", file=sys.stderr)
            return 1
    try:
        config.tunnel_ssl_context()
    except (OSError, ValueError, ssl.SSLError) as exc:
        print(f"accesspoint agent: TLS configuration: {exc}", file=sys.stderr)
        return 2
    uvloop.run(_main(config))
    return 0
