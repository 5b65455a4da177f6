"""Control-plane configuration: options (flag + ACCESSPOINT_CONTROLPLANE_<NAME> environment
variable), validation with every problem reported at once, and loading of keys and tokens.

Secrets are given as files (never as flags, which `ps` shows) and never appear in messages.
"""
from __future__ import annotations

import argparse
import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dataplane.options import ConfigError, add_option_groups, options_from_namespace, raise_problems
from dataplane.signing import load_private_key

from dataplane.pki import CertificateAuthority

from .agentca import CA_COMMON_NAME as AGENT_CA_COMMON_NAME
from .agentca import MAX_BOOTSTRAP_TTL, AgentAuthority
from .api.caller import ADMIN, PORTAL, READ_ONLY
from .authority import CA_COMMON_NAME, ClientAuthority, load_or_create_ca

ENV_PREFIX = "ACCESSPOINT_CONTROLPLANE_"


@dataclass
class ControlPlaneConfig:
    # API
    listen: str = "127.0.0.1:7443"
    tls_cert: str = ""
    tls_key: str = ""
    admin_token_file: str = ""
    read_only_token_file: str = ""
    portal_token_file: str = ""
    # state and distribution
    store: str = "sqlite:.state/controlplane.db"
    redis_url: str = "redis://127.0.0.1:6379/0"
    signing_key: str = ""
    republish_interval: float = 10.0
    # certificate authority and kubeconfigs
    state_dir: str = ".state/controlplane"
    client_ca_cert: str = ""
    client_ca_key: str = ""
    gateway_url: str = ""
    gateway_ca: str = ""
    kubeconfig_ttl: float = 8 * 3600.0
    kubeconfig_max_ttl: float = 24 * 3600.0
    # tunnel agents
    agent_ca_cert: str = ""
    agent_ca_key: str = ""
    agent_cert_ttl: float = 24 * 3600.0
    bootstrap_token_ttl: float = 3600.0
    # console sessions
    session_sweep_interval: float = 10.0
    # fleet and audit
    replica_id: str = ""
    audit_claim_idle: float = 30.0
    # processes
    grace: float = 10.0

    HELP = {
        "listen": "HOST:PORT of the gRPC API",
        "tls_cert": "PEM serving certificate for the API (required unless listening on loopback)",
        "tls_key": "PEM private key of the serving certificate",
        "admin_token_file": "file holding the admin API token (may change state)",
        "read_only_token_file": "file holding the read-only API token (optional)",
        "portal_token_file": "file holding the portal's API token (optional): runs console sessions and acts for "
                             "the people it names in x-accesspoint-on-behalf-of",
        "store": "sqlite:PATH (embedded, one replica) or postgresql://… (any number of replicas)",
        "redis_url": "Redis that carries snapshots to the gateways",
        "signing_key": "Ed25519 private key (PEM) that signs snapshots",
        "republish_interval": "seconds between re-publishing the latest snapshot (catch-up after outages)",
        "state_dir": "directory for state the control plane generates itself (the client CA on first start)",
        "client_ca_cert": "PEM certificate of the client CA that signs kubeconfigs (default: STATE_DIR/client-ca.crt, "
                          "generated on first start; HA replicas must share one)",
        "client_ca_key": "PEM private key of the client CA (default: STATE_DIR/client-ca.key)",
        "gateway_url": "https://HOST[:PORT] of the gateways, written into issued kubeconfigs",
        "gateway_ca": "PEM CA bundle that verifies the gateways' serving certificate, written into kubeconfigs",
        "kubeconfig_ttl": "seconds an issued kubeconfig certificate lives when the request names no ttl",
        "kubeconfig_max_ttl": "the longest ttl a kubeconfig request may ask for, in seconds",
        "agent_ca_cert": "PEM certificate of the CA that signs tunnel agents' certificates, the gateways' "
                         "--tunnel-client-ca (default: STATE_DIR/agent-ca.crt, generated on first start; HA replicas "
                         "must share one)",
        "agent_ca_key": "PEM private key of the agent CA (default: STATE_DIR/agent-ca.key)",
        "agent_cert_ttl": "seconds an agent certificate lives (agents renew at about 2/3 of it)",
        "bootstrap_token_ttl": "seconds a bootstrap token lives when the request names no ttl",
        "session_sweep_interval": "seconds between sweeps that end console sessions idle past their timeout",
        "replica_id": "this replica's name as audit stream consumer (default: the host name)",
        "audit_claim_idle": "seconds before audit entries left unacknowledged by a dead replica are taken over",
        "grace": "seconds in-flight calls may take after SIGTERM",
    }
    GROUPS = {
        "API": ("listen", "tls_cert", "tls_key", "admin_token_file", "read_only_token_file", "portal_token_file"),
        "state and distribution": ("store", "redis_url", "signing_key", "republish_interval"),
        "certificate authority and kubeconfigs": ("state_dir", "client_ca_cert", "client_ca_key", "gateway_url",
                                                  "gateway_ca", "kubeconfig_ttl", "kubeconfig_max_ttl"),
        "tunnel agents": ("agent_ca_cert", "agent_ca_key", "agent_cert_ttl", "bootstrap_token_ttl"),
        "console sessions": ("session_sweep_interval",),
        "fleet and audit": ("replica_id", "audit_claim_idle"),
        "processes": ("grace",),
    }

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        add_option_groups(parser, cls, cls.GROUPS, cls.HELP, ENV_PREFIX)

    @classmethod
    def from_namespace(cls, ns: argparse.Namespace, environ: dict[str, str] | None = None) -> "ControlPlaneConfig":
        """Flags win over environment variables, which win over defaults."""
        return options_from_namespace(cls, ns, ENV_PREFIX, environ)

    def validate(self) -> None:
        problems: list[str] = []
        host, _, port = self.listen.rpartition(":")
        if not host or not port.isdigit() or int(port) > 65535:
            problems.append(f"listen: expected HOST:PORT, got {self.listen!r}")
        elif not is_loopback(host.strip("[]")) and not (self.tls_cert and self.tls_key):
            problems.append("listen: a non-loopback address needs --tls-cert and --tls-key (tokens travel in headers)")
        if bool(self.tls_cert) != bool(self.tls_key):
            problems.append("tls_cert and tls_key go together")
        if not self.admin_token_file:
            problems.append("admin_token_file is required")
        if not self.signing_key:
            problems.append("signing_key is required")
        if not self.store.startswith(("sqlite:", "postgresql://", "postgres://")):
            problems.append("store must be sqlite:PATH or a postgresql:// URL")
        if self.republish_interval <= 0 or self.grace < 0:
            problems.append("republish_interval must be positive and grace not negative")
        if bool(self.client_ca_cert) != bool(self.client_ca_key):
            problems.append("client_ca_cert and client_ca_key go together")
        if bool(self.gateway_url) != bool(self.gateway_ca):
            problems.append("gateway_url and gateway_ca go together")
        if self.gateway_url and not self.gateway_url.startswith("https://"):
            problems.append(f"gateway_url: expected https://HOST[:PORT], got {self.gateway_url!r}")
        if not 0 < self.kubeconfig_ttl <= self.kubeconfig_max_ttl:
            problems.append("kubeconfig_ttl must be positive and at most kubeconfig_max_ttl")
        if bool(self.agent_ca_cert) != bool(self.agent_ca_key):
            problems.append("agent_ca_cert and agent_ca_key go together")
        if self.agent_cert_ttl < 60:
            problems.append("agent_cert_ttl must be at least 60 seconds")
        if not 0 < self.bootstrap_token_ttl <= MAX_BOOTSTRAP_TTL.total_seconds():
            problems.append(f"bootstrap_token_ttl must be positive and at most {MAX_BOOTSTRAP_TTL.total_seconds():g}")
        if self.audit_claim_idle <= 0:
            problems.append("audit_claim_idle must be positive")
        if self.session_sweep_interval <= 0:
            problems.append("session_sweep_interval must be positive")
        raise_problems(problems)

    def tokens(self) -> dict[str, str]:
        """role → token, read from the token files."""
        tokens = {ADMIN: _read_token(self.admin_token_file, "admin_token_file")}
        if self.read_only_token_file:
            tokens[READ_ONLY] = _read_token(self.read_only_token_file, "read_only_token_file")
        if self.portal_token_file:
            tokens[PORTAL] = _read_token(self.portal_token_file, "portal_token_file")
        if len(set(tokens.values())) != len(tokens):
            raise ConfigError("the admin, read-only and portal tokens must all differ")
        return tokens

    def private_key(self) -> Ed25519PrivateKey:
        try:
            return load_private_key(self.signing_key)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"signing_key {self.signing_key!r}: cannot load ({exc.__class__.__name__})") from None

    def consumer_name(self) -> str:
        return self.replica_id or socket.gethostname()

    def client_authority(self) -> ClientAuthority:
        """The kubeconfig issuer. A CA named by options must exist; the default one in state_dir
        is created on first start."""
        ca = self._ca("client CA", self.client_ca_cert, self.client_ca_key, "client-ca", CA_COMMON_NAME)
        return ClientAuthority(ca, self.gateway_url, self._gateway_ca(), self.kubeconfig_ttl, self.kubeconfig_max_ttl)

    def agent_authority(self) -> AgentAuthority:
        """The tunnel agents' CA, like the client CA: named by options, or created in state_dir."""
        ca = self._ca("agent CA", self.agent_ca_cert, self.agent_ca_key, "agent-ca", AGENT_CA_COMMON_NAME)
        return AgentAuthority(ca, self._gateway_ca(), self.agent_cert_ttl, self.bootstrap_token_ttl)

    def _ca(self, what: str, cert_option: str, key_option: str, default_name: str,
            common_name: str) -> CertificateAuthority:
        if cert_option:
            cert, key, create = Path(cert_option), Path(key_option), False
        else:
            state = Path(self.state_dir)
            cert, key, create = state / f"{default_name}.crt", state / f"{default_name}.key", True
        try:
            return load_or_create_ca(cert, key, create, common_name)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{what} {str(cert)!r}: cannot load ({exc.__class__.__name__})") from None

    def _gateway_ca(self) -> bytes:
        if not self.gateway_ca:
            return b""
        try:
            return Path(self.gateway_ca).read_bytes()
        except OSError as exc:
            raise ConfigError(f"gateway_ca {self.gateway_ca!r}: cannot read ({exc.__class__.__name__})") from None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _read_token(path: str, option: str) -> str:
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{option} {path!r}: cannot read ({exc.__class__.__name__})") from None
    if len(token) < 16:
        raise ConfigError(f"{option} {path!r}: the token must be at least 16 characters")
    return token
