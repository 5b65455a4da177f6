"""The agent's plan of which addresses to dial (tunnel/coverage.py), sans-IO."""
from __future__ import annotations

from dataplane.tunnel.coverage import Coverage
from dataplane.tunnel.membership import Member, decode, encode, from_heartbeats
from dataplane.tunnel.protocol import Accepted

LB = "lb:8443"


def test_behind_a_load_balancer_the_agent_dials_until_every_worker_of_every_member_is_covered():
    c = Coverage([LB])
    assert c.wanted(LB)                                     # nothing known yet: dial the seed
    assert c.offer(LB, Accepted("gw-a", 0, 2), "t1")
    c.learn([Member("gw-a", 2, None), Member("gw-b", 1, None)])
    assert c.missing() == [("gw-a", 1), ("gw-b", 0)] and c.wanted(LB)
    assert not c.offer(LB, Accepted("gw-a", 0, 2), "dup")   # a duplicate is refused
    assert c.offer(LB, Accepted("gw-a", 1, 2), "t2") and c.offer(LB, Accepted("gw-b", 0, 1), "t3")
    assert c.complete() and not c.wanted(LB)
    c.lost("t3")
    assert c.missing() == [("gw-b", 0)] and c.wanted(LB)


def test_advertised_replicas_are_dialled_directly_and_the_seed_rests():
    c = Coverage([LB])
    c.offer(LB, Accepted("gw-a", 0, 1), "t1")
    c.learn([Member("gw-a", 1, "a:1"), Member("gw-b", 2, "b:1")])
    assert c.addresses() == [LB, "a:1", "b:1"]
    assert c.wanted("b:1") and not c.wanted("a:1") and not c.wanted(LB)
    c.offer("b:1", Accepted("gw-b", 0, 2), "t2")
    c.offer("b:1", Accepted("gw-b", 1, 2), "t3")
    assert c.complete() and not c.wanted("b:1")
    c.lost("t1")                   # the seed's tunnel went: gw-a is dialled directly, not via the seed
    assert c.wanted("a:1") and c.wanted(LB)
    c.offer("a:1", Accepted("gw-a", 0, 1), "t4")
    assert not c.wanted(LB)        # everything covered and addressed: the seed could only duplicate
    c.learn([Member("gw-a", 1, "a:1")])                     # gw-b left the fleet; its tunnels stay
    assert "gw-b" in c.members and c.addresses() == [LB, "a:1", "b:1"]
    c.lost("t2")
    c.lost("t3")
    assert "gw-b" not in c.members and c.addresses() == [LB, "a:1"]


def test_without_a_member_list_a_replica_that_restarts_under_a_new_id_is_not_wanted_forever():
    c = Coverage(["a:1", "b:1"])                            # a static list, gateways without Redis
    c.offer("a:1", Accepted("gw-a", 0, 1), "t1")
    c.offer("b:1", Accepted("gw-b", 0, 1), "t2")
    assert c.complete() and not c.wanted("a:1") and not c.wanted("b:1")
    c.lost("t2")
    assert "gw-b" not in c.members and c.wanted("b:1") and not c.wanted("a:1")
    c.offer("b:1", Accepted("gw-b2", 0, 1), "t3")
    assert c.complete() and sorted(c.members) == ["gw-a", "gw-b2"]


def test_member_lists_round_trip_and_heartbeats_group_workers_into_replicas():
    members = [Member("gw-b", 2, None), Member("gw-a", 1, "10.0.0.1:8443")]
    assert decode(encode(members)) == sorted(members)
    beats = [b'{"id":"gw-b-0","tunnel":{"gateway":"gw-b","worker":0,"workers":2,"address":null,"clusters":{}}}',
             b'{"id":"gw-b-1","tunnel":{"gateway":"gw-b","worker":1,"workers":2,"address":null,"clusters":{}}}',
             b'{"id":"old-gateway-without-tunnels"}', b"not json",
             b'{"id":"x","tunnel":{"gateway":"bad id","workers":1,"address":null}}']
    assert from_heartbeats(beats) == [Member("gw-b", 2, None)]
    for bad in (b"{}", b'[{"gateway":"a","workers":0,"address":null}]', b'[{"gateway":"a","workers":1,"address":"x"}]'):
        try:
            decode(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} was accepted")
