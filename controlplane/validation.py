"""Input checks for the API: what the gateways' snapshot schema refuses, plus the control plane's
own rules (names, label syntax, selectors that select something, validity windows).

Each item is checked against `dataplane.snapshot.validate` itself, inside a one-item snapshot, so
the API can never accept what a gateway would refuse; the schema's field path ("clusters[0].…")
is renamed to the API's ("cluster.…"). Errors are `InvalidArgument` naming the field.
"""
from __future__ import annotations

import ipaddress
import re
from typing import Any

from dataplane import snapshot as schema

from .errors import InvalidArgument
from .model import (CHANNELS, EFFECTS, REVOCATION_KINDS, SELECTOR_OPERATORS, WEEKDAYS, Binding, Cluster, ClusterSelector,
                    Conditions, EventQuery, Revocation, Role, ServiceIdentity, Settings)

# Roles, bindings, service identities: like Kubernetes object names, ':' allowed (system:view).
_NAME = re.compile(r"^[a-z0-9]([a-z0-9.:_-]{0,61}[a-z0-9])?$")
# Kubernetes label syntax: optional DNS-subdomain prefix "/" name; values ≤ 63 characters.
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")
_LABEL_PREFIX = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?$")
_SERIAL_HEX = re.compile(r"^[0-9a-fA-F]{1,64}$")
MAX_SUBJECT_LENGTH = 256
# X.509 upper bounds of a common name and an organization (RFC 5280): the certificate's CN and O.
MAX_CERTIFICATE_NAME_LENGTH = 64
MAX_AUDIT_LIMIT = 10000
MAX_REASON_LENGTH = 1024
# Break-glass is for emergencies: an activation lasts hours at most, whatever the policy says.
MAX_BREAK_GLASS_SECONDS = 24 * 3600
_TIME_OF_DAY = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
_PLACEHOLDER_RULE = {"verbs": ["get"], "api_groups": [""], "resources": ["pods"]}


def _against_schema(section: str, item: dict[str, Any], api_name: str, **extra: Any) -> None:
    document = {"format": schema.PAYLOAD_FORMAT, "revision": 0, "issued_at": "1970-01-01T00:00:00Z",
                "clusters": [], **extra, section: [item]}
    try:
        schema.validate(document)
    except schema.SnapshotError as exc:
        message = str(exc).replace(f"{section}[0]", api_name)
        field, sep, problem = message.partition(" ")
        raise InvalidArgument(field.rstrip(":"), problem) from None


def check_name(value: str, field: str) -> None:
    if not _NAME.match(value):
        raise InvalidArgument(field, f"{value[:64]!r} must be 1-63 lower-case letters, digits, "
                                     "'.', ':', '_' or '-', starting and ending with a letter or digit")


def check_labels(labels: dict[str, str], field: str) -> None:
    for key, value in labels.items():
        prefix, slash, name = key.rpartition("/")
        if not _LABEL_NAME.match(name) or (slash and not _LABEL_PREFIX.match(prefix)):
            raise InvalidArgument(f"{field}", f"key {key[:80]!r} is not a valid label key")
        if not _LABEL_VALUE.match(value):
            raise InvalidArgument(f"{field}.{key}", f"value {value[:80]!r} is not a valid label value")


def check_subject_name(value: str, field: str) -> None:
    if not value or len(value) > MAX_SUBJECT_LENGTH or not value.isprintable():
        raise InvalidArgument(field, f"must be 1-{MAX_SUBJECT_LENGTH} printable characters")


def check_cluster(cluster: Cluster) -> None:
    _against_schema("clusters", cluster.to_snapshot(), "cluster")
    check_labels(cluster.labels, "cluster.labels")
    for index, group in enumerate(cluster.upstream_groups):
        check_subject_name(group, f"cluster.upstream_groups[{index}]")
    if len(set(cluster.upstream_groups)) != len(cluster.upstream_groups):
        raise InvalidArgument("cluster.upstream_groups", "names a group twice")


def check_selector(selector: ClusterSelector, field: str) -> None:
    if selector.is_empty():
        # The gateway reads an empty selector as "no cluster"; say so instead of storing a no-op.
        raise InvalidArgument(field, "give cluster names (\"*\" for all), a label selector or match_expressions")
    for index, name in enumerate(selector.names):
        if name != "*" and not schema._CLUSTER_NAME.match(name):
            raise InvalidArgument(f"{field}.names[{index}]", f"{name[:64]!r} is not a cluster name")
    check_labels(selector.labels, f"{field}.selector")
    for index, expression in enumerate(selector.expressions):
        where = f"{field}.match_expressions[{index}]"
        check_labels({expression.key: ""}, f"{where}.key")
        if expression.operator not in SELECTOR_OPERATORS:
            raise InvalidArgument(f"{where}.operator", f"must be one of {', '.join(SELECTOR_OPERATORS)}")
        takes_values = expression.operator in ("In", "NotIn")
        if takes_values != bool(expression.values):
            raise InvalidArgument(f"{where}.values", "In and NotIn need values; Exists and DoesNotExist take none")
        for value_index, value in enumerate(expression.values):
            if not value or not _LABEL_VALUE.match(value):
                raise InvalidArgument(f"{where}.values[{value_index}]", f"{value[:80]!r} is not a label value")


def _check_conditions(conditions: Conditions, field: str) -> None:
    for index, cidr in enumerate(conditions.source_cidrs):
        try:
            ipaddress.ip_network(cidr, strict=True)
        except ValueError:
            raise InvalidArgument(f"{field}.source_cidrs[{index}]", f"{cidr[:64]!r} is not a CIDR such as "
                                                                    "10.0.0.0/8 (host bits must be zero)") from None
    for index, channel in enumerate(conditions.channels):
        if channel not in CHANNELS:
            raise InvalidArgument(f"{field}.channels[{index}]", f"must be one of {', '.join(CHANNELS)}")
    if len(set(conditions.channels)) != len(conditions.channels):
        raise InvalidArgument(f"{field}.channels", "names a channel twice")
    schedule = conditions.schedule
    if schedule is None:
        return
    for index, day in enumerate(schedule.days):
        if day not in WEEKDAYS:
            raise InvalidArgument(f"{field}.schedule.days[{index}]", f"must be one of {', '.join(WEEKDAYS)}")
    if len(set(schedule.days)) != len(schedule.days):
        raise InvalidArgument(f"{field}.schedule.days", "names a day twice")
    if not _TIME_OF_DAY.match(schedule.start):
        raise InvalidArgument(f"{field}.schedule.start", "must be HH:MM (UTC, 00:00-23:59)")
    if not _TIME_OF_DAY.match(schedule.end) and schedule.end != "24:00":
        raise InvalidArgument(f"{field}.schedule.end", "must be HH:MM (UTC, 00:01-24:00)")
    if schedule.start >= schedule.end:
        raise InvalidArgument(f"{field}.schedule.end", "must be later than start (the same UTC day)")


def check_role(role: Role) -> None:
    check_name(role.name, "role.name")
    if not role.rules:
        raise InvalidArgument("role.rules", "a role needs at least one rule")
    _against_schema("roles", role.to_snapshot(), "role")


def check_binding(binding: Binding) -> None:
    check_name(binding.name, "binding.name")
    check_name(binding.role, "binding.role")
    if not binding.subjects:
        raise InvalidArgument("binding.subjects", "a binding needs at least one subject")
    for index, subject in enumerate(binding.subjects):
        check_subject_name(subject.name, f"binding.subjects[{index}].name")
    if binding.effect not in EFFECTS:
        raise InvalidArgument("binding.effect", f"must be one of {', '.join(EFFECTS)}")
    check_selector(binding.clusters, "binding.clusters")
    _check_conditions(binding.conditions, "binding.conditions")
    if binding.valid_from and binding.valid_until and binding.valid_from >= binding.valid_until:
        raise InvalidArgument("binding.valid_until", "must be later than valid_from")
    roles = [{"name": binding.role, "rules": [_PLACEHOLDER_RULE]}]
    _against_schema("bindings", binding.to_snapshot(), "binding", roles=roles)


def check_service_identity(service: ServiceIdentity) -> None:
    check_name(service.name, "service_identity.name")
    for index, group in enumerate(service.groups):
        check_subject_name(group, f"service_identity.groups[{index}]")


def check_token_request(user: str, groups: tuple[str, ...], service: str) -> None:
    if service:
        check_name(service, "service")
        if user or groups:
            raise InvalidArgument("user", "a service token takes its user and groups from the service identity")
        return
    check_subject_name(user, "user")
    for index, group in enumerate(groups):
        check_subject_name(group, f"groups[{index}]")


def check_settings(settings: Settings) -> None:
    for field in ("max_exec_sessions", "max_watches"):
        if getattr(settings, field) < 0:
            raise InvalidArgument(f"settings.{field}", "must not be negative (0: no cap)")
    if settings.approver_group:
        check_subject_name(settings.approver_group, "settings.approver_group")
    for field in ("access_request_max_duration", "session_idle_timeout"):
        if getattr(settings, field) <= 0:
            raise InvalidArgument(f"settings.{field}", "must be more than 0 s")
    policy = settings.break_glass
    if not 0 < policy.max_duration <= MAX_BREAK_GLASS_SECONDS:
        raise InvalidArgument("settings.break_glass.max_duration", f"must be more than 0 s and at most "
                                                                   f"{MAX_BREAK_GLASS_SECONDS} s")
    if not policy.role:
        return
    check_name(policy.role, "settings.break_glass.role")
    check_subject_name(policy.group, "settings.break_glass.group")
    check_selector(policy.clusters, "settings.break_glass.clusters")


def check_reason(reason: str, required: bool = True) -> None:
    if required and not reason.strip():
        raise InvalidArgument("reason", "is required: say why")
    if len(reason) > MAX_REASON_LENGTH or not reason.isprintable():
        raise InvalidArgument("reason", f"must be at most {MAX_REASON_LENGTH} printable characters")


def check_access_request(role: str, cluster: str, duration: int | None, reason: str) -> None:
    check_name(role, "role")
    check_cluster_name(cluster, "cluster")
    if duration is None or duration <= 0:
        raise InvalidArgument("duration", "is required and must be more than 0 s")
    check_reason(reason)


def check_cluster_name(cluster: str, field: str) -> None:
    if not schema._CLUSTER_NAME.match(cluster):
        raise InvalidArgument(field, f"{cluster[:64]!r} is not a cluster name")


def check_channel(channel: str) -> None:
    if channel not in CHANNELS:
        raise InvalidArgument("channel", f"must be one of {', '.join(CHANNELS)}")


def check_kubeconfig_request(user: str, groups: tuple[str, ...], cluster: str) -> None:
    check_subject_name(user, "user")
    fields = [("user", user)] + [(f"groups[{index}]", group) for index, group in enumerate(groups)]
    for field, value in fields[1:]:
        check_subject_name(value, field)
    for field, value in fields:
        if len(value) > MAX_CERTIFICATE_NAME_LENGTH:
            raise InvalidArgument(field, f"a certificate holds at most {MAX_CERTIFICATE_NAME_LENGTH} characters here")
    if len(set(groups)) != len(groups):
        raise InvalidArgument("groups", "names a group twice")
    if not schema._CLUSTER_NAME.match(cluster):
        raise InvalidArgument("cluster", f"{cluster[:64]!r} is not a cluster name")


def check_event_query(query: EventQuery) -> None:
    if not 0 < query.limit <= MAX_AUDIT_LIMIT:
        raise InvalidArgument("limit", f"must be 1-{MAX_AUDIT_LIMIT}")
    if query.since and query.until and query.since >= query.until:
        raise InvalidArgument("until", "must be later than since")


def normalise_revocation(revocation: Revocation) -> Revocation:
    """Check a revocation and return it in the form gateways compare (serials: lower hex)."""
    if revocation.kind not in REVOCATION_KINDS:
        raise InvalidArgument("kind", f"must be one of {', '.join(REVOCATION_KINDS)}")
    value = revocation.value
    if revocation.kind == "cert_serial":
        if not _SERIAL_HEX.match(value):
            raise InvalidArgument("value", "a certificate serial must be 1-64 hex digits")
        value = format(int(value, 16), "x")
    else:
        check_subject_name(value, "value")
    return Revocation(kind=revocation.kind, value=value, reason=revocation.reason)
