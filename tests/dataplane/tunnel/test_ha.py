"""High availability in-process: one tunnel per gateway worker, replicas learnt from the member
list, the fleet read from heartbeats in Redis, tunnel metrics and audit events."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import re

import redis

from dataplane.heartbeat import Heartbeat
from dataplane.server import Worker
from dataplane.tunnel.gateway import follow_fleet
from dataplane.tunnel.membership import Member, read_fleet
from dataplane.up import free_port
from tests.dataplane.gateway.helpers import Client, run
from tests.dataplane.tunnel.helpers import eventually, make_tunnel_env

PODS = "/clusters/alpha/api/v1/namespaces/default/pods"


async def _client(t, worker: Worker) -> Client:
    reader, writer = await asyncio.open_connection("127.0.0.1", worker.server.port, ssl=t.env.client_ssl("alice"),
                                                   server_hostname="127.0.0.1")
    client = Client(reader, writer)
    t.env.clients.append(client)
    return client


async def _second_worker(t, config) -> Worker:
    worker = Worker(config, index=1 if config.workers > 1 else 0)
    await worker.start()
    return worker


def test_an_agent_keeps_a_tunnel_to_every_worker_sharing_the_port(tmp_path):
    async def body():
        # two workers of one replica: the kernel spreads the agent's dials over both (SO_REUSEPORT)
        t = await make_tunnel_env(tmp_path, workers=2, gateway_id="gw-a", admin_listen="")
        other = await _second_worker(t, t.env.config)
        try:
            agent = await t.start_agent()
            workers = (t.env.worker, other)
            await eventually(lambda: set(agent.coverage.held) == {("gw-a", 0), ("gw-a", 1)}, "a tunnel to each worker")
            await eventually(lambda: [len(w.tunnels.tunnels("alpha")) for w in workers] == [1, 1],
                             "one tunnel on each worker (duplicates closed)")
            for worker in workers:
                resp = await (await _client(t, worker)).request("GET", PODS)
                assert resp.status == 200, resp.body
            # a worker loses its tunnel (say it restarted): the agent covers it again, and only it
            other.tunnels.tunnels("alpha")[0].close()
            await eventually(lambda: agent.connected == 3 and other.tunnels.tunnels("alpha"), "a new tunnel")
            await eventually(lambda: agent.coverage.complete(), "both workers covered")
            await eventually(lambda: [len(w.tunnels.tunnels("alpha")) for w in workers] == [1, 1],
                             "one tunnel on each worker (duplicates closed)")
        finally:
            await other.stop(grace=0)
            await t.close()
    run(body)


def test_an_agent_dials_every_replica_the_member_list_advertises(tmp_path):
    async def body():
        t = await make_tunnel_env(tmp_path, gateway_id="gw-a")
        port_b = free_port()
        b_config = dataclasses.replace(t.env.config, gateway_id="gw-b", tunnel_port=port_b, admin_listen="",
                                       tunnel_advertise=f"127.0.0.1:{port_b}")
        replica_b = await _second_worker(t, b_config)
        try:
            agent = await t.start_agent()           # given gw-a only (as it would be a load balancer)
            assert set(agent.coverage.held) == {("gw-a", 0)}
            # the fleet as gw-a reads it from Redis; every tunnel of gw-a is told
            t.tunnels.set_members([t.env.worker.tunnel_member, replica_b.tunnel_member])
            await eventually(lambda: set(agent.coverage.held) == {("gw-a", 0), ("gw-b", 0)},
                             "a tunnel to the advertised replica")
            resp = await (await _client(t, replica_b)).request("GET", PODS)
            assert resp.status == 200, resp.body
            # gw-b leaves the fleet and its tunnels end: the agent stops dialling it
            t.tunnels.set_members([t.env.worker.tunnel_member])
            await replica_b.stop(grace=0)
            await eventually(lambda: set(agent.coverage.held) == {("gw-a", 0)} and agent.coverage.complete(),
                             "gw-b forgotten")
            assert agent.coverage.addresses() == [f"127.0.0.1:{t.env.config.tunnel_port}"]
        finally:
            await replica_b.stop(grace=0)
            await t.close()
    run(body)


def test_gateways_publish_their_tunnels_in_heartbeats_and_read_the_fleet(tmp_path, redis_server):
    async def body():
        t = await make_tunnel_env(tmp_path, gateway_id="gw-a", tunnel_advertise="10.0.0.1:8443")
        client = redis.Redis.from_url(redis_server.url)
        heartbeat = Heartbeat(client, gateway_id="gw-a")
        other = Heartbeat(client, gateway_id="gw-b-0")
        other.extra = lambda: {"tunnel": {"gateway": "gw-b", "worker": 0, "workers": 2, "address": None,
                                          "clusters": {}}}
        watcher = None
        try:
            await t.start_agent()
            watcher = follow_fleet(heartbeat, t.tunnels, t.env.worker.tunnel_member, 0, client, interval=0.05)
            await asyncio.to_thread(heartbeat.beat)
            await asyncio.to_thread(other.beat)
            written = json.loads(client.get("accesspoint:gateway:gw-a"))
            assert written["tunnel"] == {"gateway": "gw-a", "worker": 0, "workers": 1, "address": "10.0.0.1:8443",
                                         "clusters": {"alpha": 1}, "lost_at": {}}
            assert written["id"] == "gw-a" and written["revision"] == -1     # the heartbeat's own fields stay
            fleet = await asyncio.to_thread(read_fleet, client)
            assert fleet == [Member("gw-a", 1, "10.0.0.1:8443"), Member("gw-b", 2, None)]
            # a later read tells the agent (the first may predate gw-b's heartbeat)
            await eventually(lambda: len(t.tunnels.members) == 2, "the fleet in the registry")
            agent = t.agents[0][0]
            await eventually(lambda: "gw-b" in agent.coverage.members, "the fleet at the agent")
        finally:
            if watcher is not None:
                await watcher.stop()
            client.close()
            await t.close()
    run(body)


def test_tunnel_metrics_and_audit_events(tmp_path):
    async def body():
        t = await make_tunnel_env(tmp_path, gateway_id="gw-a", tunnel_ping_interval=0.05)
        try:
            agent = await t.start_agent()
            resp = await (await t.env.connect("alice", ["devs"])).request("GET", PODS)
            assert resp.status == 200
            intruder = await _refused_agent(t)
            await eventually(lambda: b'accesspoint_tunnel_rtt_seconds_count{cluster="alpha"} 0' not in
                             t.env.worker.metrics.render() and b"accesspoint_tunnel_rtt_seconds_count" in
                             t.env.worker.metrics.render(), "a gateway-side RTT")
            text = t.env.worker.metrics.render().decode()
            assert 'accesspoint_tunnels{cluster="alpha"} 1' in text
            assert 'accesspoint_tunnel_accepted_total{cluster="alpha"} 1' in text
            assert re.search(r'accesspoint_tunnel_refused_total\{reason="not_allowed"\} [1-9]', text)
            assert 'accesspoint_tunnel_streams_total{cluster="alpha"} 1' in text
            assert 'accesspoint_tunnel_streams{cluster="alpha"} 0' in text
            agent_text = agent.metrics.render().decode()
            assert "accesspoint_agent_tunnels 1" in agent_text
            assert 'accesspoint_agent_dials_total{result="accepted"} 1' in agent_text
            assert "accesspoint_agent_streams_total " in agent_text
            assert 'accesspoint_agent_dials_total{result="refused"}' in intruder.metrics.render().decode()

            events = [e for e in t.env.audit_events() if e.get("kind") == "tunnel"]
            accepted = [e for e in events if e["decision"] == "allow"]
            refused = [e for e in events if e["decision"] == "deny"]
            assert len(accepted) == 1 and accepted[0]["user"] == "agent-alpha" and accepted[0]["cluster"] == "alpha"
            assert accepted[0]["gateway"] == "gw-a" and accepted[0]["client"] == "127.0.0.1"
            assert refused and refused[0]["user"] == "intruder" and refused[0]["refusal"] == "not_allowed"
            assert 'not allowed to serve cluster "alpha"' in refused[0]["reason"]

            t.env.worker.tunnels.tunnels("alpha")[0].close()
            await eventually(lambda: agent.connected == 2, "the agent back")
            assert 'accesspoint_tunnel_closed_total{cluster="alpha"} 1' in t.env.worker.metrics.render().decode()
            assert 'accesspoint_agent_reconnects_total{cause="closed"} 1' in agent.metrics.render().decode()
        finally:
            await t.close()
    run(body)


async def _refused_agent(t):
    """An agent whose certificate the snapshot does not allow, refused at least once."""
    from dataplane.agent import Agent

    agent = Agent(t.agent_config(cn="intruder"))
    stop = asyncio.Event()
    task = asyncio.ensure_future(agent.run(stop))
    t.agents.append((agent, stop, task))
    await eventually(lambda: agent.metrics.dials_total.labels(result="refused").value >= 1, "a refusal")
    return agent
