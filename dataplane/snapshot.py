"""Snapshots: the signed, deterministic description of everything a gateway needs.

Format (docs/architecture.md, "Snapshot"): an envelope
`{"format", "key_id", "payload": base64(canonical JSON), "signature": base64(Ed25519)}`.
Verification fails closed: format, key id, signature, then a strict schema check of the payload.
Every error is a `SnapshotError` whose message names the field, never a secret's value.

Revocation deltas (`accesspoint.signed-revocations/v1`) use the same envelope around a small
payload `{"format": "accesspoint.revocations/v1", "revision", "issued_at", "revocations"}`; the
holder enforces them on top of the current snapshot until a full snapshot catches up.
"""
from __future__ import annotations

import base64
import binascii
import copy
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from dataplane import identity, policy
from dataplane.signing import key_id
from dataplane.tunnel.identities import identity_problem as agent_identity_problem
from native import _policyspec as policyspec

log = logging.getLogger(__name__)

ENVELOPE_FORMAT = "accesspoint.signed-snapshot/v1"
PAYLOAD_FORMAT = "accesspoint.snapshot/v1"
CREDENTIAL_KINDS = {"token": ("ref",), "client_cert": ("cert_ref", "key_ref")}
IDENTITY_MODES = frozenset({"impersonate", "ephemeral_service_account"})
SUBJECT_KINDS = frozenset({"user", "group", "service"})
REVOCATION_KINDS = ("users", "groups", "cert_serials", "token_ids", "sessions")
MAX_ENVELOPE_BYTES = 64 * 1024 * 1024
DELTA_ENVELOPE_FORMAT = "accesspoint.signed-revocations/v1"
DELTA_PAYLOAD_FORMAT = "accesspoint.revocations/v1"
MAX_DELTA_BYTES = 1024 * 1024


class SnapshotError(Exception):
    """The snapshot (or a credential reference) is unusable; the message says why."""


class SignatureError(SnapshotError):
    """Not signed by the trusted key: another key id, or a signature that does not verify."""


class RevocationDeltaError(SnapshotError, ValueError):
    """A revocation delta is unusable. Also a ValueError: what the control plane's callers catch."""


# -- data model -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Credential:
    kind: str                 # "token" | "client_cert"
    ref: str = ""             # token: file:NAME or env:VAR
    cert_ref: str = ""        # client_cert
    key_ref: str = ""


@dataclass(frozen=True)
class Cluster:
    name: str
    labels: Mapping[str, str] = field(hash=False)  # read-only mapping; not hashable
    endpoint: str
    tunnel: bool
    ca_bundle: str
    credential: Credential
    identity_mode: str
    kubectl_enabled: bool
    read_only: bool = False
    upstream_groups: tuple[str, ...] = ()     # groups the cluster's own RBAC names (group compaction)
    agent_identities: frozenset[str] = frozenset()   # agents that may serve a tunnel cluster (tunnel/identities.py)


class Snapshot:
    """A verified snapshot with its compiled policy and authenticator (built once, here)."""

    def __init__(self, data: dict[str, Any]):
        self.data = data
        self.revision: int = data["revision"]
        self.issued_at: str = data["issued_at"]
        self.clusters: dict[str, Cluster] = {c["name"]: _cluster(c) for c in data["clusters"]}
        self.policy = policy.CompiledPolicy(data)
        self.authenticator = identity.Authenticator(data)

    def with_revocations(self, revocations: Mapping[str, Iterable[str]]) -> Snapshot:
        """This snapshot with more revocations: same revision, clusters and policy (which never
        reads revocations), and a new authenticator, whose caches must not outlive a revocation."""
        current = self.data.get("revocations", {})
        merged = {kind: sorted(set(current.get(kind, ())) | set(revocations.get(kind, ())))
                  for kind in REVOCATION_KINDS}
        derived = copy.copy(self)
        derived.data = {**self.data, "revocations": merged}
        derived.authenticator = identity.Authenticator(derived.data)
        return derived

    def __repr__(self) -> str:
        return f"<Snapshot revision={self.revision} issued_at={self.issued_at} clusters={len(self.clusters)}>"


def _cluster(c: Mapping[str, Any]) -> Cluster:
    cred = c["credential"]
    return Cluster(
        name=c["name"],
        labels=MappingProxyType(dict(c.get("labels", {}))),
        endpoint=c["endpoint"],
        tunnel=c.get("tunnel", False),
        ca_bundle=c.get("ca_bundle", ""),
        credential=Credential(kind=cred["kind"], ref=cred.get("ref", ""),
                              cert_ref=cred.get("cert_ref", ""), key_ref=cred.get("key_ref", "")),
        identity_mode=c.get("identity_mode", "impersonate"),
        kubectl_enabled=c.get("kubectl_enabled", True),
        read_only=c.get("read_only", False),
        upstream_groups=tuple(c.get("upstream_groups", ())),
        agent_identities=frozenset(c.get("agent_identities", ())),
    )


# -- canonical encoding, signing, verification ------------------------------------------------------

def canonical_json(obj: Any) -> bytes:
    """The one byte encoding that is signed. Floats are refused: their text is not portable."""
    _refuse_floats(obj, "snapshot")
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def _refuse_floats(obj: Any, where: str) -> None:
    if isinstance(obj, float):
        raise SnapshotError(f"{where}: floating-point numbers are not allowed")
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, str):
                raise SnapshotError(f"{where}: object keys must be strings")
            _refuse_floats(value, f"{where}.{key}")
    elif isinstance(obj, (list, tuple)):
        for index, value in enumerate(obj):
            _refuse_floats(value, f"{where}[{index}]")


def sign_snapshot(snapshot: dict[str, Any], private_key: Ed25519PrivateKey) -> bytes:
    """Validate `snapshot` and return the signed envelope (JSON bytes)."""
    validate(snapshot)
    payload = canonical_json(snapshot)
    envelope = {
        "format": ENVELOPE_FORMAT,
        "key_id": key_id(private_key.public_key()),
        "payload": base64.b64encode(payload).decode("ascii"),
        "signature": base64.b64encode(private_key.sign(payload)).decode("ascii"),
    }
    return canonical_json(envelope)


def verify_snapshot(envelope: bytes, public_key: Ed25519PublicKey) -> Snapshot:
    data = _open_envelope(envelope, public_key, ENVELOPE_FORMAT, MAX_ENVELOPE_BYTES)
    validate(data)
    return Snapshot(data)


def verify_revocation_delta(envelope: bytes, public_key: Ed25519PublicKey) -> dict[str, Any]:
    """The payload of a revocation delta signed by `public_key`; RevocationDeltaError otherwise."""
    try:
        data = _open_envelope(envelope, public_key, DELTA_ENVELOPE_FORMAT, MAX_DELTA_BYTES)
        _fields(data, "delta", {"format": str, "revision": int, "issued_at": str, "revocations": dict}, {})
        if data["format"] != DELTA_PAYLOAD_FORMAT:
            raise SnapshotError(f"delta format must be {DELTA_PAYLOAD_FORMAT!r}")
        if data["revision"] < 0:
            raise SnapshotError("delta revision must not be negative")
        if not _ISSUED_AT.match(data["issued_at"]):
            raise SnapshotError("delta issued_at must be an RFC 3339 UTC time like 2026-11-23T08:00:00Z")
        _check_revocations(data["revocations"])
    except SnapshotError as exc:
        raise RevocationDeltaError(str(exc)) from None
    return data


def _open_envelope(envelope: bytes, public_key: Ed25519PublicKey, envelope_format: str,
                   max_bytes: int) -> Any:
    """The parsed payload of a signed envelope, after checking format, key id and signature."""
    if len(envelope) > max_bytes:
        raise SnapshotError(f"envelope is larger than {max_bytes} bytes")
    try:
        outer = json.loads(envelope)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SnapshotError(f"envelope is not JSON: {exc.__class__.__name__}") from None
    if not isinstance(outer, dict) or set(outer) != {"format", "key_id", "payload", "signature"}:
        raise SnapshotError("envelope must be an object with exactly format, key_id, payload, signature")
    if outer["format"] != envelope_format:
        raise SnapshotError(f"envelope format must be {envelope_format!r}")
    expected_key_id = key_id(public_key)
    if outer["key_id"] != expected_key_id:
        raise SignatureError(f"envelope key_id {str(outer['key_id'])[:64]!r} is not the trusted key {expected_key_id!r}")
    payload = _b64("payload", outer["payload"])
    signature = _b64("signature", outer["signature"])
    try:
        public_key.verify(signature, payload)
    except InvalidSignature:
        raise SignatureError("signature does not verify with the trusted key") from None
    try:
        data = json.loads(payload.decode("utf-8"), parse_constant=_refuse_constant,
                          object_pairs_hook=_refuse_duplicate_keys)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SnapshotError(f"payload is not UTF-8 JSON: {exc.__class__.__name__}") from None
    return data


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Canonical JSON never repeats a key; a repeat means two parsers could read different data.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise SnapshotError("payload repeats a key in an object")
    return obj


def _refuse_constant(name: str) -> Any:
    raise SnapshotError(f"payload contains {name}, which is not allowed")


def _b64(field: str, value: Any) -> bytes:
    if not isinstance(value, str):
        raise SnapshotError(f"envelope {field} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise SnapshotError(f"envelope {field} is not valid base64") from None


def load_snapshot_file(path: str | os.PathLike, public_key: Ed25519PublicKey) -> Snapshot:
    try:
        envelope = Path(path).read_bytes()
    except OSError as exc:
        raise SnapshotError(f"cannot read snapshot file {str(path)!r}: {exc.strerror}") from None
    return verify_snapshot(envelope, public_key)


# -- schema ---------------------------------------------------------------------------------------

_TOP_LEVEL_REQUIRED = {"format": str, "revision": int, "issued_at": str, "clusters": list}
_TOP_LEVEL_OPTIONAL = {"roles": list, "bindings": list, "tokens": list, "revocations": dict, "settings": dict}
_ISSUED_AT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$")
_SHA256_HEX = re.compile(r"^[0-9a-fA-F]{64}$")
_SERIAL_HEX = re.compile(r"^[0-9a-fA-F]{1,64}$")
# Cluster names appear in URLs (/clusters/<name>/…) and metrics labels: DNS-label-like only.
_CLUSTER_NAME = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")


def validate(data: Any) -> None:
    """Strict schema check; raises SnapshotError naming the first offending field."""
    if not isinstance(data, dict):
        raise SnapshotError("snapshot must be a JSON object")
    _refuse_floats(data, "snapshot")
    unknown = set(data) - set(_TOP_LEVEL_REQUIRED) - set(_TOP_LEVEL_OPTIONAL)
    if unknown:
        raise SnapshotError(f"unknown top-level field(s): {', '.join(sorted(unknown))}")
    for field, kind in _TOP_LEVEL_REQUIRED.items():
        if field not in data:
            raise SnapshotError(f"missing top-level field {field!r}")
        _expect(data[field], kind, field)
    for field, kind in _TOP_LEVEL_OPTIONAL.items():
        if field in data:
            _expect(data[field], kind, field)
    if data["format"] != PAYLOAD_FORMAT:
        raise SnapshotError(f"format must be {PAYLOAD_FORMAT!r}")
    if data["revision"] < 0:
        raise SnapshotError("revision must not be negative")
    if not _ISSUED_AT.match(data["issued_at"]):
        raise SnapshotError("issued_at must be an RFC 3339 UTC time like 2026-11-23T08:00:00Z")
    _unique_names(data["clusters"], "clusters", _check_cluster)
    roles = _unique_names(data.get("roles", []), "roles", _check_role)
    _unique_names(data.get("bindings", []), "bindings", lambda b, w: _check_binding(b, w, roles))
    _check_tokens(data.get("tokens", []))
    _check_revocations(data.get("revocations", {}))
    _check_settings(data.get("settings", {}))


def _expect(value: Any, kind: type, where: str) -> None:
    # bool is a subclass of int: a revision of `true` must not pass as 1.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise SnapshotError(f"{where} must be {_TYPE_NAMES[kind]}")


_TYPE_NAMES = {str: "a string", int: "an integer", bool: "a boolean", list: "a list", dict: "an object"}


def _fields(obj: Any, where: str, required: Mapping[str, type], optional: Mapping[str, type]) -> None:
    _expect(obj, dict, where)
    unknown = set(obj) - set(required) - set(optional)
    if unknown:
        raise SnapshotError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    for field, kind in required.items():
        if field not in obj:
            raise SnapshotError(f"{where}.{field} is missing")
        _expect(obj[field], kind, f"{where}.{field}")
    for field, kind in optional.items():
        if field in obj:
            _expect(obj[field], kind, f"{where}.{field}")


def _strings(value: Any, where: str, allow_empty_items: bool = False) -> list[str]:
    _expect(value, list, where)
    for index, item in enumerate(value):
        _expect(item, str, f"{where}[{index}]")
        if not item and not allow_empty_items:
            raise SnapshotError(f"{where}[{index}] must not be empty")
    return value


def _unique_names(items: list, where: str, check: Callable[[Any, str], None]) -> set[str]:
    names: set[str] = set()
    for index, item in enumerate(items):
        label = f"{where}[{index}]"
        check(item, label)
        name = item["name"]
        if name in names:
            raise SnapshotError(f"{label}.name: duplicate name {name!r}")
        names.add(name)
    return names


def _non_empty(obj: Mapping[str, Any], field: str, where: str) -> None:
    if not obj[field]:
        raise SnapshotError(f"{where}.{field} must not be empty")


def _check_cluster(c: Any, where: str) -> None:
    _fields(c, where, {"name": str, "endpoint": str, "credential": dict},
            {"labels": dict, "tunnel": bool, "ca_bundle": str, "identity_mode": str, "kubectl_enabled": bool,
             "read_only": bool, "upstream_groups": list, "agent_identities": list})
    _strings(c.get("upstream_groups", []), f"{where}.upstream_groups")
    for index, value in enumerate(_strings(c.get("agent_identities", []), f"{where}.agent_identities")):
        problem = agent_identity_problem(value)
        if problem:
            raise SnapshotError(f"{where}.agent_identities[{index}] {problem}")
    if not _CLUSTER_NAME.match(c["name"]):
        raise SnapshotError(f"{where}.name {c['name'][:64]!r} must be lower-case letters, digits, '.', '_' or '-'")
    for key, value in c.get("labels", {}).items():
        _expect(value, str, f"{where}.labels.{key}")
    _check_endpoint(c["endpoint"], f"{where}.endpoint")
    if c.get("identity_mode", "impersonate") not in IDENTITY_MODES:
        raise SnapshotError(f"{where}.identity_mode must be one of {', '.join(sorted(IDENTITY_MODES))}")
    _check_credential(c["credential"], f"{where}.credential")


def _check_endpoint(endpoint: str, where: str) -> None:
    try:
        parts = urlsplit(endpoint)
        _ = parts.port  # raises ValueError on a bad port
    except ValueError:
        raise SnapshotError(f"{where} is not a valid URL") from None
    if parts.scheme != "https" or not parts.hostname:
        raise SnapshotError(f"{where} must be an https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        # Credentials belong in the credential reference, never in a URL that gets logged.
        raise SnapshotError(f"{where} must not contain user information")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise SnapshotError(f"{where} must not have a path, query or fragment")


def _check_credential(cred: Any, where: str) -> None:
    _expect(cred, dict, where)
    kind = cred.get("kind")
    if not isinstance(kind, str) or kind not in CREDENTIAL_KINDS:
        raise SnapshotError(f"{where}.kind must be one of {', '.join(sorted(CREDENTIAL_KINDS))}")
    refs = CREDENTIAL_KINDS[kind]
    _fields(cred, where, {"kind": str, **{ref: str for ref in refs}}, {})
    for ref in refs:
        _check_reference(cred[ref], f"{where}.{ref}")


def _check_reference(ref: str, where: str) -> None:
    scheme, _, name = ref.partition(":")
    if scheme == "file":
        _secret_file_name(name, where)
    elif scheme == "env":
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
            raise SnapshotError(f"{where}: env: reference must name an environment variable")
    else:
        raise SnapshotError(f"{where} must be a file:NAME or env:VAR reference")


def _check_role(role: Any, where: str) -> None:
    _fields(role, where, {"name": str, "rules": list}, {})
    _non_empty(role, "name", where)
    for index, rule in enumerate(role["rules"]):
        _check_rule(rule, f"{where}.rules[{index}]")


_RULE_LISTS = ("verbs", "api_groups", "resources", "resource_names", "namespaces", "non_resource_urls")


def _check_rule(rule: Any, where: str) -> None:
    _fields(rule, where, {"verbs": list}, {field: list for field in _RULE_LISTS[1:]})
    for field in _RULE_LISTS:
        # api_groups may hold "" (the core group); nothing else may be empty.
        _strings(rule.get(field, []), f"{where}.{field}", allow_empty_items=field == "api_groups")
    # Empty lists are ambiguous (Kubernetes: match nothing; "unconstrained" to a casual reader),
    # so a rule must say what it grants: verbs, and resources with their groups and/or URLs.
    if not rule["verbs"]:
        raise SnapshotError(f"{where}.verbs must not be empty")
    has_resources = bool(rule.get("resources"))
    if has_resources != bool(rule.get("api_groups")):
        raise SnapshotError(f"{where}: resources and api_groups must be given together")
    if not has_resources and not rule.get("non_resource_urls"):
        raise SnapshotError(f"{where} must name resources or non_resource_urls")
    for index, url in enumerate(rule.get("non_resource_urls", [])):
        if not url.startswith("/") and url != "*" or "*" in url[:-1]:
            raise SnapshotError(f"{where}.non_resource_urls[{index}] must be a path, optionally ending in '*'")


def _check_binding(binding: Any, where: str, roles: set[str]) -> None:
    _fields(binding, where, {"name": str, "role": str, "subjects": list, "clusters": dict},
            {"effect": str, "valid_from": str, "valid_until": str, "conditions": dict, "grant": dict})
    _non_empty(binding, "name", where)
    if binding["role"] not in roles:
        raise SnapshotError(f"{where}.role names a missing role {binding['role']!r}")
    for index, subject in enumerate(binding["subjects"]):
        label = f"{where}.subjects[{index}]"
        _fields(subject, label, {"kind": str, "name": str}, {})
        if subject["kind"] not in SUBJECT_KINDS:
            raise SnapshotError(f"{label}.kind must be one of {', '.join(sorted(SUBJECT_KINDS))}")
        _non_empty(subject, "name", label)
    selector = binding["clusters"]
    _fields(selector, f"{where}.clusters", {}, {"names": list, "selector": dict, "match_expressions": list})
    _strings(selector.get("names", []), f"{where}.clusters.names")
    for key, value in selector.get("selector", {}).items():
        _expect(value, str, f"{where}.clusters.selector.{key}")
    for index, expression in enumerate(selector.get("match_expressions", [])):
        _check_match_expression(expression, f"{where}.clusters.match_expressions[{index}]")
    if binding.get("effect", "allow") not in policyspec.EFFECTS:
        raise SnapshotError(f"{where}.effect must be one of {', '.join(policyspec.EFFECTS)}")
    _check_validity(binding, where)
    if "conditions" in binding:
        _check_conditions(binding["conditions"], f"{where}.conditions")
    if "grant" in binding:
        _check_grant(binding["grant"], f"{where}.grant")


def _check_match_expression(expression: Any, where: str) -> None:
    _fields(expression, where, {"key": str, "operator": str}, {"values": list})
    _non_empty(expression, "key", where)
    operator = expression["operator"]
    if operator not in policyspec.OPERATORS:
        raise SnapshotError(f"{where}.operator must be one of {', '.join(policyspec.OPERATORS)}")
    values = _strings(expression.get("values", []), f"{where}.values", allow_empty_items=True)
    # Kubernetes' label-selector rules: In/NotIn need values, Exists/DoesNotExist take none.
    if operator in ("In", "NotIn") and not values:
        raise SnapshotError(f"{where}.values must not be empty for operator {operator}")
    if operator in ("Exists", "DoesNotExist") and values:
        raise SnapshotError(f"{where}.values must be empty for operator {operator}")


def _check_validity(binding: Mapping[str, Any], where: str) -> None:
    bounds = {}
    for field in ("valid_from", "valid_until"):
        if field in binding:
            try:
                bounds[field] = policyspec.parse_time(binding[field])
            except ValueError:
                raise SnapshotError(f"{where}.{field} must be a UTC time like 2026-11-23T08:00:00Z") from None
    if len(bounds) == 2 and bounds["valid_from"] >= bounds["valid_until"]:
        raise SnapshotError(f"{where}.valid_from must be before valid_until")


def _check_conditions(conditions: Any, where: str) -> None:
    _fields(conditions, where, {}, {"source_cidrs": list, "channels": list, "schedule": dict})
    for index, cidr in enumerate(_strings(conditions.get("source_cidrs", []), f"{where}.source_cidrs")):
        try:
            policyspec.parse_cidr(cidr)
        except ValueError:
            raise SnapshotError(f"{where}.source_cidrs[{index}] must be a network like 10.0.0.0/8 "
                                "(no host bits set)") from None
    for index, channel in enumerate(_strings(conditions.get("channels", []), f"{where}.channels")):
        if channel not in policyspec.CHANNELS:
            raise SnapshotError(f"{where}.channels[{index}] must be one of {', '.join(policyspec.CHANNELS)}")
    if "schedule" in conditions:
        _check_schedule(conditions["schedule"], f"{where}.schedule")


def _check_schedule(schedule: Any, where: str) -> None:
    _fields(schedule, where, {}, {"days": list, "start": str, "end": str})
    days = _strings(schedule.get("days", []), f"{where}.days")
    for index, day in enumerate(days):
        if day not in policyspec.DAYS:
            raise SnapshotError(f"{where}.days[{index}] must be one of {', '.join(policyspec.DAYS)}")
    if len(set(days)) != len(days):
        raise SnapshotError(f"{where}.days must not repeat a day")
    times = {}
    for field, default in (("start", "00:00"), ("end", "24:00")):
        try:
            times[field] = policyspec.parse_time_of_day(schedule.get(field, default), end=field == "end")
        except ValueError:
            raise SnapshotError(f"{where}.{field} must be a UTC time of day HH:MM") from None
    if times["start"] >= times["end"]:
        raise SnapshotError(f"{where}.start must be before end")


def _check_grant(grant: Any, where: str) -> None:
    _fields(grant, where, {}, {"kind": str, "id": str, "reason": str})
    kind = grant.get("kind", "binding")
    if kind not in policyspec.GRANT_KINDS:
        raise SnapshotError(f"{where}.kind must be one of {', '.join(policyspec.GRANT_KINDS)}")
    if kind != "binding" and not grant.get("id"):
        # provenance is the point of a grant: audit and the cluster's log join on this id
        raise SnapshotError(f"{where}.id must name the {kind.replace('_', ' ')}")


def _check_settings(settings: dict) -> None:
    _fields(settings, "settings", {}, {"break_glass_enabled": bool, "group_compaction": bool,
                                       "max_exec_sessions": int, "max_watches": int})
    for cap in ("max_exec_sessions", "max_watches"):
        if settings.get(cap, 0) < 0:
            raise SnapshotError(f"settings.{cap} must not be negative")


def _check_tokens(tokens: list) -> None:
    ids: set[str] = set()
    digests: set[str] = set()
    for index, token in enumerate(tokens):
        where = f"tokens[{index}]"
        _expect(token, dict, where)
        component = token.get("component")
        session = token.get("session")
        _fields({k: v for k, v in token.items() if k not in ("component", "session")}, where,
                {"id": str, "sha256": str, "user": str}, {"groups": list, "channel": str})
        if component is not None and not isinstance(component, str):
            raise SnapshotError(f"{where}.component must be a string or null")
        if session is not None and (not isinstance(session, str) or not session):
            raise SnapshotError(f"{where}.session must be a non-empty string or null")
        if token.get("channel", "kubectl") not in policyspec.CHANNELS:
            raise SnapshotError(f"{where}.channel must be one of {', '.join(policyspec.CHANNELS)}")
        _non_empty(token, "id", where)
        _non_empty(token, "user", where)
        if not _SHA256_HEX.match(token["sha256"]):
            raise SnapshotError(f"{where}.sha256 must be 64 hex digits")
        _strings(token.get("groups", []), f"{where}.groups")
        if token["id"] in ids:
            raise SnapshotError(f"{where}.id: duplicate token id {token['id']!r}")
        if token["sha256"].lower() in digests:
            raise SnapshotError(f"{where}.sha256: duplicate token hash")
        ids.add(token["id"])
        digests.add(token["sha256"].lower())


def _check_revocations(revocations: dict) -> None:
    _fields(revocations, "revocations", {}, {kind: list for kind in REVOCATION_KINDS})
    for kind in REVOCATION_KINDS:
        values = _strings(revocations.get(kind, []), f"revocations.{kind}")
        if kind == "cert_serials":
            for index, serial in enumerate(values):
                if not _SERIAL_HEX.match(serial):
                    raise SnapshotError(f"revocations.cert_serials[{index}] must be hex")


# -- holder ---------------------------------------------------------------------------------------

class SnapshotHolder:
    """The current snapshot of a worker. Reading `.current` is an atomic reference read, so a
    request that took it once sees one snapshot throughout, never a mix.

    Revocation deltas newer than the full snapshot stay pending here and are laid over every
    snapshot applied until one at (or past) their revision arrives: that one contains them, or
    lifts them on purpose. Subscribers hear of every swap, overlays (same revision) included."""

    def __init__(self) -> None:
        self.current: Snapshot | None = None
        self._subscribers: list[Callable[[Snapshot], None]] = []
        self._pending: list[tuple[int, Mapping[str, list[str]]]] = []   # (delta revision, revocations)

    def apply(self, snapshot: Snapshot) -> bool:
        current = self.current
        if current is not None:
            if snapshot.revision < current.revision:
                log.warning("refusing snapshot revision %d: older than the current %d",
                            snapshot.revision, current.revision)
                return False
            if snapshot.revision == current.revision:
                return True
        self._pending = [(revision, lists) for revision, lists in self._pending if revision > snapshot.revision]
        for _, lists in self._pending:
            snapshot = snapshot.with_revocations(lists)
        self._swap(snapshot)
        log.info("applied snapshot revision %d (issued %s)%s", snapshot.revision, snapshot.issued_at,
                 f", with {len(self._pending)} newer revocation delta(s)" if self._pending else "")
        return True

    def apply_revocations(self, revision: int, revocations: Mapping[str, list[str]]) -> bool:
        """Enforce a verified revocation delta of `revision` now; False when the current snapshot
        is already at that revision or later (and so has it, or has lifted it since)."""
        current = self.current
        if current is not None and current.revision >= revision:
            return False
        self._pending.append((revision, revocations))
        if current is not None:
            self._swap(current.with_revocations(revocations))
        log.info("applied revocation delta of revision %d on top of snapshot revision %s", revision,
                 current.revision if current is not None else "(none yet)")
        return True

    def subscribe(self, callback: Callable[[Snapshot], None]) -> None:
        self._subscribers.append(callback)

    def _swap(self, snapshot: Snapshot) -> None:
        self.current = snapshot
        for callback in list(self._subscribers):
            try:
                callback(snapshot)
            except Exception:  # one faulty subscriber must not block the others or the swap
                log.exception("snapshot subscriber failed")


# -- credential references ------------------------------------------------------------------------

@dataclass(frozen=True)
class ResolvedCredential:
    token: str | None
    cert_file: Path | None
    key_file: Path | None


def resolve_credential(cred: Credential, secrets_dir: Path) -> ResolvedCredential:
    """Turn references into usable material. Errors name the reference, never the secret."""
    if cred.kind == "token":
        token = _read_reference(cred.ref, Path(secrets_dir), "credential.ref").strip()
        if not token:
            raise SnapshotError(f"credential.ref {cred.ref!r}: the token is empty")
        return ResolvedCredential(token=token, cert_file=None, key_file=None)
    if cred.kind == "client_cert":
        # ssl.SSLContext.load_cert_chain wants files; env: refs cannot be loaded that way.
        return ResolvedCredential(
            token=None,
            cert_file=_existing_file(cred.cert_ref, Path(secrets_dir), "credential.cert_ref"),
            key_file=_existing_file(cred.key_ref, Path(secrets_dir), "credential.key_ref"),
        )
    raise SnapshotError(f"credential.kind {cred.kind!r} is not supported")


def _read_reference(ref: str, secrets_dir: Path, where: str) -> str:
    scheme, _, name = ref.partition(":")
    if scheme == "env":
        value = os.environ.get(name)
        if value is None:
            raise SnapshotError(f"{where} {ref!r}: environment variable is not set")
        return value
    path = _existing_file(ref, secrets_dir, where)
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SnapshotError(f"{where} {ref!r}: cannot read ({exc.__class__.__name__})") from None


def _existing_file(ref: str, secrets_dir: Path, where: str) -> Path:
    scheme, _, name = ref.partition(":")
    if scheme != "file":
        raise SnapshotError(f"{where} {ref!r}: must be a file:NAME reference")
    path = secrets_dir / _secret_file_name(name, where)
    if not path.is_file():
        raise SnapshotError(f"{where} {ref!r}: no such file in the secrets directory")
    return path


def _secret_file_name(name: str, where: str) -> PurePosixPath:
    relative = PurePosixPath(name)
    if not name or relative.is_absolute() or ".." in relative.parts or "\\" in name or "\x00" in name:
        raise SnapshotError(f"{where}: file: reference must be a relative name inside the secrets directory")
    return relative
