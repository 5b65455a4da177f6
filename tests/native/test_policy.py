"""Every rule of docs/policy.md's decision order, on both policy backends."""
import calendar
import time

import pytest

from dataplane.snapshot import validate
from native._policyspec import KUBECTL_DISABLED, NO_MATCH, READ_ONLY, UNKNOWN_CLUSTER
from tests.dataplane.decision.helpers import Attrs, cluster, nonresource, rule, snapshot_data
from tests.native.backends import backend_id, backends

T0 = calendar.timegm((2026, 11, 23, 0, 0, 0))      # Monday 00:00 UTC
HOUR = 3600
GET_PODS = Attrs("get", resource="pods", namespace="default", name="web-0")
DELETE_PODS = Attrs("delete", resource="pods", namespace="default", name="web-0")
SECRETS = Attrs("get", resource="secrets", namespace="default", name="db")
CLUSTERS = [cluster("dev-eu", env="dev", region="eu"), cluster("dev-us", env="dev", region="us"),
            cluster("prod-eu", env="prod", region="eu"), cluster("bare")]
ROLES = [{"name": "view", "rules": [rule(["get", "list", "watch"], ["*"], ["*"]), rule(["get"], non_resource_urls=["*"])]},
         {"name": "edit", "rules": [rule(["*"], ["*"], ["*"])]},
         {"name": "secrets", "rules": [rule(["*"], [""], ["secrets"])]}]


@pytest.fixture(params=backends("policy"), ids=backend_id)
def backend(request):
    return request.param


def b(name, role, subjects, **fields):
    fields.setdefault("clusters", {"names": ["*"]})
    return {"name": name, "role": role, "subjects": [{"kind": k, "name": n} for k, n in subjects], **fields}


def index(backend, bindings, clusters=CLUSTERS, settings=None, **kwargs):
    data = snapshot_data(clusters=clusters, roles=ROLES, bindings=bindings, settings=settings or {})
    validate(data)
    return backend.PolicyIndex(data, **kwargs)


def ask(idx, info=GET_PODS, user="ann", groups=("devs",), component="", channel="kubectl", where="dev-eu",
        source="10.1.2.3", now=T0):
    return idx.decide(user, groups, component, channel, where, info, source, now)


def test_kill_switches_come_first(backend):
    clusters = [dict(cluster("off"), kubectl_enabled=False), dict(cluster("ro"), read_only=True)]
    idx = index(backend, [b("all", "edit", [("group", "devs")])], clusters)
    assert ask(idx, where="off") == KUBECTL_DISABLED
    assert ask(idx, where="ro") == 0
    assert ask(idx, Attrs("watch", resource="pods"), where="ro") == 0
    assert ask(idx, DELETE_PODS, where="ro") == READ_ONLY
    assert ask(idx, nonresource("post", "/api"), where="ro") == READ_ONLY
    assert ask(idx, where="elsewhere") == UNKNOWN_CLUSTER


def test_label_selectors_apply_to_every_matching_cluster_and_to_new_ones(backend):
    bindings = [b("dev-view", "view", [("group", "devs")], clusters={"selector": {"env": "dev"}})]
    idx = index(backend, bindings)
    assert [ask(idx, where=c) for c in ("dev-eu", "dev-us", "prod-eu", "bare")] == [0, 0, NO_MATCH, NO_MATCH]
    grown = index(backend, bindings, CLUSTERS + [cluster("dev-new", env="dev")])
    assert ask(grown, where="dev-new") == 0        # a new dev cluster needs no policy change


@pytest.mark.parametrize("expression, selected", [
    ({"key": "env", "operator": "In", "values": ["dev", "test"]}, {"dev-eu", "dev-us"}),
    ({"key": "env", "operator": "NotIn", "values": ["prod"]}, {"dev-eu", "dev-us", "bare"}),
    ({"key": "region", "operator": "Exists"}, {"dev-eu", "dev-us", "prod-eu"}),
    ({"key": "region", "operator": "DoesNotExist"}, {"bare"}),
])
def test_match_expressions(backend, expression, selected):
    idx = index(backend, [b("x", "view", [("user", "ann")], clusters={"match_expressions": [expression]})])
    assert {c["name"] for c in CLUSTERS if ask(idx, where=c["name"]) == 0} == selected


def test_selector_and_expressions_are_anded_and_names_are_ored(backend):
    selector = {"names": ["bare"], "selector": {"env": "dev"},
                "match_expressions": [{"key": "region", "operator": "In", "values": ["us"]}]}
    idx = index(backend, [b("x", "view", [("user", "ann")], clusters=selector)])
    assert {c["name"] for c in CLUSTERS if ask(idx, where=c["name"]) == 0} == {"dev-us", "bare"}


def test_an_empty_selector_selects_nothing(backend):
    idx = index(backend, [b("x", "edit", [("user", "ann")], clusters={})])
    assert ask(idx) == NO_MATCH


def test_deny_beats_allow_and_the_first_binding_in_order_names_each(backend):
    idx = index(backend, [b("view", "view", [("group", "devs")]), b("edit", "edit", [("user", "ann")]),
                          b("no-secrets", "secrets", [("group", "devs")], effect="deny"),
                          b("no-secrets-2", "secrets", [("user", "ann")], effect="deny")])
    assert ask(idx) == 0                         # view and edit both allow: the first names it
    assert ask(idx, DELETE_PODS) == 1
    assert ask(idx, SECRETS) == 2                # deny beats the earlier allow
    assert ask(idx, SECRETS, groups=()) == 3
    assert ask(idx, SECRETS, user="bob", groups=()) == NO_MATCH


def test_subjects_users_groups_and_services(backend):
    idx = index(backend, [b("cd", "edit", [("service", "argo")])])
    assert ask(idx, user="x", groups=(), component="argo") == 0
    assert ask(idx, user="argo", groups=()) == NO_MATCH      # a user named like a service is no service
    assert ask(idx, user="x", groups=("argo",)) == NO_MATCH


def test_validity_window_starts_and_ends_by_itself_even_through_the_cache(backend):
    window = {"valid_from": "2026-11-23T01:00:00Z", "valid_until": "2026-11-23T03:00:00Z"}
    idx = index(backend, [b("temp", "edit", [("user", "ann")], **window)])
    answers = [ask(idx, now=T0 + offset) for offset in
               (0, HOUR - 0.001, HOUR, 2 * HOUR, 3 * HOUR - 0.5, 3 * HOUR, 10 * HOUR, HOUR + 1)]
    assert answers == [NO_MATCH, NO_MATCH, 0, 0, 0, NO_MATCH, NO_MATCH, 0]


def test_schedule_days_and_hours(backend):
    office = {"schedule": {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:00", "end": "18:00"}}
    idx = index(backend, [b("office", "edit", [("user", "ann")], conditions=office)])
    monday, saturday = T0, T0 + 5 * 24 * HOUR
    assert [ask(idx, now=monday + h * HOUR) for h in (7.99, 8, 12, 17.999, 18, 23)] == [
        NO_MATCH, 0, 0, 0, NO_MATCH, NO_MATCH]
    assert ask(idx, now=saturday + 12 * HOUR) == NO_MATCH
    late = index(backend, [b("late", "edit", [("user", "ann")], conditions={"schedule": {"start": "22:00"}})])
    assert [ask(late, now=T0 + h * HOUR) for h in (21, 22, 23.99, 24, 46)] == [NO_MATCH, 0, 0, NO_MATCH, 0]


def test_source_cidrs(backend):
    idx = index(backend, [b("office", "edit", [("user", "ann")],
                            conditions={"source_cidrs": ["10.0.0.0/8", "2001:db8::/32"]})])
    assert ask(idx, source="10.200.0.1") == 0
    assert ask(idx, source="::ffff:10.0.0.7") == 0      # IPv4 caller on a dual-stack listener
    assert ask(idx, source="2001:db8::5") == 0
    for outside in ("11.0.0.1", "2001:db9::1", "", "not-an-ip"):
        assert ask(idx, source=outside) == NO_MATCH, outside
    assert idx.reads_source and not idx.reads_channel


def test_channels(backend):
    idx = index(backend, [b("web", "edit", [("user", "ann")], conditions={"channels": ["terminal"]})])
    assert ask(idx, channel="terminal") == 0
    assert ask(idx, channel="kubectl") == NO_MATCH


def test_break_glass_applies_unless_disabled_fleet_wide(backend):
    glass = [b("glass", "edit", [("user", "ann")], grant={"kind": "break_glass", "id": "bg-1"})]
    assert ask(index(backend, glass)) == 0
    assert ask(index(backend, glass, settings={"break_glass_enabled": True})) == 0
    assert ask(index(backend, glass, settings={"break_glass_enabled": False})) == NO_MATCH
    requested = [b("req", "edit", [("user", "ann")], grant={"kind": "access_request", "id": "ar-1"})]
    assert ask(index(backend, requested, settings={"break_glass_enabled": False})) == 0


def test_cache_key_holds_the_source_only_when_a_condition_reads_it(backend):
    plain = index(backend, [b("v", "view", [("user", "ann")])])
    for last in range(5):
        ask(plain, source=f"10.0.0.{last}")
    assert plain.cache_size == 1
    conditioned = index(backend, [b("v", "view", [("user", "ann")], conditions={"source_cidrs": ["10.0.0.0/8"]})])
    for last in range(5):
        ask(conditioned, source=f"10.0.0.{last}")
    assert conditioned.cache_size == 5


def test_cache_and_memos_are_bounded(backend):
    idx = index(backend, [b("v", "view", [("group", "devs")], clusters={"selector": {"env": "dev"}})], cache_limit=3)
    for n in range(20):
        assert ask(idx, Attrs("get", resource="pods", namespace="default", name=f"p{n}")) == 0
        assert ask(idx, where="dev-us" if n % 2 else "dev-eu") == 0
    assert 1 <= idx.cache_size <= 3


def test_compiling_does_not_grow_as_clusters_times_bindings(backend):
    # 10k clusters x 10k selector bindings: 10^8 pairs if indexed per cluster, seconds here
    clusters = [cluster(f"c{n}", env="dev" if n % 2 else "prod", team=f"t{n % 100}") for n in range(10_000)]
    bindings = [b(f"b{n}", "view", [("group", f"g{n}")], clusters={"selector": {"team": f"t{n % 100}"}})
                for n in range(10_000)]
    data = snapshot_data(clusters=clusters, roles=ROLES, bindings=bindings)
    started = time.process_time()
    idx = backend.PolicyIndex(data)
    assert time.process_time() - started < 30
    assert ask(idx, groups=("g7",), where="c7") == 7
    assert ask(idx, groups=("g7",), where="c8") == NO_MATCH
