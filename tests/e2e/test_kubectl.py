"""The real kubectl through the gateway to the sandbox cluster, as a person would use it."""
from __future__ import annotations

import json
import socket
import textwrap

import pytest

from dataplane.audit import read_events

CONFIGMAP = textwrap.dedent("""\
    apiVersion: v1
    kind: ConfigMap
    metadata:
      name: {name}
      namespace: default
    data:
      colour: {colour}
    """)


def configmap(name: str, colour: str) -> bytes:
    return CONFIGMAP.format(name=name, colour=colour).encode()


@pytest.fixture(params=["admin", "readonly"])
def any_user(request, admin, readonly):
    return {"admin": admin, "readonly": readonly}[request.param]


# -- reading, with both kubeconfig kinds (client certificate and token) ---------------------------

def test_version_reports_the_clusters_own(any_user):
    out = json.loads(any_user.ok("version", "-o", "json"))
    assert out["serverVersion"]["gitVersion"] == "v1.32.4"


def test_api_resources(any_user):
    out = any_user.ok("api-resources")
    assert "pods" in out and "configmaps" in out and "namespaces" in out


def test_get_pods_table(any_user):
    out = any_user.ok("get", "pods")
    assert "NAME" in out and "web-0" in out


def test_get_watch_streams_events(any_user, admin):
    watch = any_user.start("get", "configmaps", "-w", "--output-watch-events")
    try:
        watch.expect(r"NAME")
        admin.ok("create", "configmap", f"watched-{id(any_user)}", "--from-literal=a=b")
        watch.expect(rf"ADDED\s+watched-{id(any_user)}")
    finally:
        watch.stop()
        admin.run("delete", "configmap", f"watched-{id(any_user)}")


def test_logs(any_user):
    assert "nginx: ready to serve" in any_user.ok("logs", "web-0", "-c", "app")


def test_logs_follow_streams_new_lines(any_user, fake_cluster):
    follow = any_user.start("logs", "-f", "web-0", "-c", "app")
    try:
        follow.expect("ready to serve")
        line = f"line-for-{id(any_user)}"
        fake_cluster.append_log("default", "web-0", "app", line)
        follow.expect(line)
    finally:
        follow.stop()


def test_auth_can_i(admin, readonly):
    assert admin.ok("auth", "can-i", "create", "pods").strip() == "yes"
    assert readonly.ok("auth", "can-i", "get", "pods").strip() == "yes"
    done = readonly.run("auth", "can-i", "create", "pods")
    assert done.stdout.decode().strip() == "no"


# -- changing things (client-certificate admin) ----------------------------------------------------

def test_apply_client_side_then_unchanged(admin):
    assert "created" in admin.ok("apply", "-f", "-", input=configmap("applied", "blue"))
    assert "unchanged" in admin.ok("apply", "-f", "-", input=configmap("applied", "blue"))
    assert "configured" in admin.ok("apply", "-f", "-", input=configmap("applied", "green"))
    assert admin.ok("get", "configmap", "applied", "-o", "jsonpath={.data.colour}") == "green"


def test_apply_server_side(admin):
    assert "serverside-applied" in admin.ok("apply", "--server-side", "-f", "-", input=configmap("ssa", "red"))
    assert admin.ok("get", "configmap", "ssa", "-o", "jsonpath={.data.colour}") == "red"


@pytest.mark.parametrize("kind,patch,expected", [
    ("strategic", '{"data":{"colour":"s"}}', "s"),
    ("merge", '{"data":{"colour":"m"}}', "m"),
    ("json", '[{"op":"replace","path":"/data/colour","value":"j"}]', "j"),
])
def test_patch_types(admin, kind, patch, expected):
    name = f"patched-{kind}"
    admin.ok("create", "configmap", name, "--from-literal=colour=none")
    assert "patched" in admin.ok("patch", "configmap", name, "--type", kind, "-p", patch)
    assert admin.ok("get", "configmap", name, "-o", "jsonpath={.data.colour}") == expected


def test_delete(admin):
    admin.ok("create", "configmap", "doomed", "--from-literal=a=b")
    assert 'configmap "doomed" deleted' in admin.ok("delete", "configmap", "doomed")
    assert "NotFound" in admin.fails("get", "configmap", "doomed")


# -- exec, cp, port-forward ------------------------------------------------------------------------

@pytest.mark.parametrize("websockets", ["true", "false"], ids=["websocket", "spdy"])
def test_exec(admin, websockets):
    env = {"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": websockets}
    assert admin.ok("exec", "web-0", "-c", "app", "--", "echo", "hello", "there", env=env) == "hello there\n"


def test_exec_with_stdin(admin):
    assert admin.ok("exec", "-i", "web-0", "-c", "app", "--", "cat", input=b"piped\nbytes\n") == "piped\nbytes\n"


def test_exec_exit_code(admin):
    done = admin.run("exec", "web-0", "-c", "app", "--", "sh", "-c", "exit 3")
    assert done.returncode == 3, done.stderr


def test_cp_both_ways(admin, tmp_path):
    upload = tmp_path / "up.bin"
    upload.write_bytes(bytes(range(256)) * 300)
    admin.ok("cp", str(upload), "default/web-0:/tmp/up.bin", "-c", "app")
    download = tmp_path / "down.bin"
    admin.ok("cp", "default/web-0:/tmp/up.bin", str(download), "-c", "app")
    assert download.read_bytes() == upload.read_bytes()


@pytest.mark.parametrize("websockets", ["true", "false"], ids=["websocket", "spdy"])
def test_port_forward_round_trip(admin, websockets):
    forward = admin.start("port-forward", "pod/web-0", ":8080",
                          env={"KUBECTL_PORT_FORWARD_WEBSOCKETS": websockets})
    try:
        port = int(forward.expect(r"Forwarding from 127\.0\.0\.1:(\d+)").group(1))
        with socket.create_connection(("127.0.0.1", port), timeout=15) as conn:
            conn.sendall(b"ping through the gateway")
            received = b""
            while len(received) < len(b"ping through the gateway"):
                chunk = conn.recv(4096)
                assert chunk, "port-forward closed before the echo came back"
                received += chunk
        assert received == b"ping through the gateway"
    finally:
        forward.stop()


# -- what the read-only user may not do, and what the audit says -----------------------------------

def test_readonly_user_is_forbidden_to_change(readonly, stack):
    err = readonly.fails("create", "-f", "-", input=configmap("nope", "grey"))
    assert "Error from server (Forbidden)" in err
    assert 'cannot create resource "configmaps"' in err
    err = readonly.fails("delete", "pod", "web-0")
    assert "Error from server (Forbidden)" in err
    err = readonly.fails("exec", "web-0", "-c", "app", "--", "echo", "hi")
    assert "Forbidden" in err or "forbidden" in err

    denials = [e for e in read_events(stack.state.audit_spool)
               if e.get("user") == "bob" and e.get("decision") == "deny"]
    verbs = {(e["verb"], e["resource"]) for e in denials}
    assert ("create", "configmaps") in verbs and ("delete", "pods") in verbs
    assert all(e["reason"] for e in denials)


def test_allowed_requests_are_audited_with_the_deciding_binding(admin, stack):
    admin.ok("get", "configmaps")
    events = [e for e in read_events(stack.state.audit_spool)
              if e.get("user") == "alice" and e.get("resource") == "configmaps" and e.get("verb") == "list"]
    assert events and events[-1]["decision"] == "allow"
    assert events[-1]["binding"] == "devs-admin" and events[-1]["role"] == "cluster-admin"
    assert events[-1]["code"] == 200


def test_impersonation_needs_a_grant(readonly, admin):
    err = readonly.fails("get", "pods", "--as", "alice")
    assert "Forbidden" in err and "impersonate" in err
    # alice is cluster-admin at the edge, which includes impersonate; the sandbox then decides
    # for the impersonated user.
    assert "web-0" in admin.ok("get", "pods", "--as", "bob", "--as-group", "viewers")


def test_upstream_sees_only_the_gateway_credential_and_impersonation(admin, readonly, fake_cluster, stack):
    admin.ok("get", "pods")
    readonly.ok("get", "pods")
    seen = fake_cluster.requests
    assert seen
    for request in seen:
        assert request.header_values("authorization") == [f"Bearer {stack.sandbox_token}"]
        assert request.header("impersonate-user") in {"alice", "bob"}
    users = {r.header("impersonate-user") for r in seen}
    assert {"alice", "bob"} <= users


# kubectl's words for a 401.
UNAUTHORIZED = "You must be logged in to the server"


def test_revoked_certificate_and_unknown_token_get_401(stack, kubectl_for, fake_cluster):
    before = len(fake_cluster.requests)
    revoked = kubectl_for(stack.revoked_kubeconfig)
    assert UNAUTHORIZED in revoked.fails("get", "pods")
    unknown = kubectl_for(stack.unknown_token_kubeconfig)
    assert UNAUTHORIZED in unknown.fails("get", "pods")
    assert len(fake_cluster.requests) == before, "an unauthenticated request reached the cluster"
    refused = [e for e in read_events(stack.state.audit_spool) if e.get("code") == 401]
    assert refused and all(e["decision"] == "deny" for e in refused)
