# cython: language_level=3, boundscheck=False, wraparound=False
"""Compiled access policy, in Cython. Same interface and results as _policy_py (the oracle).

Mirrors the twin step for step; the speed comes from typed bindings and rules (C fields instead
of attribute dictionaries), whole-second time arithmetic in C integers, and reading the request
attributes once per decision.
"""
from libc.math cimport floor

from native._policyspec import (ALL, FOREVER, KUBECTL_DISABLED, NO_MATCH, READ_ONLY, READ_VERBS,
                                UNKNOWN_CLUSTER, by_name_only, compile_spec, parse_source, selects)

cdef long long C_FOREVER = FOREVER
cdef long long C_DAY = 86400
cdef int C_NO_MATCH = NO_MATCH


cdef class _Rule:
    cdef frozenset api_groups, resources, resource_names, namespaces
    cdef tuple urls
    cdef bint any_group, any_resource, any_namespace

    def __init__(self, spec):
        self.api_groups = spec.api_groups
        self.resources = spec.resources
        self.resource_names = spec.resource_names
        self.namespaces = spec.namespaces
        self.urls = spec.non_resource_urls
        self.any_group = ALL in spec.api_groups
        self.any_resource = ALL in spec.resources
        self.any_namespace = ALL in spec.namespaces

    cdef bint allows(self, bint is_resource, str api_group, str resource, str subresource,
                     str namespace, str name, str path):
        cdef str pattern
        if not is_resource:
            for pattern in self.urls:
                if pattern == "*" or pattern == path:
                    return True
                if pattern.endswith("*") and path.startswith(pattern[:-1]):
                    return True
            return False
        if not self.any_group and api_group not in self.api_groups:
            return False
        if not self.any_resource:
            if not subresource:
                if resource not in self.resources:
                    return False
            elif (resource + "/" + subresource not in self.resources
                  and "*/" + subresource not in self.resources
                  and resource + "/*" not in self.resources):
                return False
        if self.resource_names and name not in self.resource_names:
            return False
        if self.namespaces:
            return bool(namespace) and (self.any_namespace or namespace in self.namespaces)
        return True


cdef class _Binding:
    cdef bint deny, timed, has_schedule
    cdef dict by_verb
    cdef tuple any_verb, cidrs
    cdef frozenset channels
    cdef long long valid_from, valid_until, start, end
    cdef int mask

    def __init__(self, spec, tuple role):
        self.deny = spec.deny
        self.by_verb, self.any_verb = role
        self.timed = spec.timed
        self.valid_from = spec.valid_from
        self.valid_until = spec.valid_until
        self.cidrs = spec.cidrs
        self.channels = spec.channels
        self.has_schedule = spec.schedule is not None
        if self.has_schedule:
            self.mask, self.start, self.end = spec.schedule

    cdef bint holds_at(self, long long second):
        cdef long long weekday
        if not (self.valid_from <= second < self.valid_until):
            return False
        if not self.has_schedule:
            return True
        weekday = (second // C_DAY + 3) % 7      # 1970-01-01 was a Thursday (mon = 0)
        return ((self.mask >> weekday) & 1) != 0 and self.start <= second % C_DAY < self.end

    cdef long long next_boundary(self, long long second):
        cdef long long until, midnight, at
        if second < self.valid_from:
            until = self.valid_from
        elif second < self.valid_until:
            until = self.valid_until
        else:
            until = C_FOREVER
        if self.has_schedule:
            midnight = second - second % C_DAY
            at = midnight + self.start if midnight + self.start > second else midnight + C_DAY + self.start
            if at < until:
                until = at
            at = midnight + self.end if midnight + self.end > second else midnight + C_DAY + self.end
            if at < until:
                until = at
        return until


cdef class _Subject:
    cdef dict by_name, memo
    cdef list selected

    def __init__(self):
        self.by_name = {}
        self.memo = {}
        self.selected = []


cdef class _Entry:
    cdef int code
    cdef double since
    cdef long long until


cdef class PolicyIndex:
    cdef dict _clusters, _cache, _subjects, _users, _groups, _services
    cdef list _bindings
    cdef tuple _specs
    cdef Py_ssize_t _cache_limit, _memo_size
    cdef readonly bint reads_source, reads_channel

    def __init__(self, snapshot_data, Py_ssize_t cache_limit=100_000):
        cdef _Subject subject
        spec = compile_spec(snapshot_data)
        self._clusters = spec.clusters
        self._cache_limit = cache_limit
        self._cache = {}
        self._memo_size = 0
        self._users, self._groups, self._services = {}, {}, {}
        self._subjects = {"user": self._users, "group": self._groups, "service": self._services}
        self._bindings = []
        self.reads_source = self.reads_channel = False
        roles = {name: ({verb: tuple([_Rule(r) for r in rules]) for verb, rules in role.by_verb.items()},
                        tuple([_Rule(r) for r in role.any_verb]))
                 for name, role in spec.roles.items()}
        for order, binding in enumerate(spec.bindings):
            self._bindings.append(_Binding(binding, roles[binding.role]))
            if binding.break_glass and not spec.break_glass_enabled:
                continue        # the fleet-wide kill switch: as if the binding were not there
            self.reads_source |= bool(binding.cidrs)
            self.reads_channel |= bool(binding.channels)
            for kind, name in binding.subjects:
                index = self._subjects[kind]
                subject = index.get(name)
                if subject is None:
                    subject = index[name] = _Subject()
                if by_name_only(binding):
                    for cluster in binding.names:
                        subject.by_name.setdefault(cluster, []).append(order)
                else:
                    subject.selected.append(order)
        self._specs = spec.bindings

    @property
    def cache_size(self):
        return len(self._cache)

    def decide(self, str user, tuple groups, str component, str channel, str cluster, info,
               str source, double now):
        cdef _Entry entry
        cdef str verb, path
        cdef bint is_resource
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
        cached = self._cache.get(key)
        if cached is not None:
            entry = <_Entry>cached
            if entry.since <= now < entry.until:
                return entry.code
        entry = _Entry.__new__(_Entry)
        entry.since = now
        entry.code = self._evaluate(user, groups, component, channel, cluster, target.labels, info, verb,
                                    is_resource, path, source, now, entry)
        if len(self._cache) >= self._cache_limit:
            self._cache.clear()
        self._cache[key] = entry
        return entry.code

    cdef int _evaluate(self, str user, tuple groups, str component, str channel, str cluster, labels,
                       info, str verb, bint is_resource, str path, str source, double now,
                       _Entry entry) except? -100:
        cdef object candidates = self._candidates(user, groups, component, cluster, labels)
        cdef long long second = <long long>floor(now)    # every boundary is a whole second
        cdef long long until = C_FOREVER, at
        cdef int allowed = C_NO_MATCH
        cdef Py_ssize_t order
        cdef _Binding binding
        cdef _Rule rule
        cdef object address = None
        cdef bint matched
        cdef str api_group = info.api_group, resource = info.resource, subresource = info.subresource
        cdef str namespace = info.namespace, name = info.name
        entry.until = C_FOREVER
        for order in candidates:
            binding = <_Binding>self._bindings[order]
            if allowed != C_NO_MATCH and not binding.deny:
                continue        # the first allow names the decision; only a deny can still beat it
            if binding.timed:
                at = binding.next_boundary(second)
                if at < until:
                    until = at
                if not binding.holds_at(second):
                    continue
            if binding.cidrs:
                if address is None:
                    address = parse_source(source) or ()
                if not _in_networks(address, binding.cidrs):
                    continue
            if binding.channels and channel not in binding.channels:
                continue
            rules = binding.by_verb.get(verb, binding.any_verb)
            matched = False
            for rule in rules:
                if rule.allows(is_resource, api_group, resource, subresource, namespace, name, path):
                    matched = True
                    break
            if matched:
                if binding.deny:
                    entry.until = until
                    return <int>order
                allowed = <int>order
        entry.until = until
        return allowed

    cdef object _candidates(self, str user, tuple groups, str component, str cluster, labels):
        cdef list found = []
        cdef tuple orders
        cdef str group
        subject = self._users.get(user)
        if subject is not None:
            orders = self._selected(<_Subject>subject, cluster, labels)
            if orders:
                found.append(orders)
        for group in groups:
            subject = self._groups.get(group)
            if subject is not None:
                orders = self._selected(<_Subject>subject, cluster, labels)
                if orders:
                    found.append(orders)
        if component:
            subject = self._services.get(component)
            if subject is not None:
                orders = self._selected(<_Subject>subject, cluster, labels)
                if orders:
                    found.append(orders)
        if not found:
            return ()
        if len(found) == 1:
            return found[0]
        return sorted(set().union(*found))

    cdef tuple _selected(self, _Subject subject, str cluster, labels):
        cdef tuple orders
        cdef _Subject other
        cached = subject.memo.get(cluster)
        if cached is not None:
            return <tuple>cached
        specs = self._specs
        chosen = subject.by_name.get(cluster, []) + [
            order for order in subject.selected if selects(specs[order], cluster, labels)]
        orders = tuple(sorted(chosen))
        if self._memo_size >= self._cache_limit:
            for index in self._subjects.values():
                for other in index.values():
                    other.memo.clear()
            self._memo_size = 0
        subject.memo[cluster] = orders
        self._memo_size += 1
        return orders


cdef bint _in_networks(object address, tuple cidrs):
    if not address:
        return False
    version, value = address
    for net_version, network, mask in cidrs:
        if net_version == version and value & mask == network:
            return True
    return False
