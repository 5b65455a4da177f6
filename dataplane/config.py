"""Gateway configuration: options (CLI flag + ACCESSPOINT_<NAME> environment variable), validation
with clear messages, TLS context creation and socket binding. The CLI is a thin layer over this.

Options are grouped by concern; each group validates itself (`_validate_<group>`) and every
problem is reported at once in one `ConfigError`.

Workers: with `--workers N` each worker process binds the listen port with SO_REUSEPORT and
serves its admin endpoint on `admin port + worker index` (worker 0 on the admin port itself).
"""
from __future__ import annotations

import argparse
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from .options import ConfigError, add_option_groups, options_from_namespace, raise_problems
from .tunnel.protocol import ALPN as TUNNEL_ALPN

ENV_PREFIX = "ACCESSPOINT_"

# The protocols the listener negotiates, in preference order (each has a class in
# server.PROTOCOLS); `--no-http2` drops "h2".
ALPN_PROTOCOLS: tuple[str, ...] = ("h2", "http/1.1")
# --upstream-http2: which requests may go to an API server over HTTP/2 (upstream_h2.py)
UPSTREAM_HTTP2_MODES: tuple[str, ...] = ("streams", "always", "never")


def _host_port(value: str, what: str, problems: list[str]) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep:
        problems.append(f"{what}: expected HOST:PORT, got {value!r}")
        return "", 0
    host = host.strip("[]")
    try:
        port_number = int(port)
    except ValueError:
        problems.append(f"{what}: port {port!r} is not a number")
        return host, 0
    if not 0 <= port_number <= 65535:
        problems.append(f"{what}: port {port_number} is out of range")
    return host, port_number


@dataclass
class GatewayConfig:
    # listener
    listen: str = "0.0.0.0:8443"
    tls_cert: str = ""
    tls_key: str = ""
    client_ca: str = ""
    # policy
    snapshot: str = ""
    snapshot_public_key: str = ""
    secrets_dir: str = ""
    # audit and admin
    audit_spool: str = ""
    admin_listen: str = "127.0.0.1:9443"
    # processes
    workers: int = 1
    drain_grace: float = 30.0
    # limits
    head_timeout: float = 10.0
    keepalive_timeout: float = 60.0
    max_head_size: int = 65536
    max_line_size: int = 8192
    # HTTP/2
    http2: bool = True
    http2_max_streams: int = 250
    http2_ping_interval: float = 30.0
    http2_ping_timeout: float = 15.0
    # upstream
    upstream_dial_timeout: float = 5.0
    upstream_pool_size: int = 128
    upstream_http2: str = "streams"
    upstream_idle_timeout: float = 60.0
    upstream_ping_interval: float = 10.0
    upstream_ping_timeout: float = 5.0
    # distribution (Redis: snapshot feed, heartbeats, audit shipping)
    redis_url: str = field(default="", repr=False)   # may carry a password: never shown
    snapshot_cache: str = ""
    snapshot_resync_interval: float = 10.0
    gateway_id: str = ""
    # OIDC: ID tokens as bearer tokens (oidc.py), flags as kube-apiserver's --oidc-*
    oidc_issuer_url: str = ""
    oidc_client_id: str = ""
    oidc_username_claim: str = "sub"
    oidc_username_prefix: str = ""
    oidc_groups_claim: str = ""
    oidc_groups_prefix: str = ""
    oidc_ca_file: str = ""
    oidc_refresh_interval: float = 10.0
    # tunnels: agents of clusters the gateway cannot reach dial in (docs/tunnels.md)
    tunnel_port: int = 0
    tunnel_client_ca: str = ""
    tunnel_assertion_key: str = ""
    tunnel_assertion_ttl: int = 30
    tunnel_ping_interval: float = 5.0
    tunnel_ping_timeout: float = 5.0
    tunnel_advertise: str = ""

    HELP = {
        "listen": "HOST:PORT the gateway listens on (TLS)",
        "tls_cert": "PEM file with the gateway's serving certificate (chain)",
        "tls_key": "PEM file with the serving certificate's private key",
        "client_ca": "PEM file with the CAs that issue client certificates",
        "snapshot": "signed snapshot file to serve from (re-read on SIGHUP)",
        "snapshot_public_key": "Ed25519 public key (PEM) that signs snapshots",
        "secrets_dir": "directory that snapshot credential references (file:NAME) point into",
        "audit_spool": "append-only audit spool file",
        "admin_listen": "HOST:PORT of the admin endpoint (/healthz /readyz /metrics); worker i uses PORT+i",
        "workers": "number of worker processes sharing the port (SO_REUSEPORT)",
        "drain_grace": "seconds in-flight streams may run after SIGTERM",
        "head_timeout": "seconds a request head may take to arrive (slowloris)",
        "keepalive_timeout": "seconds an idle keep-alive connection is kept",
        "max_head_size": "largest request head in bytes (431 above)",
        "max_line_size": "longest request line in bytes (414 above)",
        "http2": "offer HTTP/2 (ALPN h2) besides HTTP/1.1",
        "http2_max_streams": "SETTINGS_MAX_CONCURRENT_STREAMS per HTTP/2 connection",
        "http2_ping_interval": "seconds of silence on an HTTP/2 connection with streams before a keep-alive PING",
        "http2_ping_timeout": "seconds a PING may go unanswered before the connection is declared dead",
        "upstream_dial_timeout": "seconds to connect (TCP + TLS) to an API server",
        "upstream_pool_size": "idle keep-alive connections kept per cluster (each also closes after "
                              "--upstream-idle-timeout): at least the requests in flight to one cluster, "
                              "or the surplus is closed and dialled again",
        "upstream_http2": "HTTP/2 to API servers that offer it: streams (watches and logs, for the "
                          "health PINGs; other requests over pooled HTTP/1.1 keep-alive, cheaper per "
                          "request), always, or never",
        "upstream_idle_timeout": "seconds an idle upstream connection is kept",
        "upstream_ping_interval": "seconds of silence on an upstream HTTP/2 connection with streams before a health PING",
        "upstream_ping_timeout": "seconds a health PING may go unanswered before the upstream connection is dropped",
        "redis_url": "Redis to follow snapshots from, report heartbeats and ship audit to "
                     "(redis://, rediss:// or unix://; may hold a password); without it the gateway "
                     "serves --snapshot only",
        "snapshot_cache": "where the last good snapshot from Redis is kept "
                          "(default: snapshot.cache.json beside --audit-spool)",
        "snapshot_resync_interval": "seconds between re-reads of the snapshot key (pub/sub can lose notices)",
        "gateway_id": "id in fleet status (default HOSTNAME-PID; with --workers N, ID-INDEX per worker)",
        "oidc_issuer_url": "https URL of the OpenID Connect issuer whose ID tokens are accepted as bearer "
                           "tokens (its iss; discovery at URL/.well-known/openid-configuration)",
        "oidc_client_id": "audience (aud) every ID token must be issued for",
        "oidc_username_claim": "claim that holds the user name",
        "oidc_username_prefix": "prefix of user names; unset: none for the email claim, ISSUER_URL# for "
                                "others; '-': none",
        "oidc_groups_claim": "claim that holds the groups (a string or a list of strings); unset: no groups",
        "oidc_groups_prefix": "prefix of every group name from the groups claim",
        "oidc_ca_file": "PEM file with the CAs of the issuer's TLS certificate (default: the system's)",
        "oidc_refresh_interval": "least seconds from one JWKS fetch to the next that a token with an "
                                 "unknown key id may prompt",
        "tunnel_port": "port (on the --listen host) of the mTLS listener that cluster agents dial; 0: none",
        "tunnel_client_ca": "PEM file with the CAs that issue agent certificates",
        "tunnel_assertion_key": "Ed25519 private key (PEM) of the gateway fleet that signs identity assertions",
        "tunnel_assertion_ttl": "seconds an identity assertion is valid (agents' clocks must be within this)",
        "tunnel_ping_interval": "seconds of silence on a tunnel before a keep-alive PING",
        "tunnel_ping_timeout": "seconds a PING may go unanswered before the tunnel is declared dead",
        "tunnel_advertise": "HOST:PORT at which agents reach this replica's tunnel port directly (told to "
                            "agents through the fleet membership in Redis); empty: only through --gateway",
    }

    # -- CLI / environment -------------------------------------------------------------------------
    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        groups = {
            "listener": ("listen", "tls_cert", "tls_key", "client_ca"),
            "policy": ("snapshot", "snapshot_public_key", "secrets_dir"),
            "audit and admin": ("audit_spool", "admin_listen"),
            "processes": ("workers", "drain_grace"),
            "limits": ("head_timeout", "keepalive_timeout", "max_head_size", "max_line_size"),
            "HTTP/2": ("http2", "http2_max_streams", "http2_ping_interval", "http2_ping_timeout"),
            "upstream": ("upstream_dial_timeout", "upstream_pool_size", "upstream_http2", "upstream_idle_timeout",
                         "upstream_ping_interval", "upstream_ping_timeout"),
            "distribution": ("redis_url", "snapshot_cache", "snapshot_resync_interval",
                             "gateway_id"),
            "OIDC": ("oidc_issuer_url", "oidc_client_id", "oidc_username_claim", "oidc_username_prefix",
                     "oidc_groups_claim", "oidc_groups_prefix", "oidc_ca_file", "oidc_refresh_interval"),
            "tunnels": ("tunnel_port", "tunnel_client_ca", "tunnel_assertion_key", "tunnel_assertion_ttl",
                        "tunnel_ping_interval", "tunnel_ping_timeout", "tunnel_advertise"),
        }
        add_option_groups(parser, cls, groups, cls.HELP, ENV_PREFIX)

    @classmethod
    def from_namespace(cls, ns: argparse.Namespace, environ: dict[str, str] | None = None) -> "GatewayConfig":
        """Flags win over environment variables, which win over defaults."""
        return options_from_namespace(cls, ns, ENV_PREFIX, environ)

    # -- validation --------------------------------------------------------------------------------
    def validate(self, *, check_files: bool = True) -> None:
        problems: list[str] = []
        self._validate_listener(problems, check_files)
        self._validate_policy(problems, check_files)
        self._validate_audit_admin(problems)
        self._validate_processes(problems)
        self._validate_limits(problems)
        self._validate_http2(problems)
        self._validate_upstream(problems)
        self._validate_distribution(problems)
        self._validate_oidc(problems, check_files)
        self._validate_tunnels(problems, check_files)
        raise_problems(problems)

    def _validate_listener(self, problems: list[str], check_files: bool) -> None:
        _host_port(self.listen, "--listen", problems)
        for name in ("tls_cert", "tls_key"):
            value = getattr(self, name)
            flag = "--" + name.replace("_", "-")
            if not value:
                problems.append(f"{flag} is required (the gateway serves TLS only)")
            elif check_files and not Path(value).is_file():
                problems.append(f"{flag}: {value} is not a readable file")
        if self.client_ca and check_files and not Path(self.client_ca).is_file():
            problems.append(f"--client-ca: {self.client_ca} is not a readable file")

    def _validate_policy(self, problems: list[str], check_files: bool) -> None:
        if not self.snapshot and not self.redis_url:
            problems.append("--snapshot is required unless --redis-url is set (the gateway refuses every "
                            "request without a snapshot)")
        if not self.snapshot_public_key:
            problems.append("--snapshot-public-key is required (snapshots must be verified)")
        elif check_files and not Path(self.snapshot_public_key).is_file():
            problems.append(f"--snapshot-public-key: {self.snapshot_public_key} is not a readable file")
        if not self.secrets_dir:
            problems.append("--secrets-dir is required (cluster credentials are read from it)")
        elif check_files and not Path(self.secrets_dir).is_dir():
            problems.append(f"--secrets-dir: {self.secrets_dir} is not a directory")

    def _validate_audit_admin(self, problems: list[str]) -> None:
        if not self.audit_spool:
            problems.append("--audit-spool is required (every request is audited)")
        elif not Path(self.audit_spool).parent.is_dir():
            problems.append(f"--audit-spool: directory {Path(self.audit_spool).parent} does not exist")
        if self.admin_listen:
            _, port = _host_port(self.admin_listen, "--admin-listen", problems)
            if port and port + self.workers - 1 > 65535:
                problems.append("--admin-listen: port + workers - 1 exceeds 65535")

    def _validate_processes(self, problems: list[str]) -> None:
        if not 1 <= self.workers <= 256:
            problems.append(f"--workers must be between 1 and 256, got {self.workers}")
        if self.drain_grace < 0:
            problems.append("--drain-grace must not be negative")

    def _validate_limits(self, problems: list[str]) -> None:
        if self.head_timeout <= 0:
            problems.append("--head-timeout must be positive")
        if self.keepalive_timeout <= 0:
            problems.append("--keepalive-timeout must be positive")
        if not 1024 <= self.max_head_size <= 16 * 1024 * 1024:
            problems.append("--max-head-size must be between 1024 and 16777216 bytes")
        if not 256 <= self.max_line_size <= self.max_head_size:
            problems.append("--max-line-size must be between 256 and --max-head-size")

    def _validate_http2(self, problems: list[str]) -> None:
        if not 1 <= self.http2_max_streams <= 10000:
            problems.append("--http2-max-streams must be between 1 and 10000")
        if self.http2_ping_interval <= 0 or self.http2_ping_timeout <= 0:
            problems.append("--http2-ping-interval and --http2-ping-timeout must be positive")

    @property
    def alpn_protocols(self) -> list[str]:
        return [p for p in ALPN_PROTOCOLS if self.http2 or p != "h2"]

    def _validate_upstream(self, problems: list[str]) -> None:
        if self.upstream_dial_timeout <= 0:
            problems.append("--upstream-dial-timeout must be positive")
        if self.upstream_pool_size < 0:
            problems.append("--upstream-pool-size must not be negative")
        if self.upstream_http2 not in UPSTREAM_HTTP2_MODES:
            problems.append(f"--upstream-http2 must be one of {', '.join(UPSTREAM_HTTP2_MODES)}")
        if self.upstream_idle_timeout <= 0:
            problems.append("--upstream-idle-timeout must be positive")
        if self.upstream_ping_interval <= 0 or self.upstream_ping_timeout <= 0:
            problems.append("--upstream-ping-interval and --upstream-ping-timeout must be positive")

    def _validate_distribution(self, problems: list[str]) -> None:
        if self.redis_url:
            scheme = self.redis_url.partition("://")[0]
            scheme_ok = scheme in ("redis", "rediss", "unix")
            try:
                url = urlsplit(self.redis_url)
                target_ok = bool(url.path) if scheme == "unix" else bool(url.hostname) and url.port != 0
            except ValueError:   # a port that is not a number, a broken [IPv6] literal
                target_ok = False
            # the URL itself is never echoed: it may hold a password
            if not scheme_ok:
                problems.append("--redis-url must start with redis://, rediss:// or unix://")
            elif not target_ok:
                problems.append("--redis-url names no usable host:port (or socket path)")
        if self.snapshot_cache and not Path(self.snapshot_cache).parent.is_dir():
            problems.append(f"--snapshot-cache: directory {Path(self.snapshot_cache).parent} does not exist")
        if self.snapshot_resync_interval <= 0:
            problems.append("--snapshot-resync-interval must be positive")
        if any(c.isspace() for c in self.gateway_id):
            problems.append("--gateway-id must not contain whitespace")

    def _validate_oidc(self, problems: list[str], check_files: bool) -> None:
        if not self.oidc_issuer_url:
            if self.oidc_client_id:
                problems.append("--oidc-client-id needs --oidc-issuer-url")
            return
        try:
            url = urlsplit(self.oidc_issuer_url)
            url_ok = url.scheme == "https" and bool(url.hostname) and not url.query and not url.fragment
        except ValueError:
            url_ok = False
        if not url_ok:
            problems.append("--oidc-issuer-url must be an https URL without query or fragment")
        if not self.oidc_client_id:
            problems.append("--oidc-client-id is required with --oidc-issuer-url (it is the audience tokens "
                            "must name)")
        if not self.oidc_username_claim:
            problems.append("--oidc-username-claim must not be empty")
        if self.oidc_ca_file and check_files and not Path(self.oidc_ca_file).is_file():
            problems.append(f"--oidc-ca-file: {self.oidc_ca_file} is not a readable file")
        if self.oidc_refresh_interval <= 0:
            problems.append("--oidc-refresh-interval must be positive")

    def _validate_tunnels(self, problems: list[str], check_files: bool) -> None:
        if not self.tunnel_port:
            return
        if not 0 < self.tunnel_port <= 65535:
            problems.append("--tunnel-port must be between 1 and 65535")
        for name in ("tunnel_client_ca", "tunnel_assertion_key"):
            value, flag = getattr(self, name), "--" + name.replace("_", "-")
            if not value:
                problems.append(f"{flag} is required with --tunnel-port")
            elif check_files and not Path(value).is_file():
                problems.append(f"{flag}: {value} is not a readable file")
        if not 1 <= self.tunnel_assertion_ttl <= 300:
            problems.append("--tunnel-assertion-ttl must be between 1 and 300 seconds")
        if self.tunnel_ping_interval <= 0 or self.tunnel_ping_timeout <= 0:
            problems.append("--tunnel-ping-interval and --tunnel-ping-timeout must be positive")
        if self.tunnel_advertise:
            _host_port(self.tunnel_advertise, "--tunnel-advertise", problems)

    @property
    def snapshot_cache_path(self) -> Path:
        return Path(self.snapshot_cache) if self.snapshot_cache else Path(self.audit_spool).parent / "snapshot.cache.json"

    def worker_gateway_id(self, worker_index: int) -> str:
        """The heartbeat id of one worker ("" lets the heartbeat use HOSTNAME-PID)."""
        if self.gateway_id and self.workers > 1:
            return f"{self.gateway_id}-{worker_index}"
        return self.gateway_id

    # -- TLS and sockets ---------------------------------------------------------------------------
    def server_ssl_context(self) -> ssl.SSLContext:
        """TLS 1.2+, ALPN from ALPN_PROTOCOLS, client certificates requested and, when presented,
        verified against --client-ca; session tickets on."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.tls_cert, self.tls_key)
        if self.client_ca:
            ctx.load_verify_locations(cafile=self.client_ca)
            ctx.verify_mode = ssl.CERT_OPTIONAL
        else:
            ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(self.alpn_protocols)
        ctx.options &= ~ssl.OP_NO_TICKET          # session tickets on (resumption for kubectl)
        ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
        ctx.num_tickets = 2
        return ctx

    def tunnel_ssl_context(self) -> ssl.SSLContext:
        """The tunnel listener's: TLS 1.2+, the serving certificate, agent certificates required
        (verified against --tunnel-client-ca), ALPN accesspoint-tunnel/1 only."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.tls_cert, self.tls_key)
        ctx.load_verify_locations(cafile=self.tunnel_client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.set_alpn_protocols([TUNNEL_ALPN])
        return ctx

    @property
    def listen_address(self) -> tuple[str, int]:
        problems: list[str] = []
        host, port = _host_port(self.listen, "--listen", problems)
        if problems:
            raise ConfigError(problems[0])
        return host, port

    def admin_address(self, worker_index: int = 0) -> tuple[str, int] | None:
        if not self.admin_listen:
            return None
        problems: list[str] = []
        host, port = _host_port(self.admin_listen, "--admin-listen", problems)
        if problems:
            raise ConfigError(problems[0])
        return host, (port + worker_index if port else 0)

    def bind_socket(self, reuse_port: bool | None = None) -> socket.socket:
        """The listening socket; SO_REUSEPORT so that every worker binds the same port."""
        host, port = self.listen_address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port if reuse_port is not None else True:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise ConfigError(f"--listen {self.listen}: cannot bind ({exc.strerror})") from None
        sock.listen(1024)
        sock.setblocking(False)
        return sock
