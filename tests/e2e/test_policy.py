"""Issue 6's acceptance, end to end: one central policy, set through the control plane's API and
`apctl`, enforced by a gateway process that learns everything through Redis, with the real
kubectl where a person would use kubectl. The fleet has clusters dev-eu and dev-us (env=dev),
prod-eu (env=prod) and dev-ops (env=dev, the kill-switch test's own); a test registers dev-ap.

Each test brings its own people, bindings and settings, so none depends on another's outcome;
the fleet is shared because starting it is the slow part."""
from __future__ import annotations

import copy
import datetime
import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from google.protobuf.timestamp_pb2 import Timestamp

from controlplane.api.v1 import bindings_pb2, fleet_pb2, kubeconfigs_pb2, roles_pb2, tokens_pb2
from controlplane.apctl.connection import Client
from dataplane import sandbox
from tests.e2e.clusters import Clusters, extra_clusters
from tests.e2e.kubectl import Kubectl
from tests.e2e.topology import WAIT, Fleet, Gateway, eventually, fleet

VIEWER, ADMIN = "viewer", "cluster-admin"     # roles of the quick-start policy (dataplane/sandbox.py)
FORBIDDEN = "Forbidden"


@dataclass
class Person:
    """Someone holding a credential the control plane issued: kubectl on any cluster behind the
    gateway (one kubeconfig per cluster, one kubectl cache), and apctl with their own token."""
    label: str
    kubeconfig: dict[str, Any]
    root: Path
    gateway: Gateway
    apctl_config: Path | None = None

    def on(self, cluster: str) -> Kubectl:
        path = self.root / f"{self.label}@{cluster}.kubeconfig"
        if not path.exists():
            config = copy.deepcopy(self.kubeconfig)
            config["clusters"][0]["cluster"]["server"] = f"{self.gateway.url}/clusters/{cluster}"
            sandbox.write_secret(path, yaml.safe_dump(config).encode())
        cache = self.root / "kubectl-cache" / self.label
        cache.mkdir(parents=True, exist_ok=True)
        return Kubectl(path, cache)

    def apctl(self, *args: str) -> subprocess.CompletedProcess:
        assert self.apctl_config is not None, f"{self.label} has no token to call the API with"
        return subprocess.run([sys.executable, "-m", "controlplane.apctl", "--config", str(self.apctl_config), *args],
                              capture_output=True, text=True, timeout=60)


@dataclass
class Policy:
    topology: Fleet
    clusters: Clusters
    api: Client

    @property
    def gateway(self) -> Gateway:
        return self.topology.gateways[0]

    def applied(self, revision: int) -> None:
        """Returns once the gateway runs `revision` (or later)."""
        eventually(lambda: self.gateway.revision() >= revision, f"the gateway applying revision {revision}")

    def operator(self, *args: str) -> str:
        done = self.topology.apctl(*args)
        assert done.returncode == 0, f"apctl {' '.join(args)}: {done.stderr}"
        return done.stdout

    def settings(self, *assignments: str) -> None:
        """`apctl settings set …` as the operator, then waits until the gateway has it."""
        said = self.operator("settings", "set", *assignments)
        self.applied(int(re.fullmatch(r"settings updated at revision (\d+)\n", said).group(1)))

    def bind(self, name: str, role: str, subjects: list[str], clusters: bindings_pb2.ClusterSelector,
             **fields: Any) -> bindings_pb2.Binding:
        """Creates a binding (subjects as `kind:name`) and waits until the gateway has it."""
        binding = bindings_pb2.Binding(name=name, role=role, clusters=clusters, subjects=[
            bindings_pb2.Subject(kind=kind, name=value) for kind, _, value in (s.partition(":") for s in subjects)],
            **fields)
        created = self.api.call(self.api.bindings.CreateBinding, bindings_pb2.CreateBindingRequest(binding=binding))
        self.applied(created.revision)
        return created

    def with_certificate(self, user: str, groups: list[str], label: str = "") -> Person:
        """A client-certificate kubeconfig from IssueKubeconfig."""
        issued = self.api.call(self.api.kubeconfigs.IssueKubeconfig, kubeconfigs_pb2.IssueKubeconfigRequest(
            user=user, groups=groups, cluster="dev-eu"))
        return self._person(label or user, yaml.safe_load(issued.kubeconfig))

    def with_token(self, user: str, groups: list[str], channel: str = "", label: str = "") -> Person:
        """A bearer-token kubeconfig from IssueToken; the same token drives the person's apctl."""
        issued = self.api.call(self.api.tokens.IssueToken, tokens_pb2.IssueTokenRequest(
            user=user, groups=groups, channel=channel, description=f"{user}'s token"))
        self.applied(issued.token.revision)
        label = label or user
        root = self.topology.state.root
        config = yaml.safe_load(sandbox.kubeconfig(f"{self.gateway.url}/clusters/dev-eu",
                                                   self.topology.state.gateway_ca_cert.read_bytes(), user,
                                                   token=issued.secret, context=label))
        apctl_config = root / f"{label}.apctl.yaml"
        sandbox.write_secret(apctl_config, f"address: {self.api.address}\ntoken: {issued.secret}\n".encode())
        return self._person(label, config, apctl_config)

    def _person(self, label: str, kubeconfig: dict[str, Any], apctl_config: Path | None = None) -> Person:
        return Person(label, kubeconfig, self.topology.state.root, self.gateway, apctl_config)

    def audit(self) -> list[dict[str, Any]]:
        """The gateway's audit spool (complete lines): written before each response completes."""
        with open(self.gateway.spool, encoding="utf-8") as spool:
            return [json.loads(line) for line in spool if line.endswith("\n")]


def names(*clusters: str) -> bindings_pb2.ClusterSelector:
    return bindings_pb2.ClusterSelector(names=list(clusters))


def labelled(key: str, *values: str) -> bindings_pb2.ClusterSelector:
    return bindings_pb2.ClusterSelector(match_expressions=[
        bindings_pb2.LabelSelectorRequirement(key=key, operator="In", values=list(values))])


def at(seconds: int) -> Timestamp:
    return Timestamp(seconds=seconds)


def until_past(moment: float) -> None:
    """Returns once the wall clock (the gateway's too: same machine) has passed `moment`."""
    eventually(lambda: time.time() >= moment, f"the clock passing {moment:.0f}", timeout=moment - time.time() + WAIT)


@pytest.fixture(scope="module")
def policy(tmp_path_factory) -> Iterator[Policy]:
    with fleet(tmp_path_factory.mktemp("policy")) as topology, extra_clusters(topology) as clusters:
        clusters.register({"dev-eu": {"env": "dev", "region": "eu"}, "dev-us": {"env": "dev", "region": "us"},
                           "prod-eu": {"env": "prod", "region": "eu"}, "dev-ops": {"env": "dev", "region": "eu"}})
        api = topology.client()
        try:
            registered = api.call(api.clusters.GetCluster, __import__(
                "controlplane.api.v1.clusters_pb2", fromlist=["x"]).GetClusterRequest(name="dev-ops"))
            policy = Policy(topology, clusters, api)
            policy.applied(registered.revision)
            yield policy
        finally:
            api.close()


def test_a_group_bound_role_applies_on_every_env_dev_cluster_and_none_with_env_prod(policy):
    bound = policy.bind("developers-on-dev", VIEWER, ["group:developers"], labelled("env", "dev"))
    dana = policy.with_certificate("dana", ["developers"])
    for cluster in ("dev-eu", "dev-us"):
        assert "web-0" in dana.on(cluster).ok("get", "pods")
    assert FORBIDDEN in dana.on("prod-eu").fails("get", "pods")

    # A new dev cluster: registering it is all it takes.
    policy.clusters.register({"dev-ap": {"env": "dev", "region": "ap"}})
    assert "web-0" in eventually(lambda: dana.on("dev-ap").run("get", "pods").stdout.decode(),
                                 "kubectl working on the newly registered dev-ap")
    unchanged = policy.api.call(policy.api.bindings.GetBinding, bindings_pb2.GetBindingRequest(name=bound.name))
    assert unchanged.revision == bound.revision
    assert any(r.header("impersonate-user") == "dana" for r in policy.clusters.fakes["dev-ap"].requests)
