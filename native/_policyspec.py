"""The snapshot's policy (docs/policy.md) parsed once into plain values that both policy backends
compile: times as epoch seconds, CIDRs as integers, rules grouped by verb. Also the parts that
run only at compile time or on a memo miss (cluster selectors), so both backends share them.

The snapshot was validated before (dataplane/snapshot.py), which uses the parsers here too.
"""
from __future__ import annotations

import calendar
import ipaddress
import re
import time
from typing import Any, Mapping, NamedTuple

EFFECTS = ("allow", "deny")
OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
CHANNELS = ("kubectl", "terminal")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
GRANT_KINDS = ("binding", "access_request", "break_glass")
READ_VERBS = frozenset({"get", "list", "watch"})
ALL = "*"

# Results of `PolicyIndex.decide`: a binding's index in snapshot order (>= 0), or one of these.
NO_MATCH = -1
UNKNOWN_CLUSTER = -2
KUBECTL_DISABLED = -3
READ_ONLY = -4

FOREVER = 2 ** 62           # "no boundary": later than any time a request is decided at
DAY = 86400

_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
_TIME_OF_DAY = re.compile(r"^(\d{2}):(\d{2})$")


def parse_time(text: str) -> int:
    """'YYYY-MM-DDTHH:MM:SSZ' → epoch seconds (ValueError otherwise)."""
    if not _TIME.match(text):
        raise ValueError(text)
    return calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ"))


def parse_time_of_day(text: str, end: bool = False) -> int:
    """'HH:MM' → seconds after midnight UTC; '24:00' (the day's end) only for an end."""
    match = _TIME_OF_DAY.match(text)
    if not match:
        raise ValueError(text)
    hours, minutes = int(match.group(1)), int(match.group(2))
    if (hours, minutes) == (24, 0) and end:
        return DAY
    if hours > 23 or minutes > 59:
        raise ValueError(text)
    return hours * 3600 + minutes * 60


def parse_cidr(text: str) -> tuple[int, int, int]:
    """'10.0.0.0/8' → (version, network, mask) as integers; host bits set is an error."""
    network = ipaddress.ip_network(text, strict=True)
    return network.version, int(network.network_address), int(network.netmask)


def parse_source(text: str) -> tuple[int, int] | None:
    """The caller's address as (version, integer); None when it is not an IP address (such a
    caller matches no source condition: fail closed)."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    # A dual-stack listener reports IPv4 callers as ::ffff:a.b.c.d; policy names them as IPv4.
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.version, int(address)


class RuleSpec(NamedTuple):
    verbs: frozenset
    api_groups: frozenset
    resources: frozenset
    resource_names: frozenset
    namespaces: frozenset
    non_resource_urls: tuple


class RoleSpec(NamedTuple):
    by_verb: dict           # verb → rules naming it or "*"
    any_verb: tuple         # rules with "*": what a verb no rule names gets


class BindingSpec(NamedTuple):
    name: str
    role: str
    deny: bool
    subjects: tuple         # ((kind, name), ...)
    names: frozenset
    labels: tuple           # ((key, value), ...)
    expressions: tuple      # ((key, operator, frozenset(values)), ...)
    valid_from: int
    valid_until: int
    cidrs: tuple            # ((version, network, mask), ...); empty: any source
    channels: frozenset     # empty: any channel
    schedule: tuple | None  # (weekday bit mask, start second, end second)
    break_glass: bool

    @property
    def timed(self) -> bool:
        return self.valid_from > -FOREVER or self.valid_until < FOREVER or self.schedule is not None


class ClusterSpec(NamedTuple):
    labels: Mapping[str, str]
    kubectl_enabled: bool
    read_only: bool


class PolicySpec(NamedTuple):
    roles: dict
    bindings: tuple         # every binding, in snapshot order (indices are decision results)
    clusters: dict
    break_glass_enabled: bool


def compile_spec(data: Mapping[str, Any]) -> PolicySpec:
    roles = {role["name"]: _role(role.get("rules", ())) for role in data.get("roles", ())}
    clusters = {c["name"]: ClusterSpec(dict(c.get("labels", {})), c.get("kubectl_enabled", True),
                                       c.get("read_only", False))
                for c in data.get("clusters", ())}
    settings = data.get("settings") or {}
    return PolicySpec(roles, tuple(_binding(b) for b in data.get("bindings", ())), clusters,
                      settings.get("break_glass_enabled", True))


def _role(rules) -> RoleSpec:
    specs = [RuleSpec(frozenset(r.get("verbs", ())), frozenset(r.get("api_groups", ())),
                      frozenset(r.get("resources", ())), frozenset(r.get("resource_names", ())),
                      frozenset(r.get("namespaces", ())), tuple(r.get("non_resource_urls", ())))
             for r in rules]
    any_verb = tuple(r for r in specs if ALL in r.verbs)
    verbs = {verb for r in specs for verb in r.verbs if verb != ALL}
    return RoleSpec({verb: tuple(r for r in specs if verb in r.verbs or ALL in r.verbs) for verb in verbs},
                    any_verb)


def _binding(b: Mapping[str, Any]) -> BindingSpec:
    selector = b.get("clusters") or {}
    conditions = b.get("conditions") or {}
    schedule = conditions.get("schedule")
    if schedule is not None:
        days = schedule.get("days") or DAYS
        mask = sum(1 << DAYS.index(day) for day in days)
        schedule = (mask, parse_time_of_day(schedule.get("start", "00:00")),
                    parse_time_of_day(schedule.get("end", "24:00"), end=True))
    return BindingSpec(
        name=b["name"],
        role=b["role"],
        deny=b.get("effect", "allow") == "deny",
        subjects=tuple((s["kind"], s["name"]) for s in b.get("subjects", ())),
        names=frozenset(selector.get("names") or ()),
        labels=tuple(sorted((selector.get("selector") or {}).items())),
        expressions=tuple((e["key"], e["operator"], frozenset(e.get("values") or ()))
                          for e in selector.get("match_expressions") or ()),
        valid_from=parse_time(b["valid_from"]) if "valid_from" in b else -FOREVER,
        valid_until=parse_time(b["valid_until"]) if "valid_until" in b else FOREVER,
        cidrs=tuple(parse_cidr(c) for c in conditions.get("source_cidrs") or ()),
        channels=frozenset(conditions.get("channels") or ()),
        schedule=schedule,
        break_glass=(b.get("grant") or {}).get("kind") == "break_glass",
    )


def by_name_only(binding: BindingSpec) -> bool:
    """Selects clusters by listed names alone (no labels, expressions or "*"): indexable by name."""
    return not binding.labels and not binding.expressions and ALL not in binding.names


def selects(binding: BindingSpec, name: str, labels: Mapping[str, str]) -> bool:
    """Does the binding's cluster selector select cluster `name`? Listed names (`*` = all), or
    matchLabels ANDed with match_expressions; no names, labels or expressions selects nothing."""
    if ALL in binding.names or name in binding.names:
        return True
    if not binding.labels and not binding.expressions:
        return False
    for key, value in binding.labels:
        if labels.get(key) != value:
            return False
    for key, operator, values in binding.expressions:
        present = key in labels
        if operator == "In":
            if not present or labels[key] not in values:
                return False
        elif operator == "NotIn":
            if present and labels[key] in values:
                return False
        elif operator == "Exists":
            if not present:
                return False
        elif present:          # DoesNotExist
            return False
    return True
