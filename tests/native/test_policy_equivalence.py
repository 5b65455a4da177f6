"""The compiled policy against its pure-Python twin, and the twin against a plain reading of
docs/policy.md's decision order, over generated policies and request sequences (Hypothesis).

Each example asks one index a sequence of questions at moving times, so the decision cache and
the per-cluster memos are exercised too: a cached answer must equal a fresh one.
"""
import calendar
import datetime
import ipaddress

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from dataplane.snapshot import validate
from native import _policy_py as oracle
from native._policyspec import KUBECTL_DISABLED, NO_MATCH, READ_ONLY, UNKNOWN_CLUSTER
from tests.dataplane.decision.helpers import Attrs, cluster, nonresource, snapshot_data
from tests.native.backends import backend_id, backends

COMPILED = [backend for backend in backends("policy") if backend is not oracle]   # none when pure-only
BASE = calendar.timegm((2026, 11, 23, 0, 0, 0))     # a Monday, 00:00 UTC
HOUR = 3600


# -- a plain reading of docs/policy.md, written without any index ----------------------------------

def _rule_allows(rule, info):
    if "*" not in rule["verbs"] and info.verb not in rule["verbs"]:
        return False
    if not info.is_resource_request:
        return any(p == "*" or p == info.path or (p.endswith("*") and info.path.startswith(p[:-1]))
                   for p in rule.get("non_resource_urls", []))
    groups, resources = rule.get("api_groups", []), rule.get("resources", [])
    if "*" not in groups and info.api_group not in groups:
        return False
    if "*" not in resources:
        if info.subresource:
            wanted = {f"{info.resource}/{info.subresource}", f"*/{info.subresource}", f"{info.resource}/*"}
            if not wanted & set(resources):
                return False
        elif info.resource not in resources:
            return False
    if rule.get("resource_names") and info.name not in rule["resource_names"]:
        return False
    namespaces = rule.get("namespaces", [])
    return not namespaces or (bool(info.namespace) and ("*" in namespaces or info.namespace in namespaces))


def _selects(selector, c):
    names = selector.get("names", [])
    if "*" in names or c["name"] in names:
        return True
    labels, expressions = selector.get("selector", {}), selector.get("match_expressions", [])
    if not labels and not expressions:
        return False
    have = c.get("labels", {})
    if any(have.get(k) != v for k, v in labels.items()):
        return False
    for e in expressions:
        key, op, values = e["key"], e["operator"], e.get("values", [])
        if op == "In" and (key not in have or have[key] not in values):
            return False
        if op == "NotIn" and key in have and have[key] in values:
            return False
        if op == "Exists" and key not in have:
            return False
        if op == "DoesNotExist" and key in have:
            return False
    return True


def _stamp(text):
    return calendar.timegm(datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").timetuple())


def _applies(binding, c, source, channel, now):
    if "valid_from" in binding and now < _stamp(binding["valid_from"]):
        return False
    if "valid_until" in binding and now >= _stamp(binding["valid_until"]):
        return False
    conditions = binding.get("conditions", {})
    if conditions.get("source_cidrs"):
        try:
            address = ipaddress.ip_address(source)
        except ValueError:
            return False
        if address.version == 6 and address.ipv4_mapped:    # a dual-stack listener's IPv4 caller
            address = address.ipv4_mapped
        if not any(address in ipaddress.ip_network(n) for n in conditions["source_cidrs"]):
            return False
    if conditions.get("channels") and channel not in conditions["channels"]:
        return False
    schedule = conditions.get("schedule")
    if schedule is not None:
        moment = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
        day = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[moment.weekday()]
        minutes = moment.hour * 60 + moment.minute + moment.second / 60 + moment.microsecond / 6e7
        start = _minutes(schedule.get("start", "00:00"))
        end = _minutes(schedule.get("end", "24:00"))
        if (schedule.get("days") and day not in schedule["days"]) or not start <= minutes < end:
            return False
    return _selects(binding["clusters"], c)


def _minutes(text):
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def plain_decision(data, user, groups, component, channel, cluster_name, info, source, now):
    c = next((c for c in data["clusters"] if c["name"] == cluster_name), None)
    if c is None:
        return UNKNOWN_CLUSTER
    if not c.get("kubectl_enabled", True):
        return KUBECTL_DISABLED
    if c.get("read_only") and info.verb not in ("get", "list", "watch"):
        return READ_ONLY
    subjects = {("user", user)} | {("group", g) for g in groups} | ({("service", component)} if component else set())
    break_glass = data.get("settings", {}).get("break_glass_enabled", True)
    roles = {r["name"]: r["rules"] for r in data["roles"]}
    applicable = [
        (order, b) for order, b in enumerate(data["bindings"])
        if any((s["kind"], s["name"]) in subjects for s in b["subjects"])
        and (break_glass or b.get("grant", {}).get("kind") != "break_glass")
        and _applies(b, c, source, channel, now)]
    for effect in ("deny", "allow"):
        for order, b in applicable:
            if b.get("effect", "allow") == effect and any(_rule_allows(r, info) for r in roles[b["role"]]):
                return order
    return NO_MATCH


# -- generated policies and requests --------------------------------------------------------------

def _rule():
    resource_rule = st.fixed_dictionaries({
        "verbs": st.lists(st.sampled_from(["get", "list", "watch", "create", "impersonate", "*"]),
                          min_size=1, max_size=3, unique=True),
        "api_groups": st.lists(st.sampled_from(["", "apps", "*"]), min_size=1, max_size=2, unique=True),
        "resources": st.lists(st.sampled_from(["pods", "pods/log", "deployments", "*/status",
                                               "deployments/*", "users", "*"]), min_size=1, max_size=2, unique=True),
        "resource_names": st.sampled_from([[], ["web-0"]]),
        "namespaces": st.sampled_from([[], ["default"], ["*"]]),
    })
    url_rule = st.fixed_dictionaries({
        "verbs": st.lists(st.sampled_from(["get", "post", "*"]), min_size=1, max_size=2, unique=True),
        "non_resource_urls": st.sampled_from([["/version"], ["/healthz/*"], ["*"]]),
    })
    return st.one_of(resource_rule, url_rule)


HOURS = st.integers(0, 72).map(lambda h: BASE + h * HOUR)


def _iso(ts):
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@st.composite
def _binding(draw, index):
    binding = {
        "name": f"b{index}",
        "role": draw(st.sampled_from(["r0", "r0", "r1", "r2"])),
        "subjects": draw(st.lists(st.sampled_from([
            {"kind": "user", "name": "alice"}, {"kind": "user", "name": "bob"},
            {"kind": "group", "name": "devs"}, {"kind": "group", "name": "ops"},
            {"kind": "service", "name": "cd"}]), min_size=1, max_size=2, unique_by=lambda s: s["name"])),
        "clusters": draw(st.just({"names": ["*"]}) | st.fixed_dictionaries({}, optional={
            "names": st.lists(st.sampled_from(["dev-eu", "prod-eu", "prod-us", "gone", "*"]), max_size=2, unique=True),
            "selector": st.dictionaries(st.sampled_from(["env", "region"]), st.sampled_from(["dev", "prod", "eu"]),
                                        max_size=2),
            "match_expressions": st.lists(st.one_of(
                st.fixed_dictionaries({"key": st.sampled_from(["env", "region", "tier"]),
                                       "operator": st.sampled_from(["In", "NotIn"]),
                                       "values": st.lists(st.sampled_from(["dev", "prod", "eu"]), min_size=1,
                                                          max_size=2, unique=True)}),
                st.fixed_dictionaries({"key": st.sampled_from(["env", "region", "tier"]),
                                       "operator": st.sampled_from(["Exists", "DoesNotExist"])})), max_size=2),
        })),
    }
    if draw(st.booleans()):
        binding["effect"] = draw(st.sampled_from(["allow", "deny"]))
    window = sorted(draw(st.lists(HOURS, min_size=2, max_size=2, unique=True)))
    which = draw(st.sampled_from(["none", "from", "until", "both"]))
    if which in ("from", "both"):
        binding["valid_from"] = _iso(window[0])
    if which in ("until", "both"):
        binding["valid_until"] = _iso(window[1])
    conditions = draw(st.just({}) | st.fixed_dictionaries({}, optional={
        "source_cidrs": st.lists(st.sampled_from(["10.0.0.0/8", "192.168.1.0/24", "2001:db8::/32"]), max_size=2,
                                 unique=True),
        "channels": st.lists(st.sampled_from(["kubectl", "terminal"]), max_size=2, unique=True),
        "schedule": st.sampled_from([{"days": ["mon", "tue"], "start": "08:00", "end": "17:30"},
                                     {"start": "09:00"}, {"days": ["sun"]}, {"end": "00:01"}]),
    }))
    if conditions:
        binding["conditions"] = conditions
    kind = draw(st.sampled_from(["binding", "access_request", "break_glass", None]))
    if kind is not None:
        binding["grant"] = {"kind": kind, "id": f"g{index}"}
    return binding


@st.composite
def policies(draw):
    clusters = []
    for name, labels in (("dev-eu", {"env": "dev", "region": "eu"}), ("prod-eu", {"env": "prod", "region": "eu"}),
                         ("prod-us", {"env": "prod", "tier": "web"})):
        c = cluster(name, **labels)
        c["kubectl_enabled"] = draw(st.sampled_from([True] * 7 + [False]))
        if draw(st.booleans()):
            c["read_only"] = draw(st.sampled_from([False, False, False, True]))
        clusters.append(c)
    # r0 grants everything, so that bindings decide often; r1 and r2 are generated
    broad = [{"verbs": ["*"], "api_groups": ["*"], "resources": ["*"]}, {"verbs": ["*"], "non_resource_urls": ["*"]}]
    roles = [{"name": "r0", "rules": broad}]
    roles += [{"name": f"r{i}", "rules": draw(st.lists(_rule(), min_size=1, max_size=3))} for i in (1, 2)]
    count = draw(st.integers(0, 8))
    bindings = [draw(_binding(i)) for i in range(count)]
    settings_ = draw(st.fixed_dictionaries({}, optional={"break_glass_enabled": st.booleans()}))
    data = snapshot_data(clusters=clusters, roles=roles, bindings=bindings, settings=settings_)
    validate(data)
    return data


IDENTITIES = st.sampled_from([("alice", (), ""), ("bob", ("devs",), ""), ("carol", ("devs", "ops"), ""),
                              ("argo", (), "cd"), ("dave", ("ops",), "")])
REQUESTS = st.one_of(
    st.builds(Attrs, verb=st.sampled_from(["get", "list", "watch", "create", "delete", "impersonate"]),
              resource=st.sampled_from(["pods", "deployments", "users"]),
              api_group=st.sampled_from(["", "apps"]), namespace=st.sampled_from(["", "default", "kube-system"]),
              name=st.sampled_from(["", "web-0"]), subresource=st.sampled_from(["", "log", "status"])),
    st.builds(nonresource, st.sampled_from(["get", "post"]), st.sampled_from(["/version", "/healthz/etcd", "/api"])),
)
ASKS = st.tuples(IDENTITIES, st.sampled_from(["dev-eu", "prod-eu", "prod-us"] * 3 + ["nowhere"]), REQUESTS,
                 st.sampled_from(["10.1.2.3", "192.168.1.7", "::ffff:10.9.9.9", "2001:db8::1", "172.16.0.1", "",
                                  "not-an-address"]),
                 st.sampled_from(["kubectl", "terminal"]),
                 st.one_of(HOURS, HOURS.map(lambda t: t - 1), HOURS.map(lambda t: t + 0.5),
                           st.integers(0, 5 * 24 * HOUR).map(lambda s: BASE + s)))


SHIFTS = st.lists(st.sampled_from([0, 1, HOUR, 7.5 * HOUR, 24 * HOUR, -HOUR, -0.5]), min_size=1, max_size=3)


def _later(asks, shifts):
    """The same questions again at other times: a cached answer must not outlive its validity."""
    return [ask[:5] + (ask[5] + shift,) for shift in shifts for ask in asks]


def _ask(index, ask):
    (user, groups, component), cluster_name, info, source, channel, now = ask
    return index.decide(user, groups, component, channel, cluster_name, info, source, now)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=policies(), asks=st.lists(ASKS, min_size=1, max_size=20), shifts=SHIFTS)
def test_twin_follows_the_decision_order_of_docs_policy(data, asks, shifts):
    index = oracle.PolicyIndex(data)
    for ask in asks + _later(asks, shifts):     # answered from the cache where it may be
        (user, groups, component), cluster_name, info, source, channel, now = ask
        expected = plain_decision(data, user, groups, component, channel, cluster_name, info, source, now)
        assert _ask(index, ask) == expected, ask


if COMPILED:   # with ACCESSPOINT_NO_EXTENSIONS=1 there is nothing to compare the twin with
    @pytest.mark.parametrize("backend", COMPILED, ids=backend_id)
    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.function_scoped_fixture])
    @given(data=policies(), asks=st.lists(ASKS, min_size=1, max_size=20), shifts=SHIFTS)
    def test_backend_equals_the_twin(backend, data, asks, shifts):
        ours, reference = backend.PolicyIndex(data, cache_limit=7), oracle.PolicyIndex(data, cache_limit=7)
        for ask in asks + _later(asks[::-1], shifts):
            assert _ask(ours, ask) == _ask(reference, ask), ask
        assert ours.reads_source == reference.reads_source and ours.reads_channel == reference.reads_channel
