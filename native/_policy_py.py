"""Compiled access policy, pure Python: the reference the Cython backend (_policy_c) must equal.

The index does not grow as clusters x bindings. Bindings are indexed by subject; within a
subject, bindings that list cluster names are indexed by name, and the others (labels, match
expressions, "*") keep their selector, evaluated when a (subject, cluster) pair is first asked
for and remembered for it. Roles are grouped by verb. Decision order: docs/policy.md.

Decisions are cached per subject, cluster and request attributes (plus source address and
channel when some binding's condition reads them). An entry records the span of time it holds
for: from when it was computed to the next validity or schedule boundary of any binding that
could change it, so a time-bound grant ends on time although nothing happens at its end.
"""
from __future__ import annotations

import math

from native._policyspec import (ALL, FOREVER, KUBECTL_DISABLED, NO_MATCH, READ_ONLY, READ_VERBS,
                                UNKNOWN_CLUSTER, DAY, by_name_only, compile_spec, parse_source, selects)


class _Rule:
    __slots__ = ("verbs", "api_groups", "resources", "resource_names", "namespaces", "urls")

    def __init__(self, spec):
        self.verbs, self.api_groups, self.resources = spec.verbs, spec.api_groups, spec.resources
        self.resource_names, self.namespaces, self.urls = spec.resource_names, spec.namespaces, spec.non_resource_urls

    def allows(self, is_resource, api_group, resource, subresource, namespace, name, path) -> bool:
        """Kubernetes' RuleAllows (the verb was matched by grouping) plus `namespaces` and `res/*`."""
        if not is_resource:
            for pattern in self.urls:
                if pattern == ALL or pattern == path:
                    return True
                if pattern.endswith(ALL) and path.startswith(pattern[:-1]):
                    return True
            return False
        if ALL not in self.api_groups and api_group not in self.api_groups:
            return False
        resources = self.resources
        if ALL not in resources:
            if not subresource:
                if resource not in resources:
                    return False
            elif (resource + "/" + subresource not in resources and "*/" + subresource not in resources
                  and resource + "/*" not in resources):
                return False
        # As in Kubernetes: a named rule never matches a request without a name (create, list).
        if self.resource_names and name not in self.resource_names:
            return False
        if self.namespaces:
            # A namespace-restricted rule must not grant cluster-scoped requests (that would reach
            # every namespace at once, e.g. list pods across all namespaces).
            return bool(namespace) and (ALL in self.namespaces or namespace in self.namespaces)
        return True


class _Binding:
    __slots__ = ("spec", "deny", "by_verb", "any_verb", "timed", "valid_from", "valid_until",
                 "cidrs", "channels", "schedule")

    def __init__(self, spec, role):
        self.spec = spec
        self.deny = spec.deny
        self.by_verb, self.any_verb = role
        self.timed = spec.timed
        self.valid_from, self.valid_until = spec.valid_from, spec.valid_until
        self.cidrs, self.channels, self.schedule = spec.cidrs, spec.channels, spec.schedule


class _Subject:
    """The bindings naming one subject: by cluster name, and those with selectors."""
    __slots__ = ("by_name", "selected", "memo")

    def __init__(self):
        self.by_name: dict[str, list[int]] = {}
        self.selected: list[int] = []
        self.memo: dict[str, tuple[int, ...]] = {}    # cluster → its bindings, in snapshot order


class PolicyIndex:
    def __init__(self, snapshot_data, cache_limit: int = 100_000):
        spec = compile_spec(snapshot_data)
        self._clusters = spec.clusters
        self._cache_limit = cache_limit
        self._cache: dict[tuple, tuple[int, float, int]] = {}
        self._memo_size = 0
        self._subjects: dict[str, dict[str, _Subject]] = {"user": {}, "group": {}, "service": {}}
        self._bindings: list[_Binding] = []
        self.reads_source = self.reads_channel = False
        roles = {name: ({verb: tuple(_Rule(r) for r in rules) for verb, rules in role.by_verb.items()},
                        tuple(_Rule(r) for r in role.any_verb))
                 for name, role in spec.roles.items()}
        for order, binding in enumerate(spec.bindings):
            compiled = _Binding(binding, roles[binding.role])
            self._bindings.append(compiled)
            if binding.break_glass and not spec.break_glass_enabled:
                continue        # the fleet-wide kill switch: as if the binding were not there
            self.reads_source |= bool(binding.cidrs)
            self.reads_channel |= bool(binding.channels)
            for kind, name in binding.subjects:
                subject = self._subjects[kind].get(name)
                if subject is None:
                    subject = self._subjects[kind][name] = _Subject()
                if by_name_only(binding):
                    for cluster in binding.names:
                        subject.by_name.setdefault(cluster, []).append(order)
                else:
                    subject.selected.append(order)
        self._specs = spec.bindings

    @property
    def cache_size(self) -> int:
        return len(self._cache)

    def decide(self, user: str, groups: tuple, component: str, channel: str, cluster: str, info,
               source: str, now: float) -> int:
        """The index of the binding that decided, or NO_MATCH / UNKNOWN_CLUSTER /
        KUBECTL_DISABLED / READ_ONLY."""
        target = self._clusters.get(cluster)
        if target is None:
            return UNKNOWN_CLUSTER
        if not target.kubectl_enabled:
            return KUBECTL_DISABLED
        verb = info.verb
        if target.read_only and verb not in READ_VERBS:
            return READ_ONLY
        is_resource = info.is_resource_request
        path = "" if is_resource else info.path
        key = (user, groups, component, cluster, is_resource, verb, info.api_group, info.resource,
               info.subresource, info.namespace, info.name, path,
               source if self.reads_source else "", channel if self.reads_channel else "")
        entry = self._cache.get(key)
        if entry is not None and entry[1] <= now < entry[2]:
            return entry[0]
        code, until = self._evaluate(user, groups, component, channel, cluster, target.labels, info, path,
                                     source, now)
        if len(self._cache) >= self._cache_limit:
            self._cache.clear()
        self._cache[key] = (code, now, until)
        return code

    def _evaluate(self, user, groups, component, channel, cluster, labels, info, path, source, now):
        candidates = self._candidates(user, groups, component, cluster, labels)
        second = math.floor(now)    # every boundary is a whole second, so this is exact
        until = FOREVER
        allowed = NO_MATCH
        address = None
        verb = info.verb
        attributes = (info.is_resource_request, info.api_group, info.resource, info.subresource,
                      info.namespace, info.name, path)
        for order in candidates:
            binding = self._bindings[order]
            if allowed != NO_MATCH and not binding.deny:
                continue        # the first allow names the decision; only a deny can still beat it
            if binding.timed:
                until = min(until, _next_boundary(binding, second))
                if not _holds_at(binding, second):
                    continue
            if binding.cidrs:
                if address is None:
                    address = parse_source(source) or ()
                if not _in_networks(address, binding.cidrs):
                    continue
            if binding.channels and channel not in binding.channels:
                continue
            rules = binding.by_verb.get(verb, binding.any_verb)
            if any(rule.allows(*attributes) for rule in rules):
                if binding.deny:
                    return order, until
                allowed = order
        return allowed, until

    def _candidates(self, user, groups, component, cluster, labels) -> tuple[int, ...] | list[int]:
        """The bindings naming any of the identity's subjects that select `cluster`, in order."""
        found: list[tuple[int, ...]] = []
        subjects = self._subjects
        entry = subjects["user"].get(user)
        if entry is not None:
            found.append(self._selected(entry, cluster, labels))
        groups_index = subjects["group"]
        for group in groups:
            entry = groups_index.get(group)
            if entry is not None:
                found.append(self._selected(entry, cluster, labels))
        if component:
            entry = subjects["service"].get(component)
            if entry is not None:
                found.append(self._selected(entry, cluster, labels))
        found = [orders for orders in found if orders]
        if not found:
            return ()
        if len(found) == 1:
            return found[0]
        return sorted(set().union(*found))

    def _selected(self, subject: _Subject, cluster: str, labels) -> tuple[int, ...]:
        orders = subject.memo.get(cluster)
        if orders is None:
            specs = self._specs
            chosen = subject.by_name.get(cluster, []) + [
                order for order in subject.selected if selects(specs[order], cluster, labels)]
            orders = tuple(sorted(chosen))
            if self._memo_size >= self._cache_limit:
                for subjects in self._subjects.values():
                    for other in subjects.values():
                        other.memo.clear()
                self._memo_size = 0
            subject.memo[cluster] = orders
            self._memo_size += 1
        return orders


def _holds_at(binding: _Binding, second: int) -> bool:
    if not binding.valid_from <= second < binding.valid_until:
        return False
    schedule = binding.schedule
    if schedule is None:
        return True
    mask, start, end = schedule
    weekday = (second // DAY + 3) % 7      # 1970-01-01 was a Thursday (mon = 0)
    return bool(mask >> weekday & 1) and start <= second % DAY < end


def _next_boundary(binding: _Binding, second: int) -> int:
    """The first whole second after `second` at which the binding could start or stop holding."""
    if second < binding.valid_from:
        until = binding.valid_from
    elif second < binding.valid_until:
        until = binding.valid_until
    else:
        until = FOREVER
    if binding.schedule is not None:
        _, start, end = binding.schedule
        midnight = second - second % DAY
        for edge in (start, end):
            at = midnight + edge if midnight + edge > second else midnight + DAY + edge
            until = min(until, at)
    return until


def _in_networks(address, cidrs) -> bool:
    if not address:
        return False
    version, value = address
    for net_version, network, mask in cidrs:
        if net_version == version and value & mask == network:
            return True
    return False
