"""docs/policy.md enforced by a running gateway (in-process worker, real TLS on loopback): kill
switches, provenance in audit and upstream, group compaction, source conditions, per-principal caps."""
from __future__ import annotations

import asyncio
import copy

from dataplane.snapshot import Snapshot, validate

from .helpers import build_request, make_env, read_head, run

PODS = "/clusters/alpha/api/v1/namespaces/default/pods"


def apply_policy(env, change) -> None:
    """Apply the current snapshot changed by `change(data)` as the next revision."""
    data = copy.deepcopy(env.worker.holder.current.data)
    data["revision"] += 1
    change(data)
    validate(data)
    assert env.worker.holder.apply(Snapshot(data))


def cluster_named(data, name):
    return next(c for c in data["clusters"] if c["name"] == name)


async def watch_then_hold(req, reader, writer) -> bool:
    """Upstream: a watch that sends one event, then holds until the gateway lets go."""
    event = b'{"type":"ADDED"}\n'
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n"
                 b"\r\n%x\r\n%s\r\n" % (len(event), event))
    await writer.drain()
    await reader.read(1)
    return False


async def open_watch(env, user="alice"):
    c = await env.connect(user, ["devs"])
    c.send(build_request("GET", PODS + "?watch=1"))
    assert (await read_head(c.reader))[0].startswith("HTTP/1.1 200")
    await c.reader.readuntil(b'{"type":"ADDED"}\n')
    return c


def test_disabling_kubectl_on_a_cluster_ends_its_watches_and_refuses_new_requests(tmp_path):
    async def body():
        env = await make_env(tmp_path, {"alpha": watch_then_hold})
        try:
            c = await open_watch(env)
            live = env.worker.gateway.live
            assert len(live) == 1
            apply_policy(env, lambda data: cluster_named(data, "alpha").update(read_only=True))
            assert len(live) == 1                 # read-only still lets a watch run
            apply_policy(env, lambda data: cluster_named(data, "alpha").update(kubectl_enabled=False))
            async with asyncio.timeout(10):       # the body ends with its last chunk, then the connection
                assert (await c.reader.read()).endswith(b"0\r\n\r\n")
            assert len(live) == 0
            ended = [e for e in env.audit_events() if e.get("session_ended_by") == "revoked"]
            assert [e["revocation"] for e in ended] == ['no longer allowed: cluster "alpha" has kubectl access disabled']

            r = await (await env.connect()).request("GET", PODS)
            assert r.status == 403
            assert r.json()["message"].endswith(': cluster "alpha" has kubectl access disabled')
            assert env.audit_events()[-1]["decision_by"] == {}
        finally:
            await env.close()

    run(body)


def test_read_only_cluster_refuses_writes_with_the_reason(tmp_path):
    async def body():
        env = await make_env(tmp_path)
        try:
            apply_policy(env, lambda data: cluster_named(data, "alpha").update(read_only=True))
            c = await env.connect()
            assert (await c.request("GET", PODS)).status == 200
            r = await c.request("POST", PODS, {"Content-Type": "application/json"}, b"{}")
            assert r.status == 403 and r.json()["message"].endswith(': cluster "alpha" is read-only')
        finally:
            await env.close()

    run(body)


def grants(data):
    data["bindings"] += [
        {"name": "eve-request", "role": "all", "subjects": [{"kind": "user", "name": "eve"}],
         "clusters": {"names": ["alpha"]}, "grant": {"kind": "access_request", "id": "ar-17"}},
        {"name": "eve-glass", "role": "all", "subjects": [{"kind": "user", "name": "eve"}],
         "clusters": {"names": ["beta"]}, "grant": {"kind": "break_glass", "id": "bg-3", "reason": "outage"}},
        {"name": "no-secrets", "role": "all", "effect": "deny", "subjects": [{"kind": "group", "name": "devs"}],
         "clusters": {"names": ["*"]}},
    ]
    data["roles"].append({"name": "secrets", "rules": [{"verbs": ["*"], "api_groups": [""], "resources": ["secrets"]}]})
    data["bindings"][-1]["role"] = "secrets"


def test_provenance_reaches_the_audit_event_and_the_clusters_audit_log(tmp_path):
    async def body():
        env = await make_env(tmp_path)
        try:
            apply_policy(env, grants)
            eve = await env.connect(None)
            token = {"Authorization": "Bearer eve-token"}
            r = await eve.request("GET", PODS, token)
            assert r.status == 200
            seen = env.upstreams["alpha"].requests[-1]
            assert seen.values("impersonate-extra-accesspoint.io%2fgrant-id") == ["ar-17"]
            assert seen.values("impersonate-extra-accesspoint.io%2frequest-id") == [r.header("x-accesspoint-request-id")]
            event = env.audit_events()[-1]
            assert event["decision_by"] == {"binding": "eve-request", "role": "all", "effect": "allow",
                                            "grant_kind": "access_request", "grant_id": "ar-17"}
            assert event["break_glass"] is False

            assert (await eve.request("GET", "/clusters/beta/api/v1/namespaces/default/pods", token)).status == 200
            event = env.audit_events()[-1]
            assert event["break_glass"] is True and event["decision_by"]["grant_id"] == "bg-3"
            apply_policy(env, lambda data: data["settings"].update(break_glass_enabled=False))
            assert (await eve.request("GET", "/clusters/beta/api/v1/namespaces/default/pods", token)).status == 403

            alice = await env.connect("alice", ["devs"])
            r = await alice.request("GET", "/clusters/alpha/api/v1/namespaces/default/secrets")
            assert r.status == 403                # deny beats alice's allow-everything binding
            assert r.json()["message"].endswith(': deny binding "no-secrets" (role "secrets")')
            assert env.audit_events()[-1]["decision_by"]["effect"] == "deny"
        finally:
            await env.close()

    run(body)


def test_group_compaction_forwards_only_groups_that_policy_or_the_cluster_names(tmp_path):
    async def body():
        env = await make_env(tmp_path)
        try:
            groups = ["devs", "idp-noise-1", "cluster-admins", "idp-noise-2", "system:authenticated"]
            c = await env.connect("alice", groups)
            assert (await c.request("GET", PODS)).status == 200
            assert env.upstreams["alpha"].requests[-1].values("impersonate-group") == groups   # off by default

            def compact(data):
                data["settings"]["group_compaction"] = True
                cluster_named(data, "alpha")["upstream_groups"] = ["cluster-admins"]
                data["bindings"][0]["subjects"].append({"kind": "group", "name": "devs"})
            apply_policy(env, compact)
            assert (await c.request("GET", PODS)).status == 200
            assert env.upstreams["alpha"].requests[-1].values("impersonate-group") == [
                "devs", "cluster-admins", "system:authenticated"]
            assert env.audit_events()[-1]["groups"] == groups     # the audit keeps every group
        finally:
            await env.close()

    run(body)


def test_source_address_conditions(tmp_path):
    async def body():
        env = await make_env(tmp_path)
        try:
            def only_from(cidrs):
                return lambda data: data["bindings"][0].update(conditions={"source_cidrs": cidrs})
            c = await env.connect()
            apply_policy(env, only_from(["10.0.0.0/8"]))
            assert (await c.request("GET", PODS)).status == 403      # the test connects from 127.0.0.1
            apply_policy(env, only_from(["10.0.0.0/8", "127.0.0.0/8"]))
            assert (await c.request("GET", PODS)).status == 200
        finally:
            await env.close()

    run(body)


def test_per_principal_watch_cap_answers_429(tmp_path):
    async def body():
        env = await make_env(tmp_path, {"alpha": watch_then_hold})
        try:
            apply_policy(env, lambda data: data["settings"].update(max_watches=1))
            first = await open_watch(env)
            r = await (await env.connect()).request("GET", PODS + "?watch=1")
            assert r.status == 429
            status = r.json()
            assert (status["kind"], status["reason"]) == ("Status", "TooManyRequests")
            assert "1 concurrent watches" in status["message"]
            await first.close()                   # the slot comes back when the watch ends
            deadline = asyncio.get_running_loop().time() + 10
            while env.worker.gateway.live._slots:
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.02)
            await open_watch(env)
        finally:
            await env.close()

    run(body)


def test_an_expiring_grant_ends_its_live_watch_without_a_new_snapshot(tmp_path):
    """A time-bound grant (an approved access request, a break-glass activation) ends its streams
    when it expires, not at whatever snapshot comes next."""
    import datetime

    async def body():
        env = await make_env(tmp_path, {"alpha": watch_then_hold})
        try:
            ends = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=4)
            apply_policy(env, lambda data: data["bindings"][0].update(valid_until=ends.strftime("%Y-%m-%dT%H:%M:%SZ")))
            revision = env.worker.holder.current.revision
            c = await open_watch(env)
            async with asyncio.timeout(20):       # ends within TIME_RECHECK_INTERVAL of the expiry
                assert (await c.reader.read()).endswith(b"0\r\n\r\n")
            assert datetime.datetime.now(datetime.timezone.utc) >= ends.replace(microsecond=0)
            assert env.worker.holder.current.revision == revision   # no snapshot was involved
            ended = [e for e in env.audit_events() if e.get("session_ended_by") == "revoked"]
            assert len(ended) == 1 and ended[0]["revocation"].startswith("no longer allowed")
        finally:
            await env.close()

    run(body)
