"""Which protocol kubectl really spoke: the audit event records it per request."""
from __future__ import annotations

from dataplane.audit import read_events


def _last(stack, **match) -> dict:
    events = [e for e in read_events(stack.state.audit_spool)
              if all(e.get(k) == v for k, v in match.items())]
    assert events, f"no audit event matching {match}"
    return events[-1]


def test_ordinary_requests_use_the_offered_protocol(admin, readonly, stack):
    admin.ok("get", "pods")
    readonly.ok("get", "pods")
    assert _last(stack, user="alice", verb="list", resource="pods")["protocol"] == stack.protocol
    assert _last(stack, user="bob", verb="list", resource="pods")["protocol"] == stack.protocol


def test_upgrades_always_arrive_over_http1(admin, stack):
    admin.ok("exec", "web-0", "-c", "app", "--", "echo", "hi")
    event = _last(stack, user="alice", subresource="exec")
    assert event["protocol"] == "http/1.1" and event["code"] == 101


def test_the_gateway_speaks_the_clusters_protocol_upstream(admin, fake_cluster, stack):
    admin.ok("get", "configmaps")
    admin.ok("exec", "web-0", "-c", "app", "--", "echo", "hi")     # upgrades: HTTP/1.1 upstream too
    assert fake_cluster.alpn_counts["http/1.1"] >= 1
    if stack.protocol == "h2":
        assert fake_cluster.alpn_counts["h2"] >= 1
    else:
        assert fake_cluster.alpn_counts["h2"] == 0
