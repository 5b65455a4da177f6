"""apctl's commands, thin over the API stubs. Every failure is one line on stderr and an exit
code: 2 for bad usage or input (INVALID_ARGUMENT included), 1 for anything else."""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from ..api.v1 import (audit_pb2, bindings_pb2, clusters_pb2, fleet_pb2, kubeconfigs_pb2, revocations_pb2, roles_pb2,
                      tokens_pb2)
from ..errors import InvalidArgument
from . import agents, manifests, output, policy
from .connection import Client, UsageError, load_settings

EXIT_FAILURE, EXIT_USAGE = 1, 2
WAIT_MARGIN = 5.0         # seconds a wait call may outlast its timeout: the server answers DEADLINE_EXCEEDED
REVOKE_KINDS = {"user": "user", "group": "group", "cert": "cert_serial", "token": "token", "session": "session"}


def _read_manifest(path: str) -> list[tuple[manifests.Kind, Any]]:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read ({exc.__class__.__name__})") from None
    return manifests.load(text, path)


def _error_line(exc: grpc.RpcError) -> str:
    details = " ".join((exc.details() or "").split())   # one line, whatever the server sent
    return f"{exc.code().name}: {details}"


def _exit_code(exc: grpc.RpcError) -> int:
    return EXIT_USAGE if exc.code() == grpc.StatusCode.INVALID_ARGUMENT else EXIT_FAILURE


# -- apply / delete -------------------------------------------------------------------------------------

def cmd_apply(client: Client, ns: argparse.Namespace) -> int:
    worst = 0
    for kind, message in _read_manifest(ns.filename):
        try:
            print(f"{kind.noun}/{message.name} {manifests.apply_one(client, kind, message)}")
        except grpc.RpcError as exc:   # go on with the rest, as kubectl does
            print(f"apctl: {kind.noun}/{message.name}: {_error_line(exc)}", file=sys.stderr)
            worst = max(worst, _exit_code(exc))
    return worst


def cmd_delete(client: Client, ns: argparse.Namespace) -> int:
    if ns.filename:
        if ns.kind or ns.name:
            raise UsageError("delete takes -f FILE or KIND NAME, not both")
        targets = [(kind, message.name) for kind, message in reversed(_read_manifest(ns.filename))]
    else:
        kind = manifests.BY_NOUN.get(ns.kind or "")
        if kind is None or not ns.name:
            raise UsageError(f"delete takes -f FILE or KIND NAME (KIND: {', '.join(k.noun for k in manifests.KINDS)})")
        targets = [(kind, ns.name)]
    worst = 0
    for kind, name in targets:
        try:
            kind.delete(client, name)
            print(f"{kind.noun}/{name} deleted")
        except grpc.RpcError as exc:
            print(f"apctl: {kind.noun}/{name}: {_error_line(exc)}", file=sys.stderr)
            worst = max(worst, _exit_code(exc))
    return worst


# -- get ------------------------------------------------------------------------------------------------

def _get_clusters(client: Client, name: str) -> tuple[list, list[str], Callable]:
    items = ([client.call(client.clusters.GetCluster, clusters_pb2.GetClusterRequest(name=name))] if name else
             list(client.call(client.clusters.ListClusters, clusters_pb2.ListClustersRequest()).clusters))
    # a tunnel cluster's AGENTS: connected (the gateways' heartbeats) / enrolled (live certificates)
    live = agents.live_agents(client) if any(c.tunnel for c in items) else {}
    return items, ["NAME", "ENDPOINT", "LABELS", "TUNNEL", "AGENTS", "TUNNELS", "LAST SEEN", "REVISION"], \
        lambda c: [c.name, c.endpoint or "<none>", output.labels_text(dict(c.labels)), "yes" if c.tunnel else "no",
                   *(agents.connectivity_cells(c, live.get(c.name, 0)) if c.tunnel else ["-", "-", "-"]), c.revision]


def _get_roles(client: Client, name: str) -> tuple[list, list[str], Callable]:
    items = ([client.call(client.roles.GetRole, roles_pb2.GetRoleRequest(name=name))] if name else
             list(client.call(client.roles.ListRoles, roles_pb2.ListRolesRequest()).roles))
    return items, ["NAME", "RULES", "REVISION"], lambda r: [r.name, len(r.rules), r.revision]


def _get_bindings(client: Client, name: str) -> tuple[list, list[str], Callable]:
    items = ([client.call(client.bindings.GetBinding, bindings_pb2.GetBindingRequest(name=name))] if name else
             list(client.call(client.bindings.ListBindings, bindings_pb2.ListBindingsRequest()).bindings))

    def clusters(b: bindings_pb2.Binding) -> str:
        expressions = (f"{e.key} {e.operator}" + (f" ({'|'.join(e.values)})" if e.values else "")
                       for e in b.clusters.match_expressions)
        return output.joined([*b.clusters.names, *(f"{k}={v}" for k, v in sorted(b.clusters.selector.items())),
                              *expressions])

    def grant(b: bindings_pb2.Binding) -> str:
        return "binding" if b.grant.kind == "binding" else f"{b.grant.kind}:{b.grant.id}"

    return items, ["NAME", "ROLE", "SUBJECTS", "CLUSTERS", "EFFECT", "UNTIL", "GRANT", "REVISION"], \
        lambda b: [b.name, b.role, output.joined(f"{s.kind}:{s.name}" for s in b.subjects), clusters(b), b.effect,
                   output.timestamp_text(b.valid_until), grant(b), b.revision]


def _get_tokens(client: Client, name: str) -> tuple[list, list[str], Callable]:
    items = [t for t in client.call(client.tokens.ListTokens, tokens_pb2.ListTokensRequest()).tokens
             if not name or t.id == name]
    return items, ["ID", "USER", "GROUPS", "SERVICE", "REVOKED", "REVISION"], \
        lambda t: [t.id, t.user, output.joined(t.groups), t.service or "<none>", str(t.revoked).lower(), t.revision]


def _get_revocations(client: Client, name: str) -> tuple[list, list[str], Callable]:
    listed = client.call(client.revocations.ListRevocations, revocations_pb2.ListRevocationsRequest()).revocations
    items = [r for r in listed if not name or r.value == name]
    return items, ["KIND", "VALUE", "REASON", "REVISION"], lambda r: [r.kind, r.value, r.reason or "<none>", r.revision]


def _get_certificates(client: Client, name: str) -> tuple[list, list[str], Callable]:
    items = [c for c in client.call(client.kubeconfigs.ListCertificates,
                                    kubeconfigs_pb2.ListCertificatesRequest()).certificates
             if not name or c.serial == name]
    return items, ["SERIAL", "USER", "GROUPS", "CLUSTER", "EXPIRES", "REVOKED"], \
        lambda c: [c.serial, c.user, output.joined(c.groups), c.cluster, output.timestamp_text(c.expires_at),
                   str(c.revoked).lower()]


def _get_gateways(client: Client, name: str) -> tuple[list, list[str], Callable]:
    status = client.call(client.fleet.GetFleetStatus, fleet_pb2.GetFleetStatusRequest())
    items = [g for g in status.gateways if not name or g.id == name]
    return items, ["ID", "HOSTNAME", "REVISION", "APPLIED", "HEARTBEAT", "UP", "VERSION"], \
        lambda g: [g.id, g.hostname, g.revision, output.age(g.applied_at), output.age(g.heartbeat_at),
                   output.age(g.started_at), g.version]


# resource (and its singular) → (lister, the manifest kind for -o json|yaml)
RESOURCES: dict[str, tuple[Callable, str]] = {
    "clusters": (_get_clusters, "Cluster"), "roles": (_get_roles, "Role"), "bindings": (_get_bindings, "Binding"),
    "tokens": (_get_tokens, "Token"), "revocations": (_get_revocations, "Revocation"),
    "certificates": (_get_certificates, "Certificate"), "gateways": (_get_gateways, "Gateway"),
    "agents": (agents.get_agents, "AgentCertificate"), "refusals": (agents.get_refusals, "Refusal"),
}
# Their NAME argument is a cluster whose items to list, not the name of one item.
BY_CLUSTER = ("agents", "refusals")


def cmd_get(client: Client, ns: argparse.Namespace) -> int:
    resource = ns.resource if ns.resource in RESOURCES else ns.resource + "s"
    if resource not in RESOURCES:
        raise UsageError(f"unknown resource {ns.resource!r}: one of {', '.join(RESOURCES)}")
    lister, kind = RESOURCES[resource]
    items, headers, row = lister(client, ns.name or "")
    if ns.name and not items and resource not in BY_CLUSTER:
        print(f"apctl: NOT_FOUND: {resource[:-1]} {ns.name!r} does not exist", file=sys.stderr)
        return EXIT_FAILURE
    if ns.output == "table":
        output.print_table(headers, [row(item) for item in items], resource)
    elif ns.name and resource not in BY_CLUSTER:
        output.print_document(output.to_dict(items[0], kind), ns.output)
    else:
        output.print_list([output.to_dict(item, kind) for item in items], ns.output)
    return 0


# -- revoke, kubeconfig, audit ----------------------------------------------------------------------------

def cmd_revoke(client: Client, ns: argparse.Namespace) -> int:
    revoked = client.call(client.revocations.Revoke, revocations_pb2.RevokeRequest(
        kind=REVOKE_KINDS[ns.kind], value=ns.name, reason=ns.reason))
    what = f'{ns.kind} "{revoked.value}"'
    if not ns.wait:
        print(f"revoked {what} at revision {revoked.revision}")
        return 0
    # Measured here, from the revocation's answer to the last gateway's apply, on one clock.
    started = time.monotonic()
    try:
        applied = client.call(client.fleet.WaitForRevision,
                              fleet_pb2.WaitForRevisionRequest(revision=revoked.revision,
                                                               timeout=output.proto_duration(ns.timeout)),
                              timeout=ns.timeout.total_seconds() + WAIT_MARGIN)
    except grpc.RpcError as exc:
        print(f"apctl: revoked {what} at revision {revoked.revision}, but {_error_line(exc)}", file=sys.stderr)
        return EXIT_FAILURE
    elapsed_ms = (time.monotonic() - started) * 1000
    count = len(applied.gateways)
    print(f"revoked {what}; applied by {count} gateway{'' if count == 1 else 's'} in {elapsed_ms:.0f} ms")
    return 0


def cmd_kubeconfig(client: Client, ns: argparse.Namespace) -> int:
    request = kubeconfigs_pb2.IssueKubeconfigRequest(user=ns.user, groups=ns.group, cluster=ns.cluster,
                                                     session=ns.session)
    if ns.ttl is not None:
        request.ttl.CopyFrom(output.proto_duration(ns.ttl))
    issued = client.call(client.kubeconfigs.IssueKubeconfig, request)
    sys.stdout.write(issued.kubeconfig)   # holds the private key: stdout only, for the caller's file
    cert = issued.certificate
    print(f'certificate {cert.serial} for "{cert.user}" expires {output.timestamp_text(cert.expires_at)}',
          file=sys.stderr)
    return 0


def _since(text: str) -> Timestamp:
    """`--since 1h` (that long ago) or an RFC 3339 time."""
    stamp = Timestamp()
    try:
        stamp.FromDatetime(datetime.datetime.now(datetime.timezone.utc) - output.parse_duration(text))
    except ValueError:
        try:
            stamp.FromJsonString(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is neither a duration (1h) nor an RFC 3339 time") from None
    return stamp


def cmd_audit(client: Client, ns: argparse.Namespace) -> int:
    request = audit_pb2.QueryAuditRequest(user=ns.user, cluster=ns.cluster, verb=ns.verb, decision=ns.decision,
                                          limit=ns.limit)
    for field in ("since", "until"):
        if getattr(ns, field) is not None:
            getattr(request, field).CopyFrom(getattr(ns, field))
    events = client.call(client.audit.QueryAudit, request).events
    if ns.output != "table":
        output.print_list([json.loads(e.json) for e in events], ns.output)
        return 0

    def resource(e: audit_pb2.AuditEvent) -> str:
        data = json.loads(e.json)
        parts = [data.get("namespace"), "/".join(filter(None, [data.get("resource"), data.get("subresource")])),
                 data.get("name")]
        return "/".join(p for p in parts if p) or data.get("path") or "<none>"

    output.print_table(["TIME", "USER", "CLUSTER", "VERB", "RESOURCE", "DECISION", "CODE"],
                       [[e.time.ToJsonString(), e.user or "<none>", e.cluster or "<none>", e.verb or "<none>",
                         resource(e), e.decision, e.code] for e in events], "audit events")
    return 0


# -- parser and entry point ---------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="apctl", description="AccessPoint control-plane CLI")
    parser.add_argument("--config", help="settings file (YAML: address, token or token_file, ca); "
                                         "env APCTL_CONFIG")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, run: Callable[[Client, argparse.Namespace], int], help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(run=run)
        return p

    def output_flag(p: argparse.ArgumentParser) -> None:
        p.add_argument("-o", "--output", choices=output.FORMATS, default="table")

    p = command("apply", cmd_apply, "create or update the clusters, roles and bindings of a YAML file")
    p.add_argument("-f", "--filename", required=True, help="manifest file, - for stdin")
    p = command("delete", cmd_delete, "delete objects by KIND NAME or every object of a file")
    p.add_argument("kind", nargs="?", help="cluster, role or binding")
    p.add_argument("name", nargs="?")
    p.add_argument("-f", "--filename")
    p = command("get", cmd_get, "list objects as a table, JSON or YAML")
    p.add_argument("resource", metavar="RESOURCE", help=", ".join(RESOURCES))
    p.add_argument("name", nargs="?")
    output_flag(p)
    p = command("revoke", cmd_revoke, "revoke a user, group, certificate serial, token id or session")
    p.add_argument("kind", choices=REVOKE_KINDS)
    p.add_argument("name", metavar="NAME", help="user or group name, certificate serial (hex), token id, session id")
    p.add_argument("--reason", default="")
    p.add_argument("--wait", action="store_true", help="return when every live gateway applied the revocation")
    p.add_argument("--timeout", type=output.duration_arg, default=datetime.timedelta(seconds=30), help="for --wait (30s)")
    p = command("kubeconfig", cmd_kubeconfig, "issue a short-lived client-certificate kubeconfig (to stdout)")
    p.add_argument("user")
    p.add_argument("--cluster", required=True)
    p.add_argument("--group", action="append", default=[], help="repeat for several groups")
    p.add_argument("--ttl", type=output.duration_arg, help="certificate lifetime, e.g. 8h (default: the control plane's)")
    p.add_argument("--session", default="", help="honour it only while this console session of the user is active")
    p = command("audit", cmd_audit, "query the gateways' audit events, newest first")
    for name in ("user", "cluster", "verb"):
        p.add_argument(f"--{name}", default="")
    p.add_argument("--decision", choices=("allow", "deny", "error"), default="")
    p.add_argument("--since", type=_since, help="a duration back from now (1h) or an RFC 3339 time")
    p.add_argument("--until", type=_since)
    p.add_argument("--limit", type=int, default=100)
    output_flag(p)
    policy.add_commands(sub)
    agents.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)   # usage errors exit 2 here
    client = None
    try:
        client = Client(load_settings(ns.config))
        return ns.run(client, ns)
    except (UsageError, InvalidArgument) as exc:   # InvalidArgument: a manifest value the conversion refuses
        print(f"apctl: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except grpc.RpcError as exc:
        print(f"apctl: {_error_line(exc)}", file=sys.stderr)
        return _exit_code(exc)
    except KeyboardInterrupt:
        return 130
    finally:
        if client is not None:
            client.close()
