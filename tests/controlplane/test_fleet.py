"""Fleet status: the heartbeat contract written by dataplane/heartbeat.py and read by
controlplane/fleet.py, and waiting until every live gateway runs a revision."""
from __future__ import annotations

import json
import threading
import time

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from controlplane.api.v1 import clusters_pb2, clusters_pb2_grpc, fleet_pb2, fleet_pb2_grpc
from controlplane.errors import DeadlineExceeded
from controlplane.fleet import Fleet
from dataplane.heartbeat import APPLIED_CHANNEL, GATEWAY_KEY_PREFIX, HEARTBEAT_TTL, Heartbeat

from .planes import ADMIN, READER, FakeGateway, next_message, subscribe
from .test_api import a_cluster


@pytest.fixture
def heartbeats(redis_client):
    started: list[Heartbeat] = []

    def make(gateway_id: str, revision: int | None = None) -> Heartbeat:
        heartbeat = Heartbeat(redis_client, gateway_id, version="test")
        if revision is not None:
            heartbeat.applied(revision)
        heartbeat.beat()
        started.append(heartbeat)
        return heartbeat

    yield make
    for heartbeat in started:
        heartbeat.stop()


def test_the_heartbeat_contract(redis_client):
    notices = subscribe(redis_client, APPLIED_CHANNEL)
    heartbeat = Heartbeat(redis_client, "gw-a", version="1.2.3")
    heartbeat.beat()
    key = GATEWAY_KEY_PREFIX + "gw-a"
    first = json.loads(redis_client.get(key))
    assert set(first) == {"id", "hostname", "pid", "version", "revision", "applied_at", "started_at", "heartbeat_at"}
    assert (first["id"], first["version"], first["revision"], first["applied_at"]) == ("gw-a", "1.2.3", -1, None)
    assert 0 < redis_client.ttl(key) <= HEARTBEAT_TTL
    assert notices.get_message(timeout=0.1) is None   # a beat without a new revision announces nothing

    heartbeat.start()
    heartbeat.applied(7)   # the thread writes and announces at once
    assert next_message(notices) == b"gw-a 7"
    assert json.loads(redis_client.get(key))["revision"] == 7   # the key before the notice
    heartbeat.stop()
    assert redis_client.exists(key) == 0   # a clean stop leaves the fleet at once
    notices.close()
    with pytest.raises(ValueError):
        Heartbeat(redis_client, "has space")


def test_fleet_lists_live_gateways(redis_client, heartbeats):
    heartbeats("gw-b", 3)
    heartbeats("gw-a", 4)
    redis_client.set(GATEWAY_KEY_PREFIX + "broken", b"not json", ex=5)
    gateways = Fleet(redis_client).gateways()
    assert [(g.id, g.revision, g.version) for g in gateways] == [("gw-a", 4, "test"), ("gw-b", 3, "test")]
    assert gateways[0].applied_at.endswith("Z") and gateways[0].heartbeat_at >= gateways[0].started_at


def test_wait_returns_when_all_applied_or_names_the_laggards(redis_client, heartbeats):
    fast = heartbeats("gw-fast", 5)
    slow = heartbeats("gw-slow", 4)
    fleet = Fleet(redis_client, poll_interval=30)   # only a notice can end the wait early
    assert [g.id for g in fleet.wait_for(4, timeout=1).gateways] == ["gw-fast", "gw-slow"]

    with pytest.raises(DeadlineExceeded) as caught:
        fleet.wait_for(5, timeout=0.3)
    assert str(caught.value) == ("revision 5 not applied within 0.3 s by 1 of 2 live gateways: gw-slow (at 4)")

    slow.start()
    done: list = []
    waiter = threading.Thread(target=lambda: done.append(fleet.wait_for(5, timeout=10)))
    waiter.start()
    slow.applied(5)
    waiter.join()
    assert done[0].waited < 5 and {g.revision for g in done[0].gateways} == {5}
    assert fast.gateway_id in {g.id for g in done[0].gateways}


def test_a_gateway_that_dies_while_waited_for_drops_out(redis_client, heartbeats):
    heartbeats("gw-live", 2)
    heartbeats("gw-dying", 1)
    fleet = Fleet(redis_client, poll_interval=0.05)   # the key's expiry sends no notice: polling sees it
    done: list = []
    waiter = threading.Thread(target=lambda: done.append(fleet.wait_for(2, timeout=10)))
    waiter.start()
    redis_client.delete(GATEWAY_KEY_PREFIX + "gw-dying")   # as its TTL would
    waiter.join()
    assert [g.id for g in done[0].gateways] == ["gw-live"]


def _duration(seconds: float) -> Duration:
    duration = Duration()
    duration.FromNanoseconds(int(seconds * 1e9))
    return duration


def test_fleet_api(channel, plane, redis_url, heartbeats):
    fleet = fleet_pb2_grpc.FleetServiceStub(channel)
    registered = clusters_pb2_grpc.ClusterServiceStub(channel).RegisterCluster(
        clusters_pb2.RegisterClusterRequest(cluster=a_cluster()), metadata=ADMIN)
    heartbeats("gw-lagging", 0)
    with FakeGateway(redis_url, "gw-following"):
        status = fleet.GetFleetStatus(fleet_pb2.GetFleetStatusRequest(), metadata=READER)   # read-only may look
        assert status.store_revision == status.published_revision == registered.revision
        assert [g.id for g in status.gateways] == ["gw-following", "gw-lagging"]

        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as caught:
            fleet.WaitForRevision(fleet_pb2.WaitForRevisionRequest(revision=registered.revision,
                                                                   timeout=_duration(0.3)), metadata=READER)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert caught.value.details().endswith("by 1 of 2 live gateways: gw-lagging (at 0)")
        assert time.monotonic() - started < 5

        with pytest.raises(grpc.RpcError) as caught:
            fleet.WaitForRevision(fleet_pb2.WaitForRevisionRequest(revision=registered.revision + 1), metadata=READER)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.details() == f"revision: must be 0-{registered.revision} (the store's revision)"


def test_tunnel_cluster_connectivity_from_heartbeats(channel, plane, heartbeats):
    clusters = clusters_pb2_grpc.ClusterServiceStub(channel)
    for name in ("edge", "quiet", "gone"):
        clusters.RegisterCluster(clusters_pb2.RegisterClusterRequest(
            cluster=clusters_pb2.Cluster(name=name, tunnel=True)), metadata=ADMIN)
    clusters.RegisterCluster(clusters_pb2.RegisterClusterRequest(cluster=a_cluster("direct")), metadata=ADMIN)

    def worker(gateway_id: str, replica: str, tunnels: dict, lost_at: dict) -> None:
        heartbeat = heartbeats(gateway_id)
        heartbeat.extra = lambda: {"tunnel": {"gateway": replica, "worker": 0, "workers": 2, "address": None,
                                              "clusters": tunnels, "lost_at": lost_at}}
        heartbeat.beat()

    # two agents of "edge": both on each worker of gw-a, one on gw-b (its other tunnel is lost)
    worker("gw-a-0", "gw-a", {"edge": 2}, {"gone": "2030-01-01T00:00:01.000Z"})
    worker("gw-a-1", "gw-a", {"edge": 2}, {"gone": "2030-01-01T00:00:03.000Z"})
    worker("gw-b-0", "gw-b", {"edge": 1}, {})
    listed = {c.name: c for c in clusters.ListClusters(clusters_pb2.ListClustersRequest(), metadata=READER).clusters}
    edge = listed["edge"].connectivity
    assert (edge.agents, edge.tunnels, edge.gateways) == (2, 5, 2)
    assert edge.last_seen.ToDatetime().year >= 2024           # the newest heartbeat that reported it
    gone = listed["gone"].connectivity                          # no tunnel now: when the last one closed
    assert (gone.agents, gone.tunnels, gone.gateways, gone.last_seen.ToJsonString()) == (
        0, 0, 0, "2030-01-01T00:00:03Z")
    quiet = listed["quiet"]
    assert quiet.HasField("connectivity") and not quiet.connectivity.HasField("last_seen")
    assert not listed["direct"].HasField("connectivity")
    one = clusters.GetCluster(clusters_pb2.GetClusterRequest(name="edge"), metadata=READER)
    assert one.connectivity == edge
