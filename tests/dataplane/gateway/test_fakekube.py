"""The gateway in front of the fake Kubernetes API server (tests/fakekube): the API server sees
the gateway's token and the caller impersonated, and answers like Kubernetes."""
from __future__ import annotations

import json

from dataplane.pki import CertificateAuthority
from tests.fakekube.server import FakeKube

from .helpers import build_request, make_env, read_head, run


def test_kubectl_like_traffic_through_the_gateway_to_fakekube(tmp_path):
    async def body():
        cluster_ca = CertificateAuthority.create("fake cluster")
        cluster_ca.issue_server(["127.0.0.1"]).write(tmp_path / "kube.crt", tmp_path / "kube.key")
        fake = FakeKube(cert=tmp_path / "kube.crt", key=tmp_path / "kube.key",
                        gateway_token="gateway-token-alpha", rbac={"users": {"alice": "admin"}})
        await fake.start()
        env = await make_env(tmp_path, {}, unreachable={"alpha": fake.port}, cluster_ca=cluster_ca)
        try:
            c = await env.connect("alice", ["devs"])
            r = await c.request("GET", "/clusters/alpha/version?timeout=32s")
            assert r.status == 200 and "gitVersion" in r.json()
            r = await c.request("GET", "/clusters/alpha/api/v1/namespaces/default/pods?limit=500")
            assert r.status == 200 and [p["metadata"]["name"] for p in r.json()["items"]] == ["web-0"]
            cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "via-gateway"},
                  "data": {"k": "v"}}
            r = await c.request("POST", "/clusters/alpha/api/v1/namespaces/default/configmaps"
                                "?fieldManager=kubectl-client-side-apply&fieldValidation=Strict",
                                {"Content-Type": "application/json"}, json.dumps(cm).encode())
            assert r.status == 201, r.body
            # a watch streams an event created after it started
            w = await env.connect("alice", ["devs"])
            w.send(build_request("GET", "/clusters/alpha/api/v1/namespaces/default/configmaps"
                                 "?watch=true&resourceVersion=" + r.json()["metadata"]["resourceVersion"]))
            head = await read_head(w.reader)
            assert head[0].startswith("HTTP/1.1 200")
            fake.store.create({"apiVersion": "v1", "kind": "ConfigMap",
                               "metadata": {"name": "late", "namespace": "default"}})
            size = int(await w.reader.readuntil(b"\r\n"), 16)
            event = json.loads((await w.reader.readexactly(size + 2))[:-2])
            assert event["type"] == "ADDED" and event["object"]["metadata"]["name"] == "late"
            r = await c.request("DELETE", "/clusters/alpha/api/v1/namespaces/default/configmaps/via-gateway",
                                {"Content-Type": "application/json"}, b'{"propagationPolicy":"Background"}')
            assert r.status == 200
            seen = fake.requests[-1]
            assert seen.header("authorization") == "Bearer gateway-token-alpha"
            assert seen.header_values("impersonate-user") == ["alice"]
            assert seen.header_values("impersonate-group") == ["devs"]
            await w.close()
        finally:
            await env.close()
            await fake.stop()

    run(body)


def test_websocket_exec_through_the_gateway(tmp_path):
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Request

    async def body():
        cluster_ca = CertificateAuthority.create("fake cluster")
        cluster_ca.issue_server(["127.0.0.1"]).write(tmp_path / "kube.crt", tmp_path / "kube.key")
        fake = FakeKube(cert=tmp_path / "kube.crt", key=tmp_path / "kube.key",
                        gateway_token="gateway-token-alpha", rbac={"users": {"alice": "admin"}})
        await fake.start()
        env = await make_env(tmp_path, {}, unreachable={"alpha": fake.port}, cluster_ca=cluster_ca)
        try:
            c = await env.connect("alice", ["devs"])
            ws = WSConnection(ConnectionType.CLIENT)
            c.send(ws.send(Request(host="gateway", subprotocols=["v5.channel.k8s.io"],
                                   target="/clusters/alpha/api/v1/namespaces/default/pods/web-0/exec"
                                          "?command=cat&command=%2Fapp%2Fhello.txt&container=app&stdout=true")))
            stdout = bytearray()
            accepted = closed = False
            while not closed:
                data = await c.reader.read(65536)
                if not data:
                    break
                ws.receive_data(data)
                for event in ws.events():
                    if isinstance(event, AcceptConnection):
                        accepted = event.subprotocol == "v5.channel.k8s.io"
                    elif isinstance(event, BytesMessage) and event.data[:1] == b"\x01":
                        stdout += event.data[1:]
                    elif isinstance(event, CloseConnection):
                        closed = True
                        c.send(ws.send(event.response()))
            while await c.reader.read(65536):     # the session ends: the gateway closes after auditing
                pass
            assert accepted
            assert bytes(stdout) == b"hello from the fake container\n"
            upgrade = [r for r in fake.requests if "/exec" in r.target][0]
            assert upgrade.header_values("impersonate-user") == ["alice"]
            assert upgrade.header_values("sec-websocket-protocol") == ["v5.channel.k8s.io"]
            ev = env.audit_events()[-1]
            assert ev["code"] == 101 and ev["subresource"] == "exec" and ev["session_end"]
        finally:
            await env.close()
            await fake.stop()

    run(body)
