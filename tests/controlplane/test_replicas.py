"""High availability with real processes: two control-plane replicas on one fresh PostgreSQL
database take concurrent read-modify-write calls through the gRPC API; revisions stay strictly
increasing and gap-free, no update is lost, and both gateway processes converge on the final
revision, as fleet status, WaitForRevision and their own admin endpoints all say."""
from __future__ import annotations

import threading

import grpc
import redis
from google.protobuf.duration_pb2 import Duration

from controlplane.api.v1 import clusters_pb2, fleet_pb2, roles_pb2
from controlplane.snapshots import SNAPSHOT_KEY
from controlplane.store import open_store
from dataplane.signing import load_public_key
from dataplane.snapshot import verify_snapshot
from tests.e2e.topology import eventually, fleet

THREADS_PER_REPLICA = 3
STEPS = 4


def append_rule(client, worker: str, step: int) -> int:
    """Read the shared role, add one rule, write it back unless someone wrote first (then again)."""
    while True:
        role = client.call(client.roles.GetRole, roles_pb2.GetRoleRequest(name="shared"))
        role.rules.append(roles_pb2.Rule(verbs=["get"], api_groups=[""], resources=[f"{worker}-{step}"]))
        try:
            return client.call(client.roles.UpdateRole,
                               roles_pb2.UpdateRoleRequest(role=role, expected_revision=role.revision)).revision
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.FAILED_PRECONDITION:
                raise


def test_two_replicas_take_concurrent_writes_and_every_gateway_converges(tmp_path, postgres_fresh):
    with fleet(tmp_path, gateways=2, replicas=2, store=postgres_fresh, with_cluster=False) as topology:
        clients = [topology.client(0), topology.client(1)]
        try:
            start = clients[1].call(clients[1].roles.CreateRole, roles_pb2.CreateRoleRequest(role=roles_pb2.Role(
                name="shared", rules=[roles_pb2.Rule(verbs=["list"], api_groups=[""], resources=["pods"])])))
            revisions: dict[str, list[int]] = {}
            errors: list[BaseException] = []

            def writer(client, worker: str) -> None:
                mine = revisions.setdefault(worker, [])
                try:
                    for step in range(STEPS):
                        mine.append(append_rule(client, worker, step))
                        cluster = clusters_pb2.Cluster(
                            name=f"{worker}-{step}", endpoint="https://127.0.0.1:6443",
                            credential=clusters_pb2.Credential(kind="token", ref="file:sandbox.token"))
                        mine.append(client.call(client.clusters.RegisterCluster,
                                                clusters_pb2.RegisterClusterRequest(cluster=cluster)).revision)
                except BaseException as exc:   # reported in the test's thread
                    errors.append(exc)

            threads = [threading.Thread(target=writer, args=(client, f"r{replica}w{index}"))
                       for replica, client in enumerate(clients) for index in range(THREADS_PER_REPLICA)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=120)
            assert errors == [] and not any(thread.is_alive() for thread in threads)

            writes = len(threads) * STEPS * 2
            final = start.revision + writes
            for mine in revisions.values():
                assert mine == sorted(set(mine))                 # strictly increasing for each writer
            assert sorted(r for mine in revisions.values() for r in mine) == list(range(start.revision + 1,
                                                                                          final + 1))
            role = clients[0].call(clients[0].roles.GetRole, roles_pb2.GetRoleRequest(name="shared"))
            assert len(role.rules) == 1 + len(threads) * STEPS  # no lost update
            store = open_store(postgres_fresh)
            try:
                assert [entry.revision for entry in store.audit()] == list(range(1, final + 1))
            finally:
                store.close()

            # Both replicas publish; Redis keeps the newest: the final revision, with all of it.
            for client in clients:
                status = client.call(client.fleet.GetFleetStatus, fleet_pb2.GetFleetStatusRequest())
                assert (status.store_revision, status.published_revision) == (final, final)
            with redis.Redis.from_url(topology.redis.url) as raw:
                snapshot = verify_snapshot(raw.get(SNAPSHOT_KEY), load_public_key(topology.state.signing_pub))
            assert snapshot.revision == final
            assert len(snapshot.clusters) == 1 + len(threads) * STEPS

            timeout = Duration(seconds=30)
            for client in clients:
                applied = client.call(client.fleet.WaitForRevision,
                                      fleet_pb2.WaitForRevisionRequest(revision=final, timeout=timeout), timeout=40)
                assert sorted((g.id, g.revision) for g in applied.gateways) == [("gw-0", final), ("gw-1", final)]
            for gateway in topology.gateways:
                eventually(lambda: gateway.revision() == final, f"gateway {gateway.name} at revision {final}")
        finally:
            for client in clients:
                client.close()
