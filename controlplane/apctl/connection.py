"""apctl's connection to the control plane: its settings file, the channel, the stubs.

Settings (YAML; relative paths are relative to the file, as in a kubeconfig):

    address: 127.0.0.1:7443
    token: apt_…            # or token_file: admin.token
    ca: pki/api-ca.crt      # verify the API's TLS certificate; without it, plaintext (loopback only)
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import grpc
import yaml

from ..api.v1 import (access_pb2_grpc, agents_pb2_grpc, audit_pb2_grpc, bindings_pb2_grpc, clusters_pb2_grpc,
                      fleet_pb2_grpc, kubeconfigs_pb2_grpc, revocations_pb2_grpc, roles_pb2_grpc, sessions_pb2_grpc,
                      settings_pb2_grpc, tokens_pb2_grpc)
from ..config import is_loopback

CONFIG_ENV = "APCTL_CONFIG"
CALL_TIMEOUT = 15.0       # seconds; a wait adds its own timeout


class UsageError(Exception):
    """Bad invocation or input: one line on stderr, exit code 2."""


@dataclass(frozen=True)
class Settings:
    address: str
    token: str
    ca_pem: bytes | None

    def __repr__(self) -> str:   # never show the token, even in a debugger or traceback
        return f"Settings(address={self.address!r}, ca={'set' if self.ca_pem else 'none'})"


def load_settings(path: str | None) -> Settings:
    path = path or os.environ.get(CONFIG_ENV, "")
    if not path:
        raise UsageError(f"no settings: pass --config FILE or set {CONFIG_ENV}")
    source = Path(path)
    try:
        data = yaml.safe_load(source.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read ({exc.__class__.__name__})") from None
    except yaml.YAMLError:
        raise UsageError(f"{path}: not valid YAML") from None
    if not isinstance(data, dict) or not isinstance(data.get("address"), str):
        raise UsageError(f"{path}: expected a mapping with address: HOST:PORT")
    unknown = set(data) - {"address", "token", "token_file", "ca"}
    if unknown:
        raise UsageError(f"{path}: unknown setting(s) {', '.join(sorted(unknown))}")

    def read(key: str) -> bytes:
        try:
            return (source.parent / str(data[key])).read_bytes()
        except OSError as exc:
            raise UsageError(f"{path}: {key}: cannot read {data[key]!r} ({exc.__class__.__name__})") from None

    token = read("token_file").decode().strip() if data.get("token_file") else str(data.get("token") or "")
    if not token:
        raise UsageError(f"{path}: give token or token_file")
    ca_pem = read("ca") if data.get("ca") else None
    host = data["address"].rpartition(":")[0].strip("[]")
    if ca_pem is None and not is_loopback(host):
        raise UsageError(f"{path}: {data['address']} is not a loopback address: set ca (the token must not "
                         "travel in clear text)")
    return Settings(address=data["address"], token=token, ca_pem=ca_pem)


class Client:
    """The stubs of every service, and `call` adding the token and a deadline."""

    def __init__(self, settings: Settings):
        if settings.ca_pem is None:
            self._channel = grpc.insecure_channel(settings.address)
        else:
            self._channel = grpc.secure_channel(settings.address, grpc.ssl_channel_credentials(settings.ca_pem))
        self._metadata = (("authorization", f"Bearer {settings.token}"),)
        self.address = settings.address
        self.clusters = clusters_pb2_grpc.ClusterServiceStub(self._channel)
        self.roles = roles_pb2_grpc.RoleServiceStub(self._channel)
        self.bindings = bindings_pb2_grpc.BindingServiceStub(self._channel)
        self.tokens = tokens_pb2_grpc.TokenServiceStub(self._channel)
        self.revocations = revocations_pb2_grpc.RevocationServiceStub(self._channel)
        self.kubeconfigs = kubeconfigs_pb2_grpc.KubeconfigServiceStub(self._channel)
        self.fleet = fleet_pb2_grpc.FleetServiceStub(self._channel)
        self.audit = audit_pb2_grpc.AuditServiceStub(self._channel)
        self.access = access_pb2_grpc.AccessServiceStub(self._channel)
        self.sessions = sessions_pb2_grpc.SessionServiceStub(self._channel)
        self.settings = settings_pb2_grpc.SettingsServiceStub(self._channel)
        self.agents = agents_pb2_grpc.AgentServiceStub(self._channel)

    def call(self, method: Callable[..., Any], request: Any, timeout: float = CALL_TIMEOUT) -> Any:
        return method(request, metadata=self._metadata, timeout=timeout)

    def close(self) -> None:
        self._channel.close()
