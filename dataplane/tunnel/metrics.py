"""Tunnel metrics: the gateway's (registered on the worker's /metrics registry) and the agent's
(its own --metrics-listen). Labels are cluster names the snapshot knows and fixed reason words,
never a name an agent chose (a refused greeting's cluster is audited, not labelled)."""
from __future__ import annotations

from ..metrics import Counter, Gauge, Histogram, Registry

# PINGs over loopback answer in tens of µs; over a WAN in tens to hundreds of ms
RTT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
               1.0, 2.5, 5.0)


class GatewayTunnelMetrics:
    def __init__(self, registry: Registry, registry_of_tunnels):
        add = registry.register
        self.tunnels: Gauge = add(Gauge(
            "accesspoint_tunnels", "Agent tunnels connected to this worker, by cluster.", ("cluster",)))
        self.streams: Gauge = add(Gauge(
            "accesspoint_tunnel_streams", "Streams open on this worker's tunnels, by cluster "
            "(divide by accesspoint_tunnels for streams per tunnel).", ("cluster",)))
        self.streams_total: Counter = add(Counter(
            "accesspoint_tunnel_streams_total", "Streams opened on tunnels, by cluster.", ("cluster",)))
        self.rtt_seconds: Histogram = add(Histogram(
            "accesspoint_tunnel_rtt_seconds", "Round-trip time of keep-alive PINGs on tunnels, by cluster.",
            ("cluster",), buckets=RTT_BUCKETS))
        self.accepted_total: Counter = add(Counter(
            "accesspoint_tunnel_accepted_total", "Tunnels accepted, by cluster.", ("cluster",)))
        self.refused_total: Counter = add(Counter(
            "accesspoint_tunnel_refused_total", "Tunnels refused, by reason (alpn, greeting, timeout, "
            "no_snapshot, not_tunnel_cluster, not_allowed).", ("reason",)))
        self.closed_total: Counter = add(Counter(
            "accesspoint_tunnel_closed_total", "Tunnels that ended (the agent reconnects), by cluster.",
            ("cluster",)))
        self._registry = registry_of_tunnels

    def cluster_seen(self, cluster: str) -> None:
        """Start reporting `cluster`'s gauges (computed at scrape time)."""
        child = self.streams.labels(cluster=cluster)
        registry = self._registry
        child.set_function(lambda: sum(len(c.streams) for c in registry.tunnels(cluster)))
        self.tunnels.labels(cluster=cluster).set_function(lambda: len(registry.tunnels(cluster)))


class AgentMetrics:
    def __init__(self) -> None:
        self.registry = Registry()
        add = self.registry.register
        self.tunnels: Gauge = add(Gauge(
            "accesspoint_agent_tunnels", "Tunnels held (one per gateway worker process)."))
        self.gateway_workers: Gauge = add(Gauge(
            "accesspoint_agent_gateway_workers", "Gateway worker processes known from the member list."))
        self.dials_total: Counter = add(Counter(
            "accesspoint_agent_dials_total", "Tunnel dials, by result (accepted, duplicate, refused, failed).",
            ("result",)))
        self.reconnects_total: Counter = add(Counter(
            "accesspoint_agent_reconnects_total", "Held tunnels lost, by cause (closed, drained).", ("cause",)))
        self.rtt_seconds: Histogram = add(Histogram(
            "accesspoint_agent_tunnel_rtt_seconds", "Round-trip time of keep-alive PINGs on the tunnels.",
            buckets=RTT_BUCKETS))
        self.streams: Gauge = add(Gauge(
            "accesspoint_agent_streams", "Streams (callers' requests) open on the tunnels."))
        self.streams_total: Counter = add(Counter(
            "accesspoint_agent_streams_total", "Streams opened by the gateways on the tunnels."))

    def render(self) -> bytes:
        return self.registry.render()
