"""A Redis outage with real processes: the gateways keep serving kubectl with the snapshot they
have and keep spooling audit; one restarted while Redis is down serves from its disk copy; when
Redis comes back empty (it keeps nothing on disk), every spooled audit event reaches the control
plane's store exactly once, and the next change made through the API applies on every gateway."""
from __future__ import annotations

import collections

from controlplane.api.v1 import audit_pb2, tokens_pb2
from dataplane import sandbox
from tests.e2e.topology import eventually, fleet

CONNECTED = "accesspoint_snapshot_feed_connected"


def token_user(topology, gateway, user: str, secret: str):
    """kubectl as `user` with a bearer token, through `gateway`."""
    path = topology.state.root / f"{user}-{gateway.name}.kubeconfig"
    sandbox.write_secret(path, sandbox.kubeconfig(f"{gateway.url}/clusters/sandbox",
                                                  topology.state.gateway_ca_cert.read_bytes(), user, token=secret,
                                                  context=user).encode())
    return topology.kubectl(path)


def test_a_redis_outage_loses_no_service_no_audit_and_no_later_snapshot(tmp_path):
    """Gateway 0 is restarted during the outage; gateway 1 runs through it."""
    with fleet(tmp_path, gateways=2) as topology:
        restarted, steady = topology.gateways
        alice = topology.kubectl(topology.state.kubeconfig)              # through gateway 0
        bob = topology.kubectl(topology.state.readonly_kubeconfig)       # through gateway 0
        erin = topology.kubectl(topology.kubeconfig("erin", ["devs"], steady))
        assert "web-0" in alice.ok("get", "pods") and "web-0" in erin.ok("get", "pods")
        revision = restarted.revision()
        assert steady.revision() == revision

        topology.redis.stop()
        for gateway in topology.gateways:
            eventually(lambda: gateway.metrics()[CONNECTED] == 0, f"gateway {gateway.name} noticing Redis is gone")
        spooled_before = len(topology.spooled_ids())
        assert "web-0" in alice.ok("get", "pods") and "web-0" in erin.ok("get", "pods")
        assert "web-0" in bob.ok("get", "pods")
        assert "Forbidden" in bob.fails("delete", "pod", "web-0")     # still decided by the snapshot it has
        assert len(topology.spooled_ids()) > spooled_before           # and still audited, on disk

        restarted.stop()
        restarted.start()          # ready without Redis: it started from its disk copy
        assert restarted.revision() == revision and restarted.metrics()[CONNECTED] == 0
        assert "web-0" in alice.ok("get", "pods")
        assert "Forbidden" in bob.fails("delete", "pod", "web-0")

        topology.redis.start()     # empty again
        client = topology.client()
        try:
            # The next change: a token neither gateway has seen works once its snapshot applies.
            issued = client.call(client.tokens.IssueToken, tokens_pb2.IssueTokenRequest(
                user="dave", groups=list(sandbox.READONLY_GROUPS), description="after the outage"))
            for gateway in topology.gateways:
                eventually(lambda: gateway.revision() >= issued.token.revision,
                           f"gateway {gateway.name} applying revision {issued.token.revision}")
                assert "web-0" in token_user(topology, gateway, "dave", issued.secret).ok("get", "pods")
                assert gateway.metrics()[CONNECTED] == 1

            # Every event spooled before, during and after the outage, in the store once each.
            def spooled_and_stored() -> tuple[list[str], list[str]] | None:
                spooled = topology.spooled_ids()
                events = client.call(client.audit.QueryAudit, audit_pb2.QueryAuditRequest(limit=10000)).events
                stored = [event.id for event in events]
                return (spooled, stored) if len(stored) >= len(spooled) else None
            spooled, stored = eventually(spooled_and_stored, "every spooled audit event in the control plane's store")
        finally:
            client.close()
        assert len(spooled) == len(set(spooled)) > 10
        assert [id for id, count in collections.Counter(stored).items() if count > 1] == []   # none twice
        assert sorted(stored) == sorted(spooled)                                                # none lost
