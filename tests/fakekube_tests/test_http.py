"""FakeKube over the wire with a plain HTTP client: Status errors, watches, openapi, upgrades, CLI."""
from __future__ import annotations

import http.client
import json
import signal
import ssl
import subprocess
import sys
import types
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from tests.fakekube import api as api_module
from tests.fakekube.server import FakeKube
from tests.fakekube.upgrade_request import UpgradeRequest

from .conftest import TOKEN, Pki

AUTH = {"Authorization": f"Bearer {TOKEN}"}
ALICE = {**AUTH, "Impersonate-User": "alice"}


def _connect(fake: FakeKube, pki: Pki, client_cert: tuple[Path, Path] | None = None) -> http.client.HTTPSConnection:
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    if client_cert:
        context.load_cert_chain(*map(str, client_cert))
    return http.client.HTTPSConnection("127.0.0.1", fake.port, context=context, timeout=15)


def call(fake: FakeKube, pki: Pki, method: str, target: str, headers: dict[str, str] | None = None,
         body: Any = None) -> tuple[int, dict[str, str], bytes]:
    conn = _connect(fake, pki)
    payload = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    conn.request(method, target, payload, headers if headers is not None else ALICE)
    response = conn.getresponse()
    result = response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    conn.close()
    return result


def _pod(name: str, labels: dict | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default",
                                                            "labels": labels or {}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}


def test_errors_are_status_objects(fake: FakeKube, pki: Pki) -> None:
    cases = [
        ("GET", "/api/v1/namespaces/default/pods", {}, None, 401, "Unauthorized"),
        ("GET", "/api/v1/namespaces/default/pods/nope", ALICE, None, 404, 'pods "nope" not found'),
        ("GET", "/api/v1/namespaces/default/widgets", ALICE, None, 404,
         "the server could not find the requested resource"),
        ("POST", "/api/v1/namespaces/default/pods", {**ALICE, "Content-Type": "application/json"},
         _pod("web-0"), 409, 'pods "web-0" already exists'),
        ("POST", "/api/v1/namespaces/nowhere/configmaps", {**ALICE, "Content-Type": "application/json"},
         {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}, 404, 'namespaces "nowhere" not found'),
        ("PATCH", "/api/v1/namespaces/default/pods/web-0", {**ALICE, "Content-Type": "text/plain"}, b"{}", 415,
         "the body of the request was in an unknown format"),
    ]
    for method, target, headers, body, code, message in cases:
        status, response_headers, raw = call(fake, pki, method, target, headers, body)
        document = json.loads(raw)
        assert (status, document["code"], document["kind"], document["status"]) == (code, code, "Status", "Failure")
        assert document["message"].startswith(message) and document["metadata"] == {}
        assert response_headers["content-type"] == "application/json"


def test_update_with_a_stale_resource_version_conflicts(fake: FakeKube, pki: Pki) -> None:
    cm = fake.store.get("configmaps", "default", "web-config")
    fake.store.update({**cm, "data": {"changed": "1"}})
    status, _, raw = call(fake, pki, "PUT", "/api/v1/namespaces/default/configmaps/web-config",
                          {**ALICE, "Content-Type": "application/json"}, cm)
    assert status == 409 and json.loads(raw)["reason"] == "Conflict"
    fresh = fake.store.get("configmaps", "default", "web-config")
    status, _, raw = call(fake, pki, "PUT", "/api/v1/namespaces/default/configmaps/web-config",
                          {**ALICE, "Content-Type": "application/json"}, {**fresh, "data": {"x": "y"}})
    assert status == 200 and int(json.loads(raw)["metadata"]["resourceVersion"]) > int(fresh["metadata"]["resourceVersion"])


def test_unhandled_errors_become_500_status_without_details(fake: FakeKube, pki: Pki,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    def boom() -> None:
        raise RuntimeError("secret internals")
    monkeypatch.setattr(api_module.discovery, "api_group_list", boom)
    status, _, raw = call(fake, pki, "GET", "/apis")
    assert status == 500 and json.loads(raw)["reason"] == "InternalError" and b"secret" not in raw


def test_list_limit_continue_dry_run_and_deletecollection(fake: FakeKube, pki: Pki) -> None:
    for name in ("a1", "a2", "a3"):
        fake.store.create(_pod(name, {"batch": "a"}))
    status, _, raw = call(fake, pki, "GET", "/api/v1/namespaces/default/pods?labelSelector=batch%3Da&limit=2")
    page = json.loads(raw)
    assert [p["metadata"]["name"] for p in page["items"]] == ["a1", "a2"] and page["metadata"]["continue"]
    _, _, raw = call(fake, pki, "GET", "/api/v1/namespaces/default/pods?labelSelector=batch%3Da&limit=2&continue="
                     + page["metadata"]["continue"])
    assert [p["metadata"]["name"] for p in json.loads(raw)["items"]] == ["a3"]
    status, _, _ = call(fake, pki, "POST", "/api/v1/namespaces/default/pods?dryRun=All",
                        {**ALICE, "Content-Type": "application/json"}, _pod("dry"))
    assert status == 201 and fake.store.get_pod("default", "dry") is None
    status, _, raw = call(fake, pki, "DELETE", "/api/v1/namespaces/default/pods?labelSelector=batch%3Da")
    assert status == 200 and len(json.loads(raw)["items"]) == 3
    assert fake.store.list("pods", "default")[0][0]["metadata"]["name"] == "web-0"


@pytest.fixture
def watch(fake: FakeKube, pki: Pki) -> Iterator[Callable[..., http.client.HTTPResponse]]:
    """Opens watch requests; closes their connections at the end of the test."""
    connections: list[http.client.HTTPSConnection] = []

    def open_watch(target: str, headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
        conn = _connect(fake, pki)
        connections.append(conn)
        conn.request("GET", target, headers=headers or ALICE)
        response = conn.getresponse()
        assert response.status == 200
        return response

    yield open_watch
    for conn in connections:
        conn.close()


def _event(response: http.client.HTTPResponse) -> tuple[str, dict]:
    event = json.loads(response.readline())
    return event["type"], event["object"]


def test_watch_from_a_resource_version_with_selectors_and_timeout(fake: FakeKube, watch) -> None:
    rv = fake.store.resource_version
    fake.store.create(_pod("w1", {"watch": "yes"}))
    response = watch(f"/api/v1/namespaces/default/pods?watch=true&resourceVersion={rv}"
                                 "&labelSelector=watch%3Dyes&timeoutSeconds=30")
    assert response.getheader("content-type") == "application/json"
    kind, obj = _event(response)
    assert (kind, obj["metadata"]["name"]) == ("ADDED", "w1")
    pod = fake.store.get_pod("default", "w1")
    fake.store.update({**pod, "metadata": {**pod["metadata"], "annotations": {"a": "b"}}})
    assert _event(response)[0] == "MODIFIED"
    pod = fake.store.get_pod("default", "w1")
    fake.store.update({**pod, "metadata": {**pod["metadata"], "labels": {"watch": "no"}}})
    assert _event(response)[0] == "DELETED", "leaving the selector looks like a deletion"
    fake.store.create(_pod("w2", {"watch": "yes"}))
    fake.store.delete("pods", "default", "w2")
    assert [_event(response)[0] for _ in range(2)] == ["ADDED", "DELETED"]

    short = watch("/api/v1/namespaces/default/pods?watch=1&timeoutSeconds=0")
    assert [json.loads(line)["type"] for line in short.read().splitlines()] == ["ADDED", "ADDED"]


def test_watch_as_table_and_initial_events_bookmark(watch) -> None:
    accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
    response = watch("/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=5",
                      {**ALICE, "Accept": accept})
    kind, obj = _event(response)
    assert kind == "ADDED" and obj["kind"] == "Table" and obj["rows"][0]["cells"][0] == "web-config"
    bookmark = watch("/api/v1/namespaces/default/configmaps?watch=true&sendInitialEvents=true"
                                 "&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&timeoutSeconds=5")
    assert _event(bookmark)[0] == "ADDED"
    kind, obj = _event(bookmark)
    assert kind == "BOOKMARK" and obj["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


def test_discovery_and_openapi_caching(fake: FakeKube, pki: Pki) -> None:
    aggregated = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
    _, headers, raw = call(fake, pki, "GET", "/apis", {**AUTH, "Accept": aggregated})
    assert headers["content-type"] == "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    assert {item["metadata"]["name"] for item in json.loads(raw)["items"]} == {"apps", "authorization.k8s.io"}
    _, headers, raw = call(fake, pki, "GET", "/apis", AUTH)
    assert json.loads(raw)["kind"] == "APIGroupList"

    _, _, raw = call(fake, pki, "GET", "/openapi/v3", AUTH)
    url = json.loads(raw)["paths"]["api/v1"]["serverRelativeURL"]
    assert url.startswith("/openapi/v3/api/v1?hash=")
    status, headers, raw = call(fake, pki, "GET", url, AUTH)
    schemas = json.loads(raw)["components"]["schemas"]
    containers = schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]
    assert (containers["x-kubernetes-patch-merge-key"], containers["x-kubernetes-patch-strategy"]) == ("name", "merge")
    assert headers["etag"] == f'"{url.split("hash=")[1]}"'
    status, _, raw = call(fake, pki, "GET", url, {**AUTH, "If-None-Match": headers["etag"]})
    assert (status, raw) == (304, b"")
    protobuf_only = {**AUTH, "Accept": "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"}
    assert call(fake, pki, "GET", "/openapi/v2", protobuf_only)[0] == 406
    assert json.loads(call(fake, pki, "GET", "/openapi/v2", AUTH)[2])["swagger"] == "2.0"


def test_requests_are_recorded(fake: FakeKube, pki: Pki) -> None:
    call(fake, pki, "GET", "/api/v1/namespaces/default/pods?limit=1", {**ALICE, "Impersonate-Group": "g1"})
    recorded = fake.requests[-1]
    assert (recorded.method, recorded.target) == ("GET", "/api/v1/namespaces/default/pods?limit=1")
    assert recorded.header("impersonate-user") == "alice" and recorded.header_values("impersonate-group") == ["g1"]


def test_client_certificates_authenticate_when_a_ca_is_configured(fake: FakeKube, pki: Pki, tmp_path: Path) -> None:
    pki.ca.issue_client("alice", ["devs"]).write(tmp_path / "c.crt", tmp_path / "c.key")
    conn = _connect(fake, pki, (tmp_path / "c.crt", tmp_path / "c.key"))
    conn.request("GET", "/api/v1/namespaces/default/pods")
    assert conn.getresponse().status == 200
    conn.close()


def _raw_upgrade(fake: FakeKube, pki: Pki, headers: str) -> bytes:
    conn = _connect(fake, pki)
    conn.connect()
    sock = conn.sock
    sock.sendall((f"GET /api/v1/namespaces/default/pods/web-0/exec?command=ls&command=-la&container=app&stdout=true "
                  f"HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                  f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  f"Sec-WebSocket-Protocol: v5.channel.k8s.io\r\n{headers}\r\n").encode() + b"EARLY")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    conn.close()
    return data


def test_upgrades_are_authorized_before_the_hand_over(fake: FakeKube, pki: Pki,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    assert _raw_upgrade(fake, pki, "").startswith(b"HTTP/1.1 401")
    denied = _raw_upgrade(fake, pki, f"Authorization: Bearer {TOKEN}\r\nImpersonate-User: bob\r\n")
    assert denied.startswith(b"HTTP/1.1 403")

    seen: dict[str, Any] = {}

    async def serve_upgrade(request: UpgradeRequest, initial: bytes, reader: Any, writer: Any, store: Any) -> None:
        seen.update(request=request, initial=initial, pod=store.get_pod(request.namespace, request.pod))
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        await writer.drain()
        writer.close()

    monkeypatch.setitem(sys.modules, "tests.fakekube.remotecommand",
                        types.SimpleNamespace(serve_upgrade=serve_upgrade))
    answer = _raw_upgrade(fake, pki, f"Authorization: Bearer {TOKEN}\r\nImpersonate-User: alice\r\n")
    assert answer.startswith(b"HTTP/1.1 101")
    request: UpgradeRequest = seen["request"]
    assert (request.kind, request.namespace, request.pod, request.user, request.method) == \
        ("exec", "default", "web-0", "alice", "GET")
    assert request.query["command"] == ["ls", "-la"] and seen["initial"] == b"EARLY"
    assert request.header_values(b"sec-websocket-protocol") == [b"v5.channel.k8s.io"]
    assert seen["pod"]["metadata"]["name"] == "web-0"


def test_command_line_runs_until_sigterm(pki: Pki, tmp_path: Path) -> None:
    (tmp_path / "token").write_text(TOKEN + "\n")
    (tmp_path / "rbac.json").write_text(json.dumps({"users": {"alice": "admin"}}))
    ready = tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-m", "tests.fakekube", "--port", "0", "--cert", str(pki.server_cert),
                             "--key", str(pki.server_key), "--token-file", str(tmp_path / "token"),
                             "--rbac-file", str(tmp_path / "rbac.json"), "--ready-file", str(ready)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[2])
    try:
        line = proc.stdout.readline()           # printed once listening, before the ready file
        url = line.split()[-1]
        assert line.startswith("fakekube listening on https://127.0.0.1:")
        port = int(url.rsplit(":", 1)[1])
        context = ssl.create_default_context(cafile=str(pki.ca_cert))
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
        conn.request("GET", "/version", headers=AUTH)
        assert json.loads(conn.getresponse().read())["gitVersion"] == "v1.32.4"
        conn.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert ready.read_text().strip() == url
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
