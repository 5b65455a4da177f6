"""OIDC ID tokens through a running gateway (in-process worker, real TLS on loopback) with a local
issuer: raw HTTP/1.1 for the wire (Status objects, what goes upstream, audit, a hanging issuer),
and the real kubectl in front of the fake Kubernetes API server."""
from __future__ import annotations

import asyncio
import time

import pytest

from dataplane import oidc
from dataplane.pki import CertificateAuthority
from dataplane.sandbox import kubeconfig
from tests.dataplane.gateway.helpers import build_request, make_env, read_head, run
from tests.e2e.kubectl import Kubectl
from tests.fakekube.server import FakeKube

from .issuer import CLIENT_ID, Issuer, Key

BAD_TOKENS = {
    "expired": lambda i: i.token(exp=int(time.time()) - 600),
    "wrong audience": lambda i: i.token(aud="another-client"),
    "wrong issuer": lambda i: i.token(iss="https://idp.elsewhere.example"),
    "unknown key": lambda i: i.token(Key.generate("never-published")),
    "alg none": lambda i: i.unsigned_token(),
    "HS256 keyed with the public key": lambda i: i.hs256_with_public_key(),
}


@pytest.fixture
def issuer(tmp_path):
    with Issuer(tmp_path) as issuer:
        yield issuer


def oidc_options(issuer: Issuer, **overrides) -> dict:
    # carol (as `sub`, unprefixed) is bound to everything on cluster alpha in the test snapshot
    return {"oidc_issuer_url": issuer.url, "oidc_client_id": CLIENT_ID, "oidc_username_prefix": "-",
            "oidc_groups_claim": "groups", "oidc_groups_prefix": "oidc:", "oidc_ca_file": str(issuer.ca_file),
            **overrides}


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_id_tokens_at_the_gateway(tmp_path, issuer):
    async def body():
        env = await make_env(tmp_path, **oidc_options(issuer))
        try:
            c = await env.connect(user=None)
            r = await c.request("GET", "/clusters/alpha/api/v1/namespaces/default/pods", bearer(issuer.token()))
            assert r.status == 200, r.body
            upstream = env.upstreams["alpha"].requests[-1]
            assert upstream.values("authorization") == ["Bearer gateway-token-alpha"]   # never the ID token
            assert upstream.values("impersonate-user") == ["carol"]
            assert upstream.values("impersonate-group") == ["oidc:devs"]
            event = env.audit_events()[-1]
            assert (event["user"], event["method"], event["decision"]) == ("carol", "oidc", "allow")
            assert event["credential_id"].startswith("sha256:")

            for case, make in BAD_TOKENS.items():
                r = await c.request("GET", "/clusters/alpha/api/v1/namespaces/default/pods", bearer(make(issuer)))
                assert r.status == 401, case
                status = r.json()
                assert (status["kind"], status["code"], status["reason"]) == ("Status", 401, "Unauthorized"), case
                assert env.audit_events()[-1]["authn_failure"] == "invalid_token", case
            assert issuer.jwks_fetches == 1       # the unknown key came within --oidc-refresh-interval
        finally:
            await env.close()

    run(body)


async def watch_then_hold(req, reader, writer) -> bool:
    """Upstream: a watch that sends one event, then holds until the gateway lets go."""
    event = b'{"type":"ADDED"}\n'
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n"
                 b"\r\n%x\r\n%s\r\n" % (len(event), event))
    await writer.drain()
    await reader.read(1)
    return False


def test_a_live_watch_outlives_policy_updates_until_its_oidc_identity_is_revoked(tmp_path, issuer):
    async def body():
        env = await make_env(tmp_path, {"alpha": watch_then_hold}, **oidc_options(issuer))
        try:
            c = await env.connect(user=None)
            c.send(build_request("GET", "/clusters/alpha/api/v1/namespaces/default/pods?watch=1",
                                 bearer(issuer.token())))
            assert (await read_head(c.reader))[0].startswith("HTTP/1.1 200")
            await c.reader.readuntil(b'{"type":"ADDED"}\n')
            holder, live = env.worker.holder, env.worker.gateway.live
            # every update authenticates live identities again: the ID token still verifies
            revoked = env.worker.metrics.streams_revoked_total.labels(kind="watch")
            holder.apply_revocations(holder.current.revision + 1, {"users": ["somebody-else"]})
            assert len(live) == 1 and revoked.value == 0
            holder.apply_revocations(holder.current.revision + 2, {"groups": ["oidc:devs"]})
            async with asyncio.timeout(10):       # the body ends with its last chunk, then the connection
                assert (await c.reader.read()).endswith(b"0\r\n\r\n")
            assert len(live) == 0
            ended = [e for e in env.audit_events() if e.get("session_ended_by") == "revoked"]
            assert [(e["user"], e["revocation"]) for e in ended] == [("carol", "authentication refused: revoked")]
            r = await (await env.connect(user=None)).request("GET", "/clusters/alpha/version", bearer(issuer.token()))
            assert r.status == 401
        finally:
            await env.close()

    run(body)


def test_an_issuer_that_hangs_costs_a_bounded_wait_and_blocks_nobody_else(tmp_path, issuer, monkeypatch):
    monkeypatch.setattr(oidc, "WAIT_BOUND", 0.5)
    issuer.hold.clear()

    async def body():
        env = await make_env(tmp_path, **oidc_options(issuer))
        try:
            token_client, cert_client = await env.connect(user=None), await env.connect("alice", ["devs"])
            waiting = asyncio.ensure_future(
                token_client.request("GET", "/clusters/alpha/version", bearer(issuer.token())))
            # while the first fetch hangs, other callers are served
            r = await cert_client.request("GET", "/clusters/alpha/version")
            assert r.status == 200
            started = time.monotonic()
            r = await waiting
            assert r.status == 401 and time.monotonic() - started < 10
            assert env.audit_events()[-1]["authn_failure"] == "oidc_unavailable"
            issuer.hold.set()
            deadline = time.monotonic() + 15      # the fetch now completes; the same token works
            while (r := await token_client.request("GET", "/clusters/alpha/version",
                                                   bearer(issuer.token()))).status != 200:
                assert time.monotonic() < deadline, r.body
                await asyncio.sleep(0.05)
        finally:
            await env.close()

    run(body)


def test_kubectl_with_id_tokens(tmp_path, issuer):
    async def body():
        cluster_ca = CertificateAuthority.create("fake cluster")
        cluster_ca.issue_server(["127.0.0.1"]).write(tmp_path / "kube.crt", tmp_path / "kube.key")
        fake = FakeKube(cert=tmp_path / "kube.crt", key=tmp_path / "kube.key",
                        gateway_token="gateway-token-alpha", rbac={"users": {"carol": "admin"}})
        await fake.start()
        env = await make_env(tmp_path, {}, unreachable={"alpha": fake.port}, cluster_ca=cluster_ca,
                             **oidc_options(issuer, oidc_refresh_interval=0.5))
        config = tmp_path / "oidc.kubeconfig"
        config.write_text(kubeconfig(f"https://127.0.0.1:{env.port}/clusters/alpha", env.server_ca.cert_pem,
                                     "carol", token="placeholder", context="oidc"))
        kubectl = Kubectl(config, tmp_path / "kube-cache")

        async def get_pods(token: str):
            return await asyncio.to_thread(kubectl.run, f"--token={token}", "get", "pods", "-o", "name")

        try:
            done = await get_pods(issuer.token())
            assert done.returncode == 0, done.stderr.decode()
            assert done.stdout.decode().split() == ["pod/web-0"]
            assert fake.requests[-1].header_values("impersonate-user") == ["carol"]

            for case, make in BAD_TOKENS.items():
                done = await get_pods(make(issuer))
                assert done.returncode != 0, case
                assert "Unauthorized" in done.stderr.decode(), (case, done.stderr.decode())

            # rotation: the issuer publishes a new key and signs with it; the gateway fetches it
            new_key = Key.generate("key-2")
            issuer.keys = [issuer.keys[0], new_key]
            deadline = time.monotonic() + 20      # the refresh that the unknown key above made
            while (done := await get_pods(issuer.token(new_key))).returncode != 0:   # may be too recent
                assert time.monotonic() < deadline, done.stderr.decode()
            assert done.stdout.decode().split() == ["pod/web-0"]
        finally:
            await env.close()
            await fake.stop()

    run(body, timeout=120)
