"""The real kubectl against FakeKube directly, as the gateway would reach it (token + --as)."""
from __future__ import annotations

import json

from tests.fakekube.server import FakeKube

from .conftest import TOKEN, Kubectl

POD = """apiVersion: v1
kind: Pod
metadata:
  name: demo
  labels: {app: demo}
spec:
  containers:
  - name: main
    image: nginx:1
    ports: [{containerPort: 80}]
    env: [{name: A, value: "1"}]
  - name: side
    image: busybox:1
"""


def _pod(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}


def test_version_reports_the_server(kubectl: Kubectl) -> None:
    out = kubectl.ok("version", "-o", "json")
    assert json.loads(out)["serverVersion"]["gitVersion"] == "v1.32.4"


def test_api_resources_lists_kinds_and_short_names(kubectl: Kubectl) -> None:
    out = kubectl.ok("api-resources")
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert {"pods", "configmaps", "namespaces", "deployments", "selfsubjectaccessreviews"} <= set(rows)
    assert " po " in rows["pods"] and " cm " in rows["configmaps"] and " ns " in rows["namespaces"]


def test_get_prints_the_server_side_table(kubectl: Kubectl, fake: FakeKube) -> None:
    lines = kubectl.ok("get", "pods").splitlines()
    assert lines[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert lines[1].split()[:4] == ["web-0", "2/2", "Running", "0"]
    list_request = next(r for r in fake.requests if r.target.startswith("/api/v1/namespaces/default/pods?"))
    assert "as=Table" in list_request.header("accept")
    # The caller's identity arrives only as impersonation, next to the gateway's own token.
    assert list_request.header("authorization") == f"Bearer {TOKEN}"
    assert list_request.header("impersonate-user") == "alice"


def test_get_json(kubectl: Kubectl) -> None:
    pod = json.loads(kubectl.ok("get", "pod", "web-0", "-o", "json"))
    assert pod["kind"] == "Pod" and [c["name"] for c in pod["spec"]["containers"]] == ["app", "sidecar"]
    assert int(pod["metadata"]["resourceVersion"]) > 0


def test_get_watch_prints_objects_added_later(kubectl: Kubectl, fake: FakeKube) -> None:
    watch = kubectl.stream("get", "pods", "-w")
    assert watch.line().split()[0] == "NAME"
    watch.until(lambda line: line.startswith("web-0"))
    fake.store.create(_pod("late"))
    assert watch.until(lambda line: line.startswith("late")).split()[1:3] == ["1/1", "Running"]


def test_apply_client_side_twice_then_changed(kubectl: Kubectl, fake: FakeKube) -> None:
    assert kubectl.ok("apply", "-f", "-", stdin=POD).strip() == "pod/demo created"
    assert kubectl.ok("apply", "-f", "-", stdin=POD).strip() == "pod/demo unchanged"
    changed = POD.replace("nginx:1", "nginx:2")
    result = kubectl.run("apply", "-f", "-", stdin=changed)
    assert result.stdout.strip() == "pod/demo configured" and "warning" not in result.stderr
    pod = fake.store.get("pods", "default", "demo")
    assert [c["image"] for c in pod["spec"]["containers"]] == ["nginx:2", "busybox:1"]
    assert pod["spec"]["containers"][0]["env"] == [{"name": "A", "value": "1"}]
    patch = next(r for r in fake.requests if r.method == "PATCH")
    assert patch.header("content-type") == "application/strategic-merge-patch+json"


def test_apply_server_side(kubectl: Kubectl, fake: FakeKube) -> None:
    config = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ssa}\ndata: {x: '1'}\n"
    assert kubectl.ok("apply", "--server-side", "-f", "-", stdin=config).strip() == "configmap/ssa serverside-applied"
    kubectl.ok("apply", "--server-side", "-f", "-", stdin=config.replace("'1'", "'2'"))
    assert fake.store.get("configmaps", "default", "ssa")["data"] == {"x": "2"}
    apply = [r for r in fake.requests if r.header("content-type") == "application/apply-patch+yaml"]
    assert len(apply) == 2 and "fieldManager=kubectl" in apply[0].target


def test_patch_strategic_merge_and_json(kubectl: Kubectl, fake: FakeKube) -> None:
    kubectl.ok("patch", "pod", "web-0", "-p", '{"spec":{"containers":[{"name":"sidecar","image":"busybox:2"}]}}')
    images = [c["image"] for c in fake.store.get_pod("default", "web-0")["spec"]["containers"]]
    assert images == ["nginx:1.27", "busybox:2"]
    kubectl.ok("patch", "cm", "web-config", "--type", "merge", "-p", '{"data":{"new":"1","log-level":null}}')
    kubectl.ok("patch", "cm", "web-config", "--type", "json", "-p",
               '[{"op":"replace","path":"/data/new","value":"2"},{"op":"remove","path":"/data/greeting"}]')
    assert fake.store.get("configmaps", "default", "web-config")["data"] == {"new": "2"}
    failed = kubectl.run("patch", "cm", "web-config", "--type", "json", "-p",
                         '[{"op":"test","path":"/data/new","value":"nope"}]')
    assert failed.returncode != 0 and "test failed" in failed.stderr


def test_delete_waits_for_the_object_to_go(kubectl: Kubectl, fake: FakeKube) -> None:
    assert kubectl.ok("delete", "pod", "web-0").strip() == 'pod "web-0" deleted'
    assert fake.store.get_pod("default", "web-0") is None
    delete = next(r for r in fake.requests if r.method == "DELETE")
    assert delete.target == "/api/v1/namespaces/default/pods/web-0"
    missing = kubectl.run("get", "pod", "web-0")
    assert 'pods "web-0" not found' in missing.stderr


def test_logs_and_follow(kubectl: Kubectl, fake: FakeKube) -> None:
    assert kubectl.ok("logs", "web-0", "-c", "app").splitlines() == ["nginx: starting", "nginx: ready to serve on :80"]
    follow = kubectl.stream("logs", "-f", "web-0", "-c", "sidecar")
    assert follow.line() == "sidecar: started"
    fake.append_log("default", "web-0", "sidecar", "one more line")
    assert follow.line() == "one more line"
    fake.store.delete("pods", "default", "web-0")          # the stream ends with the pod
    assert follow.wait() == 0


def test_auth_can_i_yes_and_no(kubectl: Kubectl, fake: FakeKube) -> None:
    assert kubectl.run("auth", "can-i", "create", "pods").stdout.strip() == "yes"
    denied = kubectl.run("auth", "can-i", "create", "pods", as_user="bob")
    assert (denied.returncode, denied.stdout.strip()) == (1, "no")
    assert kubectl.run("auth", "can-i", "list", "pods", as_user="bob").stdout.strip() == "yes"
    viewer = kubectl.run("auth", "can-i", "delete", "configmaps", as_user="carol", as_groups=("devs",))
    assert viewer.stdout.strip() == "yes"
    review = next(r for r in fake.requests if r.target.startswith("/apis/authorization.k8s.io/v1/selfsubject"))
    assert review.header("content-type") == "application/vnd.kubernetes.protobuf"


def test_view_user_cannot_create(kubectl: Kubectl) -> None:
    result = kubectl.run("create", "configmap", "nope", "--from-literal=a=b", as_user="bob")
    assert result.returncode == 1
    assert ('configmaps is forbidden: User "bob" cannot create resource "configmaps" in API group "" '
            'in the namespace "default"') in result.stderr


def test_impersonated_groups_reach_the_server(kubectl: Kubectl, fake: FakeKube) -> None:
    kubectl.ok("get", "cm", as_user="carol", as_groups=("viewers", "extra"))
    request = next(r for r in fake.requests if r.target.startswith("/api/v1/namespaces/default/configmaps"))
    assert request.header_values("impersonate-group") == ["viewers", "extra"]
    denied = kubectl.run("get", "cm", as_user="carol")
    assert 'User "carol" cannot list resource "configmaps"' in denied.stderr


def test_typed_creates_send_protobuf_and_scale(kubectl: Kubectl, fake: FakeKube) -> None:
    kubectl.ok("create", "configmap", "c1", "--from-literal=a=b")
    kubectl.ok("create", "secret", "generic", "s1", "--from-literal=a=b")
    kubectl.ok("create", "deployment", "d1", "--image=nginx", "--replicas=2")
    assert fake.store.get("configmaps", "default", "c1")["data"] == {"a": "b"}
    assert fake.store.get("secrets", "default", "s1")["type"] == "Opaque"
    assert next(r for r in fake.requests if r.target.startswith("/api/v1/namespaces/default/configmaps")
                and r.method == "POST").header("content-type") == "application/vnd.kubernetes.protobuf"
    assert kubectl.ok("scale", "deployment", "d1", "--replicas=3").strip() == "deployment.apps/d1 scaled"
    assert kubectl.ok("get", "deploy", "d1").splitlines()[1].split()[:2] == ["d1", "3/3"]
