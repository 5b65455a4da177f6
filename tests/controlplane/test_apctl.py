"""apctl against a running control plane: idempotent apply, get as tables and JSON, revoke --wait
measured against a gateway that applies, kubeconfig, audit, and one-line errors with exit codes."""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap

import pytest
import yaml

from controlplane.apctl import main
from controlplane.model import EventQuery
from dataplane.auditship import AuditShipper

from .planes import READER_TOKEN, FakeGateway
from .test_audit import eventually, spool_events

POLICY = textwrap.dedent("""\
    kind: Binding
    name: devs-view
    role: viewer
    subjects: [{kind: group, name: devs}]
    clusters: {selector: {env: dev}}
    valid_until: 2999-01-01T00:00:00Z
    ---
    kind: Cluster
    name: sandbox
    endpoint: https://127.0.0.1:6443
    credential: {kind: token, ref: "file:sandbox.token"}
    labels: {env: dev, region: eu}
    ---
    kind: Role
    name: viewer
    rules:
    - verbs: [get, list, watch]
      api_groups: ["*"]
      resources: ["*"]
    ---
    """)


@pytest.fixture
def apctl(plane, tmp_path, capsys):
    """Runs apctl in this process as an admin; returns (exit code, stdout, stderr)."""
    settings = tmp_path / "apctl.yaml"
    settings.write_text(f"address: 127.0.0.1:{plane.port}\ntoken_file: admin.token\n")

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(["--config", str(settings), *argv])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def test_apply_is_idempotent(apctl, tmp_path, plane):
    (tmp_path / "policy.yaml").write_text(POLICY)
    assert apctl("apply", "-f", str(tmp_path / "policy.yaml")) == (
        0, "cluster/sandbox created\nrole/viewer created\nbinding/devs-view created\n", "")
    revision = plane.store.revision()
    assert apctl("apply", "-f", str(tmp_path / "policy.yaml")) == (
        0, "cluster/sandbox unchanged\nrole/viewer unchanged\nbinding/devs-view unchanged\n", "")
    assert plane.store.revision() == revision

    (tmp_path / "policy.yaml").write_text(POLICY.replace("region: eu", "region: us"))
    code, out, _ = apctl("apply", "-f", str(tmp_path / "policy.yaml"))
    assert (code, out.splitlines()[0]) == (0, "cluster/sandbox configured")
    assert plane.store.revision() == revision + 1

    assert apctl("delete", "-f", str(tmp_path / "policy.yaml")) == (   # dependents first
        0, "binding/devs-view deleted\nrole/viewer deleted\ncluster/sandbox deleted\n", "")


def test_get_as_table_json_and_yaml(apctl, tmp_path):
    (tmp_path / "policy.yaml").write_text(POLICY)
    apctl("apply", "-f", str(tmp_path / "policy.yaml"))
    code, out, _ = apctl("get", "clusters")
    assert code == 0
    header, row = out.splitlines()
    assert header.split() == ["NAME", "ENDPOINT", "LABELS", "TUNNEL", "AGENTS", "TUNNELS", "LAST", "SEEN",
                              "REVISION"]
    assert row.split() == ["sandbox", "https://127.0.0.1:6443", "env=dev,region=eu", "no", "-", "-", "-", "1"]

    code, out, _ = apctl("get", "bindings", "-o", "json")
    listed = json.loads(out)
    assert listed["kind"] == "List"
    assert [(b["kind"], b["name"], b["valid_until"]) for b in listed["items"]] == [
        ("Binding", "devs-view", "2999-01-01T00:00:00Z")]

    # what -o yaml prints applies as it is
    code, out, _ = apctl("get", "role", "viewer", "-o", "yaml")
    (tmp_path / "viewer.yaml").write_text(out)
    assert apctl("apply", "-f", str(tmp_path / "viewer.yaml"))[:2] == (0, "role/viewer unchanged\n")

    assert apctl("get", "cluster", "nope") == (1, "", "apctl: NOT_FOUND: cluster 'nope' does not exist\n")
    code, _, err = apctl("get", "gateways")
    assert (code, err) == (0, "No gateways found.\n")


def test_revoke_wait_reports_the_measured_propagation(apctl, redis_url, plane):
    with FakeGateway(redis_url, "gw-1"), FakeGateway(redis_url, "gw-2"):
        code, out, err = apctl("revoke", "user", "mallory", "--wait", "--timeout", "10s")
        assert (code, err) == (0, "")
        assert re.fullmatch(r'revoked user "mallory"; applied by 2 gateways in \d+ ms\n', out), out
        code, out, _ = apctl("get", "gateways")
        revision = str(plane.store.revision())
        assert [line.split()[:3] for line in out.splitlines()[1:]] == [
            ["gw-1", socket.gethostname(), revision], ["gw-2", socket.gethostname(), revision]]
    assert apctl("revoke", "group", "contractors") == (0, f'revoked group "contractors" at revision '
                                                          f'{plane.store.revision()}\n', "")


def test_kubeconfig_and_audit(apctl, tmp_path, plane, redis_client):
    (tmp_path / "policy.yaml").write_text(POLICY)
    apctl("apply", "-f", str(tmp_path / "policy.yaml"))
    code, out, err = apctl("kubeconfig", "alice", "--cluster", "sandbox", "--group", "devs", "--ttl", "1h30m")
    assert code == 0
    assert yaml.safe_load(out)["clusters"][0]["cluster"]["server"].endswith("/clusters/sandbox")
    serial = plane.store.certificates()[0].serial
    assert re.fullmatch(rf'certificate {serial} for "alice" expires \S+Z\n', err), err
    assert apctl("get", "certificates")[1].splitlines()[1].split()[:4] == [serial, "alice", "devs", "sandbox"]
    code, out, err = apctl("kubeconfig", "alice", "--cluster", "sandbox", "--ttl", "48h")
    assert (code, out) == (2, "") and err.startswith("apctl: INVALID_ARGUMENT: ttl: must be")

    spool_events(tmp_path / "spool.jsonl", 0, 10)
    while AuditShipper(tmp_path / "spool.jsonl", redis_client).ship_once():
        pass
    eventually(lambda: len(plane.store.audit_events(EventQuery())) == 10)
    code, out, _ = apctl("audit", "--user", "alice", "--decision", "deny", "--since", "2026-11-23T08:00:00Z")
    lines = out.splitlines()
    assert lines[0].split() == ["TIME", "USER", "CLUSTER", "VERB", "RESOURCE", "DECISION", "CODE"]
    assert [line.split()[1:] for line in lines[1:]] == [["alice", "sandbox", "list", "default/pods", "deny", "403"]]
    code, out, _ = apctl("audit", "--verb", "get", "-o", "json")
    assert [e["id"] for e in json.loads(out)["items"]] == ["req-00009", "req-00007", "req-00005", "req-00003",
                                                           "req-00001"]


BAD_MANIFESTS = [
    ("kind: Cluster\nname: [unclosed\n", "not valid YAML at line 3"),
    ("kind: Cluster\nname: x\nendpiont: https://x\n", 'document 1 (Cluster): Message type '
                                                       '"accesspoint.controlplane.v1.Cluster" has no field named '
                                                       '"endpiont"'),
    ("kind: Secret\nname: x\n", "document 1: kind must be one of Cluster, Role, Binding"),
    ("kind: Role\nrules: []\n", "document 1 (Role): name is required"),
    ("kind: Role\nname: a\n---\nkind: Role\nname: a\n", "document 2: role/a is declared twice"),
]


@pytest.mark.parametrize(("text", "message"), BAD_MANIFESTS, ids=[m for _, m in BAD_MANIFESTS])
def test_a_bad_manifest_exits_2_with_one_line_and_applies_nothing(apctl, tmp_path, plane, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    code, out, err = apctl("apply", "-f", str(path))
    assert (code, out) == (2, "")
    assert err.startswith(f"apctl: {path}: {message}") and err.count("\n") == 1, err
    assert plane.store.revision() == 0


def test_invalid_input_is_exit_2_and_other_failures_exit_1(apctl, tmp_path, plane):
    (tmp_path / "bad-cluster.yaml").write_text("kind: Cluster\nname: Bad_Name\nendpoint: https://x\n"
                                               "credential: {kind: token, ref: 'file:x'}\n")
    code, out, err = apctl("apply", "-f", str(tmp_path / "bad-cluster.yaml"))
    assert (code, out) == (2, "") and err.startswith("apctl: cluster/Bad_Name: INVALID_ARGUMENT: cluster.name")
    assert apctl("delete", "role", "ghost") == (1, "", "apctl: role/ghost: NOT_FOUND: role 'ghost' does not exist\n")

    reader = tmp_path / "reader.yaml"
    reader.write_text(f"address: 127.0.0.1:{plane.port}\ntoken: {READER_TOKEN}\n")
    code = main(["--config", str(reader), "revoke", "user", "x"])
    assert code == 1


def test_the_console_script_never_shows_a_traceback(tmp_path, plane):
    """As a process: settings from APCTL_CONFIG, and errors as one line."""
    settings = tmp_path / "apctl.yaml"
    settings.write_text(f"address: 127.0.0.1:{plane.port}\ntoken_file: admin.token\n")
    run = lambda *argv, **env: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "controlplane.apctl", *argv], capture_output=True, text=True, timeout=60,
        env={**os.environ, **env})
    listed = run("get", "roles", APCTL_CONFIG=str(settings))
    assert (listed.returncode, listed.stderr) == (0, "No roles found.\n")
    missing = run("get", "roles", APCTL_CONFIG="")
    assert (missing.returncode, missing.stderr) == (2, "apctl: no settings: pass --config FILE or set APCTL_CONFIG\n")
    (tmp_path / "far.yaml").write_text("address: 10.1.2.3:7443\ntoken: secret-token-value\n")
    far = run("--config", str(tmp_path / "far.yaml"), "get", "roles")
    assert far.returncode == 2 and "set ca" in far.stderr and "secret-token-value" not in far.stderr
    usage = run("get")
    assert usage.returncode == 2 and "Traceback" not in usage.stderr
