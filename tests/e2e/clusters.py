"""More clusters behind a fleet (tests/e2e/topology.py), registered the way an operator registers
one: a manifest and `apctl apply -f`. Each is a FakeKube of its own (own CA, own gateway
credential, own store) on its own loop thread, so a test can see what reached which cluster.

Their own RBAC lets every authenticated user do anything: the gateway's policy is then the only
gate, and every refusal a test sees is the gateway's decision, not the cluster's."""
from __future__ import annotations

import contextlib
import copy
import secrets
from pathlib import Path
from typing import Any, Iterator

import yaml

from dataplane import sandbox
from dataplane.pki import CertificateAuthority
from tests.e2e.topology import Fleet
from tests.fakekube.server import FakeKube
from tests.fakekube.threaded import running

OPEN_RBAC = {"users": {}, "groups": {"system:authenticated": "admin"}}


class Clusters:
    def __init__(self, topology: Fleet, stack: contextlib.ExitStack):
        self._topology = topology
        self._stack = stack
        self.fakes: dict[str, FakeKube] = {}
        self._manifests: dict[str, dict[str, Any]] = {}

    def register(self, labels_by_name: dict[str, dict[str, str]]) -> None:
        """Starts one cluster per name and registers them all with one `apctl apply -f`."""
        for name, labels in labels_by_name.items():
            self._manifests[name] = self._start(name, labels)
        self.apply(*(self._manifests[name] for name in labels_by_name))

    def manifest(self, name: str, **changes: Any) -> dict[str, Any]:
        """The registered cluster's manifest document, with `changes` (e.g. kubectl_enabled=False)."""
        return {**copy.deepcopy(self._manifests[name]), **changes}

    def apply(self, *documents: dict[str, Any]) -> None:
        path = self._topology.state.root / f"clusters-{secrets.token_hex(4)}.yaml"
        path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
        applied = self._topology.apctl("apply", "-f", str(path))
        assert applied.returncode == 0, applied.stderr

    def _start(self, name: str, labels: dict[str, str]) -> dict[str, Any]:
        state = self._topology.state
        folder: Path = state.root / "clusters" / name
        folder.mkdir(parents=True)
        ca = CertificateAuthority.create(f"{name} cluster CA")
        ca.issue_server(["localhost", "127.0.0.1"]).write(folder / "server.crt", folder / "server.key")
        token = secrets.token_urlsafe(32)
        sandbox.write_secret(state.secrets_dir / f"{name}.token", token.encode())   # the gateway's credential
        fake = self._stack.enter_context(running(port=0, cert=folder / "server.crt", key=folder / "server.key",
                                                 gateway_token=token, rbac=OPEN_RBAC, http2=True))
        self.fakes[name] = fake
        return {"kind": "Cluster", "name": name, "endpoint": fake.url, "ca_bundle": ca.cert_pem.decode(),
                "credential": {"kind": "token", "ref": f"file:{name}.token"}, "labels": dict(labels)}


@contextlib.contextmanager
def extra_clusters(topology: Fleet) -> Iterator[Clusters]:
    """Clusters that stop when the block ends (before the fleet they are registered in)."""
    with contextlib.ExitStack() as stack:
        yield Clusters(topology, stack)
