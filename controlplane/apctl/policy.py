"""apctl's commands for the people-facing policy: access requests, break-glass, console sessions,
settings. Who acts is whoever apctl's token belongs to: a person's own gateway token for
`access` and `breakglass`, the admin (or portal) token for `session`, the admin for `settings set`.
"""
from __future__ import annotations

import argparse
from typing import Any

import yaml
from google.protobuf import json_format

from ..api.v1 import access_pb2, sessions_pb2, settings_pb2
from . import output
from .connection import Client, UsageError


def _show(message: Any, kind: str, fmt: str, line: str) -> int:
    """One object: its summary line, or the document with -o json|yaml."""
    if fmt == "table":
        print(line)
    else:
        output.print_document(output.to_dict(message, kind), fmt)
    return 0


def _window(start, end) -> str:
    return f"{output.timestamp_text(start)} until {output.timestamp_text(end)}"


# -- access requests and break-glass -----------------------------------------------------------------------

def cmd_access_request(client: Client, ns: argparse.Namespace) -> int:
    created = client.call(client.access.CreateAccessRequest, access_pb2.CreateAccessRequestRequest(
        role=ns.role, cluster=ns.cluster, duration=output.proto_duration(ns.duration), reason=ns.reason))
    return _show(created, "AccessRequest", ns.output,
                 f'access request {created.id} for role "{created.role}" on cluster "{created.cluster}" is pending')


def _decide(client: Client, ns: argparse.Namespace, approve: bool) -> int:
    method = client.access.ApproveAccessRequest if approve else client.access.DenyAccessRequest
    decided = client.call(method, access_pb2.DecideAccessRequestRequest(id=ns.id, reason=ns.reason))
    line = f"access request {decided.id} {decided.state}"
    if decided.binding:
        line += f': "{decided.user}" has role "{decided.role}" on "{decided.cluster}" until ' \
                f"{output.timestamp_text(decided.expires_at)}"
    return _show(decided, "AccessRequest", ns.output, line)


def cmd_access_approve(client: Client, ns: argparse.Namespace) -> int:
    return _decide(client, ns, approve=True)


def cmd_access_deny(client: Client, ns: argparse.Namespace) -> int:
    return _decide(client, ns, approve=False)


def cmd_access_list(client: Client, ns: argparse.Namespace) -> int:
    items = client.call(client.access.ListAccessRequests,
                        access_pb2.ListAccessRequestsRequest(state=ns.state, user=ns.user)).access_requests
    if ns.output != "table":
        output.print_list([output.to_dict(r, "AccessRequest") for r in items], ns.output)
        return 0
    output.print_table(["ID", "USER", "ROLE", "CLUSTER", "DURATION", "STATE", "DECIDED-BY", "EXPIRES", "REASON"],
                       [[r.id, r.user, r.role, r.cluster, f"{r.duration.seconds}s", r.state, r.decided_by or "<none>",
                         output.timestamp_text(r.expires_at), r.reason] for r in items], "access requests")
    return 0


def cmd_breakglass_activate(client: Client, ns: argparse.Namespace) -> int:
    request = access_pb2.ActivateBreakGlassRequest(cluster=ns.cluster, reason=ns.reason)
    if ns.duration is not None:
        request.duration.CopyFrom(output.proto_duration(ns.duration))
    binding = client.call(client.access.ActivateBreakGlass, request)
    return _show(binding, "Binding", ns.output,
                 f'break-glass {binding.grant.id}: role "{binding.role}" on "{binding.clusters.names[0]}" from '
                 f"{_window(binding.valid_from, binding.valid_until)} (this activation is an alert)")


# -- console sessions -------------------------------------------------------------------------------------

def cmd_session_create(client: Client, ns: argparse.Namespace) -> int:
    session = client.call(client.sessions.CreateSession, sessions_pb2.CreateSessionRequest(user=ns.user))
    return _show(session, "Session", ns.output, f'session {session.id} for "{session.user}" created')


def cmd_session_touch(client: Client, ns: argparse.Namespace) -> int:
    session = client.call(client.sessions.TouchSession, sessions_pb2.TouchSessionRequest(id=ns.id))
    return _show(session, "Session", ns.output, f"session {session.id} touched")


def cmd_session_logout(client: Client, ns: argparse.Namespace) -> int:
    ended = client.call(client.sessions.LogoutSession, sessions_pb2.LogoutSessionRequest(id=ns.id))
    print(f"session {ns.id} logged out; its credentials are revoked at revision {ended.revision}")
    return 0


def cmd_session_list(client: Client, ns: argparse.Namespace) -> int:
    items = client.call(client.sessions.ListSessions, sessions_pb2.ListSessionsRequest()).sessions
    if ns.output != "table":
        output.print_list([output.to_dict(s, "Session") for s in items], ns.output)
        return 0
    output.print_table(["ID", "USER", "CREATED", "LAST-SEEN", "ENDED", "REASON"],
                       [[s.id, s.user, output.timestamp_text(s.created_at), output.age(s.last_seen_at),
                         output.timestamp_text(s.ended_at), s.end_reason or "<none>"] for s in items], "sessions")
    return 0


# -- settings -------------------------------------------------------------------------------------------------

def cmd_settings_get(client: Client, ns: argparse.Namespace) -> int:
    settings = client.call(client.settings.GetSettings, settings_pb2.GetSettingsRequest())
    data = output.to_dict(settings, "Settings")
    output.print_document(data, "json" if ns.output == "json" else "yaml")
    return 0


def _assign(data: dict[str, Any], assignment: str) -> None:
    """KEY=VALUE into the settings' JSON form: dotted keys reach into break_glass, values are YAML
    (true, 50, {selector: {env: prod}}), durations are written like 1h30m."""
    key, sep, text = assignment.partition("=")
    if not sep or not key:
        raise UsageError(f"{assignment!r}: expected KEY=VALUE")
    try:
        value = yaml.safe_load(text) if text else ""
    except yaml.YAMLError:
        raise UsageError(f"{key}: the value is not valid YAML") from None
    if key.endswith(("duration", "timeout")):
        try:
            value = f"{int(output.parse_duration(str(value)).total_seconds())}s"
        except ValueError as exc:
            raise UsageError(f"{key}: {exc}") from None
    *parents, leaf = key.split(".")
    target = data
    for part in parents:
        target = target.setdefault(part, {})
    target[leaf] = value


def cmd_settings_set(client: Client, ns: argparse.Namespace) -> int:
    current = client.call(client.settings.GetSettings, settings_pb2.GetSettingsRequest())
    data = json_format.MessageToDict(current, preserving_proto_field_name=True)
    data.pop("revision", None)
    for assignment in ns.assignments:
        _assign(data, assignment)
    try:
        desired = json_format.ParseDict(data, settings_pb2.Settings())
    except json_format.ParseError as exc:
        raise UsageError(f"settings: {str(exc).splitlines()[0]}") from None
    updated = client.call(client.settings.UpdateSettings,
                          settings_pb2.UpdateSettingsRequest(settings=desired, expected_revision=current.revision))
    print(f"settings updated at revision {updated.revision}")
    return 0


# -- parser --------------------------------------------------------------------------------------------------

def add_commands(sub: Any) -> None:
    def group(name: str, help_text: str) -> Any:
        parser = sub.add_parser(name, help=help_text, description=help_text)
        return parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(actions: Any, name: str, run: Any, help_text: str, formats: bool = True) -> argparse.ArgumentParser:
        parser = actions.add_parser(name, help=help_text, description=help_text)
        parser.set_defaults(run=run)
        if formats:
            parser.add_argument("-o", "--output", choices=output.FORMATS, default="table")
        return parser

    access = group("access", "request a role on a cluster for a while; approve, deny and list requests")
    p = action(access, "request", cmd_access_request, "ask for ROLE on a cluster (as apctl's token's person)")
    p.add_argument("role")
    p.add_argument("--cluster", required=True)
    p.add_argument("--duration", type=output.duration_arg, required=True, help="e.g. 2h")
    p.add_argument("--reason", required=True)
    for name, run in (("approve", cmd_access_approve), ("deny", cmd_access_deny)):
        p = action(access, name, run, f"{name} a pending request (members of the approver group)")
        p.add_argument("id")
        p.add_argument("--reason", default="")
    p = action(access, "list", cmd_access_list, "list access requests")
    p.add_argument("--state", choices=("pending", "approved", "denied"), default="")
    p.add_argument("--user", default="")

    breakglass = group("breakglass", "emergency access under the break-glass policy")
    p = action(breakglass, "activate", cmd_breakglass_activate,
               "take the break-glass role on a cluster now, for a capped time; raises an alert")
    p.add_argument("--cluster", required=True)
    p.add_argument("--reason", required=True)
    p.add_argument("--duration", type=output.duration_arg, help="default: the policy's maximum")

    session = group("session", "console sessions (the portal's): create, touch, logout, list")
    p = action(session, "create", cmd_session_create, "start a console session for USER")
    p.add_argument("user")
    p = action(session, "touch", cmd_session_touch, "record activity in a session")
    p.add_argument("id")
    p = action(session, "logout", cmd_session_logout, "end a session and revoke its credentials fleet-wide",
               formats=False)
    p.add_argument("id")
    action(session, "list", cmd_session_list, "list sessions")

    settings = group("settings", "fleet-wide policy settings")
    action(settings, "get", cmd_settings_get, "print the settings (YAML unless -o json)")
    p = action(settings, "set", cmd_settings_set, "change settings: KEY=VALUE ..., e.g. break_glass_enabled=false "
                                                  "break_glass.clusters='{selector: {env: prod}}'", formats=False)
    p.add_argument("assignments", nargs="+", metavar="KEY=VALUE")
