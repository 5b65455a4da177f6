import pytest

from dataplane.identity import Identity
from dataplane.policy import CompiledPolicy, Decision
from dataplane.snapshot import Snapshot, validate

from .helpers import Attrs, cluster, nonresource, rule, snapshot_data

ROLES = [
    {"name": "pod-reader", "rules": [rule(["get", "list", "watch"], [""], ["pods", "pods/log"],
                                          namespaces=["default"])]},
    {"name": "exec-web", "rules": [rule(["create"], [""], ["pods/exec"], resource_names=["web-0"])]},
    {"name": "deploy-admin", "rules": [rule(["*"], ["apps"], ["deployments", "deployments/*"])]},
    {"name": "status-all", "rules": [rule(["get", "update"], ["*"], ["*/status"])]},
    {"name": "ns-viewer", "rules": [rule(["get", "list"], [""], ["namespaces"])]},
    {"name": "team-a-lister", "rules": [rule(["list"], ["*"], ["*"], namespaces=["team-a"])]},
    {"name": "urls", "rules": [rule(["get"], non_resource_urls=["/version", "/healthz/*"])]},
    {"name": "cd-deployer", "rules": [rule(["create", "update", "patch"], ["apps"], ["deployments"])]},
    {"name": "impersonator", "rules": [
        rule(["impersonate"], [""], ["users"], resource_names=["bob"]),
        rule(["impersonate"], [""], ["groups"]),
        rule(["impersonate"], [""], ["serviceaccounts"], namespaces=["ci"]),
        rule(["impersonate"], ["authentication.k8s.io"], ["uids", "userextras/scopes"]),
    ]},
]


def binding(name, role, subjects, names=(), selector=None):
    return {"name": name, "role": role,
            "subjects": [{"kind": kind, "name": who} for kind, who in subjects],
            "clusters": {"names": list(names), "selector": selector or {}}}


BINDINGS = [
    binding("alice-pods", "pod-reader", [("user", "alice")], names=["sandbox"]),
    binding("devs-exec", "exec-web", [("group", "devs")], selector={"env": "dev"}),
    binding("devs-deploy", "deploy-admin", [("group", "devs")], selector={"env": "dev"}),
    binding("ops-status", "status-all", [("group", "ops")], names=["*"]),
    binding("carol-ns", "ns-viewer", [("user", "carol")], names=["*"]),
    binding("carol-team-a", "team-a-lister", [("user", "carol")], names=["*"]),
    binding("carol-urls", "urls", [("user", "carol")], names=["*"]),
    binding("cd-prod", "cd-deployer", [("service", "cd")], selector={"env": "prod", "region": "eu"}),
    binding("dave-nowhere", "deploy-admin", [("user", "dave")]),  # no names, no selector: no cluster
    binding("eve-impersonate", "impersonator", [("user", "eve")], names=["sandbox"]),
]

DATA = snapshot_data(
    clusters=[cluster("sandbox", env="dev", region="eu"), cluster("prod-eu", env="prod", region="eu"),
              cluster("prod-us", env="prod", region="us")],
    roles=ROLES, bindings=BINDINGS)
validate(DATA)
SNAPSHOT = Snapshot(DATA)

ALICE = Identity("alice", ())
BOB_DEV = Identity("bob", ("devs",))
OPS = Identity("olga", ("ops",))
CAROL = Identity("carol", ())
DAVE = Identity("dave", ())
CD = Identity("argo", (), component="cd")
EVE = Identity("eve", ())

pods = dict(resource="pods", namespace="default")
CASES = [
    # (who, cluster, request, allowing binding or None)
    (ALICE, "sandbox", Attrs("get", name="web-0", **pods), "alice-pods"),
    (ALICE, "sandbox", Attrs("list", **pods), "alice-pods"),
    (ALICE, "sandbox", Attrs("watch", **pods), "alice-pods"),
    (ALICE, "sandbox", Attrs("delete", name="web-0", **pods), None),                  # verb
    (ALICE, "prod-eu", Attrs("get", name="web-0", **pods), None),                     # cluster names
    (ALICE, "sandbox", Attrs("get", name="web-0", subresource="log", **pods), "alice-pods"),
    (ALICE, "sandbox", Attrs("create", name="web-0", subresource="exec", **pods), None),  # subresource
    (ALICE, "sandbox", Attrs("get", resource="pods", namespace="kube-system"), None),     # namespace
    (ALICE, "sandbox", Attrs("list", resource="pods"), None),                         # all namespaces
    (ALICE, "sandbox", Attrs("get", resource="pods", api_group="metrics.k8s.io", namespace="default"), None),
    (BOB_DEV, "sandbox", Attrs("create", name="web-0", subresource="exec", **pods), "devs-exec"),
    (BOB_DEV, "sandbox", Attrs("create", name="web-1", subresource="exec", **pods), None),  # resource name
    (BOB_DEV, "sandbox", Attrs("create", subresource="exec", **pods), None),
    (BOB_DEV, "prod-eu", Attrs("create", name="web-0", subresource="exec", **pods), None),  # env=prod
    (BOB_DEV, "sandbox", Attrs("delete", resource="deployments", api_group="apps", namespace="x", name="d"),
     "devs-deploy"),
    (BOB_DEV, "sandbox", Attrs("update", resource="deployments", subresource="scale", api_group="apps",
                               namespace="x", name="d"), "devs-deploy"),             # res/*
    (BOB_DEV, "sandbox", Attrs("get", resource="deployments", api_group="extensions", namespace="x"), None),
    (BOB_DEV, "prod-us", Attrs("get", resource="deployments", api_group="apps", namespace="x"), None),
    (OPS, "prod-us", Attrs("update", resource="deployments", subresource="status", api_group="apps",
                           namespace="x", name="d"), "ops-status"),                  # */status, names *
    (OPS, "prod-us", Attrs("get", resource="nodes", subresource="status", name="n1"), "ops-status"),
    (OPS, "prod-us", Attrs("get", resource="nodes", name="n1"), None),
    (OPS, "prod-us", Attrs("get", resource="nodes", subresource="statusx", name="n1"), None),
    (CAROL, "prod-us", Attrs("list", resource="namespaces"), "carol-ns"),             # cluster-scoped
    (CAROL, "prod-us", Attrs("get", resource="namespaces", name="team-a", namespace="team-a"), "carol-ns"),
    (CAROL, "prod-us", Attrs("list", resource="secrets", namespace="team-a"), "carol-team-a"),
    (CAROL, "prod-us", Attrs("list", resource="secrets", namespace="team-b"), None),
    (CAROL, "prod-us", Attrs("list", resource="secrets"), None),                      # namespaces set: not cluster scope
    (CAROL, "prod-us", nonresource("get", "/version"), "carol-urls"),
    (CAROL, "prod-us", nonresource("get", "/version/x"), None),
    (CAROL, "prod-us", nonresource("get", "/healthz/etcd"), "carol-urls"),
    (CAROL, "prod-us", nonresource("get", "/healthz"), None),
    (CAROL, "prod-us", nonresource("post", "/version"), None),
    (ALICE, "sandbox", nonresource("get", "/version"), None),                         # resource rules only
    (CD, "prod-eu", Attrs("patch", resource="deployments", api_group="apps", namespace="x", name="d"), "cd-prod"),
    (CD, "prod-us", Attrs("patch", resource="deployments", api_group="apps", namespace="x", name="d"), None),
    (Identity("cd", ()), "prod-eu", Attrs("patch", resource="deployments", api_group="apps", namespace="x",
                                          name="d"), None),                            # a user called cd is no service
    (DAVE, "sandbox", Attrs("get", resource="deployments", api_group="apps", namespace="x"), None),
]


@pytest.mark.parametrize("who, cluster_name, info, allowed_by", CASES)
def test_rbac_table(who, cluster_name, info, allowed_by):
    decision = SNAPSHOT.policy.decide(who, SNAPSHOT.clusters[cluster_name], info)
    assert decision.allowed is (allowed_by is not None)
    if allowed_by:
        role = next(b["role"] for b in BINDINGS if b["name"] == allowed_by)
        assert decision == Decision(True, f'binding "{allowed_by}" (role "{role}")', allowed_by, role,
                                    effect="allow", grant_kind="binding", grant_id=allowed_by)
    else:
        assert decision.reason.startswith("no binding allows") and decision.binding == ""


def test_deny_reason_describes_the_request():
    decision = SNAPSHOT.policy.decide(ALICE, SNAPSHOT.clusters["sandbox"], Attrs("delete", name="web-0", **pods))
    assert decision.reason == "no binding allows delete pods 'web-0' in namespace 'default' on cluster 'sandbox'"


def test_first_binding_in_snapshot_order_names_the_allow():
    both = Identity("bob", ("ops", "devs"))
    info = Attrs("update", resource="deployments", subresource="status", api_group="apps", namespace="x", name="d")
    assert SNAPSHOT.policy.decide(both, SNAPSHOT.clusters["sandbox"], info).binding == "devs-deploy"


def test_decisions_are_cached_per_policy_and_die_with_it():
    policy = CompiledPolicy(DATA)
    info = Attrs("get", name="web-0", **pods)
    first = policy.decide(ALICE, SNAPSHOT.clusters["sandbox"], info)
    assert policy.decide(ALICE, SNAPSHOT.clusters["sandbox"], info) is first
    assert CompiledPolicy(DATA).decide(ALICE, SNAPSHOT.clusters["sandbox"], info) is not first


def test_cache_is_bounded(monkeypatch):
    monkeypatch.setattr("dataplane.policy.DECISION_CACHE_LIMIT", 3)
    policy = CompiledPolicy(DATA)
    for index in range(10):
        policy.decide(ALICE, SNAPSHOT.clusters["sandbox"], Attrs("get", name=f"p{index}", **pods))
    assert 1 <= policy.cache_size <= 3


def test_unknown_cluster_is_denied():
    stranger = Snapshot(snapshot_data()).clusters["sandbox"]
    assert not CompiledPolicy(snapshot_data(clusters=[])).decide(ALICE, stranger, Attrs("get", **pods)).allowed


@pytest.mark.parametrize("resource, name, namespace, allowed", [
    ("users", "bob", "", True),
    ("users", "root", "", False),
    ("groups", "system:masters", "", True),
    ("serviceaccounts", "deployer", "ci", True),
    ("serviceaccounts", "deployer", "kube-system", False),
    ("uids", "1234", "", True),
    ("userextras/scopes", "view", "", True),
    ("userextras/other", "x", "", False),
    ("nodes", "n1", "", False),
    ("userextras", "x", "", False),
])
def test_impersonation_decisions(resource, name, namespace, allowed):
    decision = SNAPSHOT.policy.decide_impersonation(EVE, SNAPSHOT.clusters["sandbox"], resource, name, namespace)
    assert decision.allowed is allowed


def test_impersonation_is_per_cluster():
    assert not SNAPSHOT.policy.decide_impersonation(EVE, SNAPSHOT.clusters["prod-eu"], "users", "bob").allowed


def test_real_request_info_is_accepted():
    requestinfo = pytest.importorskip("native.requestinfo")
    info = requestinfo.parse_request_info("GET", "/api/v1/namespaces/default/pods/web-0/log", "")
    assert SNAPSHOT.policy.decide(ALICE, SNAPSHOT.clusters["sandbox"], info).binding == "alice-pods"
