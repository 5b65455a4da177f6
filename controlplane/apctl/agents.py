"""apctl's tunnel-cluster commands: `cluster register NAME --tunnel` and `cluster bootstrap NAME`
(each prints a one-time bootstrap token), and the `get agents|refusals` listers.

A bootstrap token goes to stdout alone, everything else to stderr, so that
`apctl cluster register edge-1 --tunnel > token` keeps just the secret.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Callable


from ..api.v1 import agents_pb2, clusters_pb2
from . import output
from .connection import Client, UsageError


def _labels(pairs: list[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--label {pair!r}: expected KEY=VALUE")
        labels[key] = value
    return labels


def _show_token(token: agents_pb2.BootstrapToken) -> None:
    print(f"bootstrap token {token.id} of cluster {token.cluster} expires {output.timestamp_text(token.expires_at)}; "
          "it is shown once and works once: give it to the agent (--bootstrap-token-file)", file=sys.stderr)
    print(token.secret)


def cmd_cluster_register(client: Client, ns: argparse.Namespace) -> int:
    if not ns.tunnel:
        raise UsageError("cluster register takes --tunnel (a cluster the gateways reach directly needs an endpoint "
                         "and a credential: apctl apply -f)")
    request = clusters_pb2.RegisterClusterRequest(
        cluster=clusters_pb2.Cluster(name=ns.name, tunnel=True, labels=_labels(ns.label)))
    if ns.bootstrap_ttl is not None:
        request.bootstrap_ttl.CopyFrom(output.proto_duration(ns.bootstrap_ttl))
    registered = client.call(client.clusters.RegisterCluster, request)
    print(f"cluster/{registered.name} registered (tunnel) at revision {registered.revision}", file=sys.stderr)
    _show_token(registered.bootstrap)
    return 0


def cmd_cluster_bootstrap(client: Client, ns: argparse.Namespace) -> int:
    request = agents_pb2.IssueBootstrapTokenRequest(cluster=ns.name)
    if ns.ttl is not None:
        request.ttl.CopyFrom(output.proto_duration(ns.ttl))
    _show_token(client.call(client.agents.IssueBootstrapToken, request))
    return 0


def live_agents(client: Client) -> dict[str, int]:
    """Cluster name → its live agent certificates."""
    counts: dict[str, int] = {}
    listed = client.call(client.agents.ListAgentCertificates, agents_pb2.ListAgentCertificatesRequest())
    for certificate in listed.certificates:
        if certificate.live:
            counts[certificate.cluster] = counts.get(certificate.cluster, 0) + 1
    return counts


def connectivity_cells(cluster: clusters_pb2.Cluster, enrolled: int) -> list[str]:
    """AGENTS (connected/enrolled), TUNNELS and LAST SEEN of a tunnel cluster; `?` when the
    control plane could not read the fleet."""
    if not cluster.HasField("connectivity"):
        return [f"?/{enrolled}", "?", "?"]
    seen = cluster.connectivity
    return [f"{seen.agents}/{enrolled}", str(seen.tunnels), output.age(seen.last_seen)]


def _state(c: agents_pb2.AgentCertificate) -> str:
    if c.live:
        return "live"
    return "revoked" if c.revoked else "retired" if c.retired else "expired"


def get_agents(client: Client, name: str) -> tuple[list, list[str], Callable]:
    """`get agents [CLUSTER]`: the agent certificates, of one cluster or all."""
    listed = client.call(client.agents.ListAgentCertificates, agents_pb2.ListAgentCertificatesRequest(cluster=name))
    return list(listed.certificates), ["SERIAL", "CLUSTER", "NAME", "EXPIRES", "STATE", "ENROLLED BY"], \
        lambda c: [c.serial, c.cluster, c.common_name, output.timestamp_text(c.expires_at), _state(c), c.enrolled_by]


def get_refusals(client: Client, name: str) -> tuple[list, list[str], Callable]:
    """`get refusals [CLUSTER]`: refused enrollments and renewals, newest first."""
    listed = client.call(client.agents.ListRefusals, agents_pb2.ListRefusalsRequest(cluster=name))
    return list(listed.refusals), ["TIME", "ACTION", "CLUSTER", "SUBJECT", "PEER", "REASON"], \
        lambda r: [r.at.ToJsonString(), r.action, r.cluster or "<none>", r.subject, r.peer or "<none>", r.reason]


def add_commands(sub: Any) -> None:
    parser = sub.add_parser("cluster", help="register tunnel clusters and issue their agents' bootstrap tokens",
                            description="register tunnel clusters and issue their agents' bootstrap tokens")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = actions.add_parser("register", help="register a tunnel cluster; prints its agent's one-time bootstrap token")
    p.set_defaults(run=cmd_cluster_register)
    p.add_argument("name")
    p.add_argument("--tunnel", action="store_true", help="reached through its agent's reverse tunnel")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="repeat for several labels")
    p.add_argument("--bootstrap-ttl", type=output.duration_arg,
                   help="the token's lifetime, e.g. 30m (default: the control plane's, 1h unless configured)")
    p = actions.add_parser("bootstrap", help="issue another one-time bootstrap token for a tunnel cluster's agent")
    p.set_defaults(run=cmd_cluster_bootstrap)
    p.add_argument("name")
    p.add_argument("--ttl", type=output.duration_arg, help="the token's lifetime (default: the control plane's)")
