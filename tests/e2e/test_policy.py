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
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from controlplane.api.v1 import bindings_pb2, clusters_pb2, fleet_pb2, kubeconfigs_pb2, roles_pb2, tokens_pb2
from controlplane.apctl.connection import Client
from dataplane import sandbox
from tests.e2e.clusters import Clusters, extra_clusters
from tests.e2e.kubectl import Kubectl
from tests.e2e.topology import WAIT, Fleet, Gateway, eventually, fleet

VIEWER, ADMIN = "viewer", "cluster-admin"     # roles of the quick-start policy (dataplane/sandbox.py)
FORBIDDEN = "Forbidden"
# How long a revocation may take to reach every gateway here: it is published at once as a signed
# delta and applied in milliseconds; the rest is room for a loaded CI machine.
PROPAGATION_BOUND = 5.0
# Seconds of time-bound access in the tests that wait for its end: room for a few kubectl calls on
# a loaded machine before it ends, and the time each of those tests waits.
WINDOW = 10


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

    def register(self, labels_by_name: dict[str, dict[str, str]]) -> None:
        """Registers new clusters (`apctl apply -f`) and waits until the gateway routes to them."""
        self.clusters.register(labels_by_name)
        for name in labels_by_name:
            self.applied(self.api.call(self.api.clusters.GetCluster, clusters_pb2.GetClusterRequest(name=name)).revision)

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
        return self.person(label or user, yaml.safe_load(issued.kubeconfig))

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
        return self.person(label, config, apctl_config)

    def person(self, label: str, kubeconfig: dict[str, Any], apctl_config: Path | None = None) -> Person:
        """Someone holding `kubeconfig` (one the control plane issued), known by `label`."""
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
        api = topology.client()
        try:
            policy = Policy(topology, clusters, api)
            policy.register({"dev-eu": {"env": "dev", "region": "eu"}, "dev-us": {"env": "dev", "region": "us"},
                             "prod-eu": {"env": "prod", "region": "eu"}, "dev-ops": {"env": "dev", "region": "eu"}})
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
    policy.register({"dev-ap": {"env": "dev", "region": "ap"}})
    assert "web-0" in dana.on("dev-ap").ok("get", "pods")
    unchanged = policy.api.call(policy.api.bindings.GetBinding, bindings_pb2.GetBindingRequest(name=bound.name))
    assert unchanged.revision == bound.revision
    assert any(r.header("impersonate-user") == "dana" for r in policy.clusters.fakes["dev-ap"].requests)


def test_time_bound_bindings_start_and_end_by_themselves_with_no_api_call(policy):
    tess = policy.with_certificate("tess", ["contractors-tb"])
    end = int(time.time()) + WINDOW
    policy.bind("tess-until", VIEWER, ["user:tess"], names("dev-eu"), valid_until=at(end))
    policy.bind("tess-from", VIEWER, ["user:tess"], names("dev-us"), valid_from=at(end), valid_until=at(end + 3600))
    revision = policy.gateway.revision()

    assert FORBIDDEN in tess.on("dev-us").fails("get", "pods")     # not yet
    assert "web-0" in tess.on("dev-eu").ok("get", "pods")          # still

    until_past(end)          # nobody calls the API: one binding ends and the other starts by itself
    assert FORBIDDEN in tess.on("dev-eu").fails("get", "pods")
    assert "web-0" in tess.on("dev-us").ok("get", "pods")
    assert policy.gateway.revision() == revision       # no snapshot was needed for either


def test_an_approved_access_request_works_on_prod_until_it_expires_and_a_denied_one_never(policy):
    policy.settings("approver_group=approvers")
    erin = policy.with_token("erin", ["developers-ar"])
    gina = policy.with_token("gina", ["developers-ar"])
    frank = policy.with_token("frank", ["approvers"])
    assert FORBIDDEN in erin.on("prod-eu").fails("get", "pods")

    def request(person: Person, duration: str) -> str:
        asked = person.apctl("access", "request", VIEWER, "--cluster", "prod-eu", "--duration", duration,
                             "--reason", "INC-42: read the prod pods", "-o", "json")
        assert asked.returncode == 0, asked.stderr
        return json.loads(asked.stdout)["id"]

    # Denied by an approver: no grant, 403.
    denied = frank.apctl("access", "deny", request(gina, "1h"), "--reason", "not for this incident", "-o", "json")
    assert denied.returncode == 0, denied.stderr
    assert json.loads(denied.stdout)["state"] == "denied" and not json.loads(denied.stdout).get("binding")
    assert FORBIDDEN in gina.on("prod-eu").fails("get", "pods")

    # Approved: works on prod at once (the snapshot published on approval), ends by itself.
    request_id = request(erin, f"{WINDOW}s")
    approved = frank.apctl("access", "approve", request_id, "-o", "json")
    assert approved.returncode == 0, approved.stderr
    grant = json.loads(approved.stdout)
    assert grant["state"] == "approved" and grant["binding"] == request_id
    policy.applied(int(grant["revision"]))
    assert "web-0" in erin.on("prod-eu").ok("get", "pods")
    assert FORBIDDEN in erin.on("dev-us").fails("get", "pods")     # that cluster only

    expires = datetime.datetime.fromisoformat(grant["expires_at"].replace("Z", "+00:00")).timestamp()
    until_past(expires)
    assert FORBIDDEN in erin.on("prod-eu").fails("get", "pods")

    # The gateway named the request that allowed, in the audit.
    allowed = [e for e in policy.audit() if e["user"] == "erin" and e["cluster"] == "prod-eu"
               and e["decision"] == "allow"]
    assert allowed and {e["decision_by"]["grant_id"] for e in allowed} == {request_id}
    assert {e["decision_by"]["grant_kind"] for e in allowed} == {"access_request"}


def test_break_glass_works_is_capped_is_flagged_in_the_audit_and_is_refused_when_disabled(policy):
    policy.settings("break_glass_enabled=true", f"break_glass.role={ADMIN}", "break_glass.group=sre",
                    "break_glass.clusters={selector: {env: prod}}", "break_glass.max_duration=2m")
    hank = policy.with_token("hank", ["sre"])
    assert FORBIDDEN in hank.on("prod-eu").fails("get", "pods")

    too_long = hank.apctl("breakglass", "activate", "--cluster", "prod-eu", "--reason", "prod down", "--duration", "1h")
    assert too_long.returncode == 2 and "at most 120 s" in too_long.stderr, too_long.stderr
    not_prod = hank.apctl("breakglass", "activate", "--cluster", "dev-eu", "--reason", "prod down")
    assert not_prod.returncode == 1 and "PERMISSION_DENIED" in not_prod.stderr, not_prod.stderr

    activated = hank.apctl("breakglass", "activate", "--cluster", "prod-eu", "--reason", "prod down", "-o", "json")
    assert activated.returncode == 0, activated.stderr
    binding = json.loads(activated.stdout)
    activation = binding["grant"]["id"]
    policy.applied(int(binding["revision"]))
    try:
        assert "web-0" in hank.on("prod-eu").ok("get", "pods")
        flagged = [e for e in policy.audit() if e["user"] == "hank" and e["decision"] == "allow"]
        assert flagged and all(e["break_glass"] for e in flagged)
        assert {json.dumps(e["decision_by"], sort_keys=True) for e in flagged} == {json.dumps({
            "binding": activation, "role": ADMIN, "effect": "allow", "grant_kind": "break_glass",
            "grant_id": activation}, sort_keys=True)}

        # The fleet-wide kill switch: no new activation, and the live one applies nowhere.
        policy.settings("break_glass_enabled=false")
        refused = hank.apctl("breakglass", "activate", "--cluster", "prod-eu", "--reason", "again")
        assert refused.returncode == 1 and "disabled fleet-wide" in refused.stderr, refused.stderr
        assert FORBIDDEN in hank.on("prod-eu").fails("get", "pods")
    finally:
        policy.settings("break_glass_enabled=true")


def test_a_deny_binding_beats_an_allow(policy):
    created = policy.api.call(policy.api.roles.CreateRole, roles_pb2.CreateRoleRequest(role=roles_pb2.Role(
        name="secrets", rules=[roles_pb2.Rule(verbs=["*"], api_groups=[""], resources=["secrets"])])))
    policy.applied(created.revision)
    policy.bind("contractors-admin", ADMIN, ["group:contractors"], labelled("env", "dev"))
    policy.bind("contractors-no-secrets", "secrets", ["group:contractors"], names("*"),
                effect="deny")
    ivan = policy.with_certificate("ivan", ["contractors"])
    assert "web-0" in ivan.on("dev-us").ok("get", "pods")
    refused = ivan.on("dev-us").fails("get", "secrets")
    assert FORBIDDEN in refused and 'deny binding "contractors-no-secrets"' in refused


def test_a_source_range_condition_is_enforced(policy):
    policy.bind("judy-from-loopback", VIEWER, ["user:judy"], names("dev-eu"),
                conditions=bindings_pb2.Conditions(source_cidrs=["127.0.0.0/8"]))
    policy.bind("judy-from-the-office", VIEWER, ["user:judy"], names("dev-us"),
                conditions=bindings_pb2.Conditions(source_cidrs=["10.0.0.0/8"]))
    judy = policy.with_certificate("judy", ["analysts"])
    assert "web-0" in judy.on("dev-eu").ok("get", "pods")             # kubectl comes from 127.0.0.1
    assert FORBIDDEN in judy.on("dev-us").fails("get", "pods")


def test_a_channel_condition_is_enforced(policy):
    policy.bind("leo-in-the-terminal", VIEWER, ["user:leo"], names("dev-eu"),
                conditions=bindings_pb2.Conditions(channels=["terminal"]))
    terminal = policy.with_token("leo", ["analysts"], channel="terminal", label="leo-terminal")
    cli = policy.with_token("leo", ["analysts"], channel="kubectl", label="leo-cli")
    certificate = policy.with_certificate("leo", ["analysts"], label="leo-certificate")   # always kubectl
    assert "web-0" in terminal.on("dev-eu").ok("get", "pods")
    assert FORBIDDEN in cli.on("dev-eu").fails("get", "pods")
    assert FORBIDDEN in certificate.on("dev-eu").fails("get", "pods")


def test_disabling_kubectl_on_a_cluster_ends_its_watches_and_exec_sessions_and_refuses_new_ones(policy):
    policy.bind("mia-admin", ADMIN, ["user:mia"], names("dev-ops", "dev-eu"))
    mia = policy.with_certificate("mia", ["operators"])
    ops, eu = mia.on("dev-ops"), mia.on("dev-eu")
    on_ops = [ops.start("get", "pods", "-w"), ops.start("exec", "-i", "web-0", "-c", "app", "--", "cat")]
    elsewhere = eu.start("get", "pods", "-w")
    try:
        on_ops[0].expect("web-0")
        elsewhere.expect("web-0")
        on_ops[1].echo("mia's shell is live")

        policy.clusters.apply(policy.clusters.manifest("dev-ops", kubectl_enabled=False))   # apctl apply -f
        for running in on_ops:
            running.wait_exit(timeout=WAIT)       # ended by the gateway, not by the test

        disabled = 'cluster "dev-ops" has kubectl access disabled'
        assert disabled in ops.fails("get", "pods")
        assert disabled in ops.fails("exec", "web-0", "-c", "app", "--", "echo", "again")
        # Other clusters carry on: the watch there is live and still sees changes.
        assert elsewhere.process.poll() is None
        policy.clusters.fakes["dev-eu"].store.create({"apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": "after-the-switch", "namespace": "default"}, "spec": {"containers": [{"name": "c", "image": "i"}]}})
        elsewhere.expect("after-the-switch")
    finally:
        for running in (*on_ops, elsewhere):
            running.stop()
    ended = [e for e in policy.audit() if e["user"] == "mia" and e["cluster"] == "dev-ops"
             and e.get("session_ended_by") == "revoked"]
    assert sorted(e["subresource"] or e["verb"] for e in ended) == ["exec", "watch"]
    assert {e["revocation"] for e in ended} == {f"no longer allowed: {disabled}"}


def test_a_session_bound_kubeconfig_stops_working_within_the_propagation_bound_after_logout(policy):
    policy.bind("nina-view", VIEWER, ["user:nina"], names("dev-eu"))
    created = re.fullmatch(r'session (s-[0-9a-f]+) for "nina" created\n', policy.operator("session", "create", "nina"))
    session = created.group(1)
    bound = policy.person("nina-session", yaml.safe_load(policy.operator(
        "kubeconfig", "nina", "--cluster", "dev-eu", "--group", "analysts", "--session", session)))
    unbound = policy.with_certificate("nina", ["analysts"], label="nina-plain")
    assert "web-0" in bound.on("dev-eu").ok("get", "pods")

    said = policy.operator("session", "logout", session)
    started = time.monotonic()
    revision = int(re.fullmatch(rf"session {session} logged out; its credentials are revoked at revision (\d+)\n",
                                said).group(1))
    applied = policy.api.call(policy.api.fleet.WaitForRevision, fleet_pb2.WaitForRevisionRequest(
        revision=revision, timeout=Duration(seconds=int(WAIT))), timeout=WAIT + 5)
    elapsed = time.monotonic() - started
    assert [g.id for g in applied.gateways] == [f"gw-{policy.gateway.name}"]
    assert elapsed < PROPAGATION_BOUND, f"the fleet took {elapsed:.1f} s to apply the logout"
    assert "Unauthorized" in bound.on("dev-eu").fails("get", "pods")
    assert "web-0" in unbound.on("dev-eu").ok("get", "pods")        # only that session's credentials
