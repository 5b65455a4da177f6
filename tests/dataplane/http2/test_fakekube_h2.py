"""The fake API server speaks HTTP/2 when ALPN negotiates it (h2 on the gateway's upstream hop)."""
from __future__ import annotations

import ssl

from dataplane.pki import CertificateAuthority
from tests.dataplane.gateway.helpers import run
from tests.fakekube.server import FakeKube

from .client import H2Client

AUTH = [("authorization", "Bearer gateway-token-alpha"), ("impersonate-user", "alice")]


def test_fakekube_serves_lists_watches_and_resets_over_h2(tmp_path):
    async def body():
        ca = CertificateAuthority.create("fake cluster")
        ca.issue_server(["127.0.0.1"]).write(tmp_path / "kube.crt", tmp_path / "kube.key")
        fake = FakeKube(cert=tmp_path / "kube.crt", key=tmp_path / "kube.key", http2=True,
                        gateway_token="gateway-token-alpha", rbac={"users": {"alice": "admin"}})
        await fake.start()
        c = await H2Client.connect(fake.port, ssl.create_default_context(cadata=ca.cert_pem.decode()))
        try:
            r = await c.get("/version", AUTH)
            assert r.status == 200 and "gitVersion" in r.json()
            watch = c.request("GET", "/api/v1/namespaces/default/configmaps?watch=true", AUTH)
            pods = await c.get("/api/v1/namespaces/default/pods?limit=500", AUTH)   # multiplexed
            assert [p["metadata"]["name"] for p in pods.json()["items"]] == ["web-0"]
            fake.store.create({"apiVersion": "v1", "kind": "ConfigMap",
                               "metadata": {"name": "late", "namespace": "default"}})
            await c.wait(lambda: b'"late"' in c.streams[watch].body, "the watch event")
            c.reset(watch)
            r = await c.get("/api/v1/namespaces/default/configmaps/late", AUTH)
            assert r.status == 200
        finally:
            await c.close()
            await fake.stop()

    run(body)
