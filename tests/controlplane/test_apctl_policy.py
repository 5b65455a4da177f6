"""apctl for the people-facing policy against a running control plane: a person requests, an
approver approves, break-glass, sessions through the portal's token, settings; -o json|yaml and
one-line errors with exit codes."""
from __future__ import annotations

import json
import re

import pytest
import yaml

from controlplane.apctl import main
from controlplane.api.v1 import tokens_pb2, tokens_pb2_grpc

from .planes import ADMIN, ADMIN_TOKEN
from .test_access import PORTAL_TOKEN, plane  # noqa: F401 (the plane with a portal token)

POLICY = """\
kind: Cluster
name: prod-eu
endpoint: https://127.0.0.1:6443
credential: {kind: token, ref: "file:prod.token"}
labels: {env: prod}
---
kind: Role
name: viewer
rules:
- {verbs: [get, list], api_groups: ["*"], resources: ["*"]}
"""


@pytest.fixture
def apctl(plane, tmp_path, capsys, channel):  # noqa: F811
    """apctl_as(token)(*argv) → (exit code, stdout, stderr); tokens: "admin", "portal" or a person's name."""
    tokens = tokens_pb2_grpc.TokenServiceStub(channel)

    def token_of(who: str, groups: tuple[str, ...]) -> str:
        if who in ("admin", "portal"):
            return {"admin": ADMIN_TOKEN, "portal": PORTAL_TOKEN}[who]
        return tokens.IssueToken(tokens_pb2.IssueTokenRequest(user=who, groups=groups), metadata=ADMIN).secret

    def as_(who: str, *groups: str):
        settings = tmp_path / f"apctl-{who}.yaml"
        settings.write_text(f"address: 127.0.0.1:{plane.port}\ntoken: {token_of(who, groups)}\n")

        def run(*argv: str) -> tuple[int, str, str]:
            code = main(["--config", str(settings), *argv])
            captured = capsys.readouterr()
            return code, captured.out, captured.err
        return run

    admin = as_("admin")
    (tmp_path / "policy.yaml").write_text(POLICY)
    assert admin("apply", "-f", str(tmp_path / "policy.yaml"))[0] == 0
    return as_


def test_request_approve_and_list(apctl):
    admin, ann, bob = apctl("admin"), apctl("ann", "devs"), apctl("bob", "approvers")
    code, out, _ = admin("settings", "set", "approver_group=approvers", "access_request_max_duration=4h")
    assert code == 0 and re.fullmatch(r"settings updated at revision \d+\n", out)
    code, out, err = ann("access", "request", "viewer", "--cluster", "prod-eu", "--duration", "2h",
                         "--reason", "INC-7", "-o", "json")
    request = json.loads(out)
    assert (code, err, request["kind"], request["state"], request["duration"]) == (0, "", "AccessRequest", "pending",
                                                                                   "7200s")
    assert ann("access", "approve", request["id"]) == (
        1, "", "apctl: PERMISSION_DENIED: 'ann' is not a member of the approver group 'approvers'\n")
    code, out, _ = bob("access", "approve", request["id"], "--reason", "go")
    assert code == 0
    assert re.fullmatch(rf'access request {request["id"]} approved: "ann" has role "viewer" on "prod-eu" until \S+Z\n',
                        out), out
    code, out, _ = bob("access", "list", "--user", "ann")
    header, row = out.splitlines()
    assert header.split()[:6] == ["ID", "USER", "ROLE", "CLUSTER", "DURATION", "STATE"]
    assert row.split()[:7] == [request["id"], "ann", "viewer", "prod-eu", "7200s", "approved", "bob"]
    code, out, err = ann("access", "request", "viewer", "--cluster", "prod-eu", "--duration", "5h", "--reason", "x")
    assert (code, out) == (2, "") and err.startswith("apctl: INVALID_ARGUMENT: duration: at most 14400 s")
    with pytest.raises(SystemExit) as exited:   # argparse: usage line and exit 2
        ann("access", "request", "viewer", "--cluster", "prod-eu", "--duration", "soon", "--reason", "x")
    assert exited.value.code == 2


def test_breakglass_sessions_and_settings(apctl):
    admin, sam = apctl("admin"), apctl("sam", "sre")
    assert admin("settings", "set", "break_glass.role=viewer", "break_glass.group=sre",
                 "break_glass.clusters={selector: {env: prod}}", "break_glass.max_duration=30m")[0] == 0
    code, out, _ = admin("settings", "get")
    settings = yaml.safe_load(out)
    assert settings["break_glass"] == {"role": "viewer", "group": "sre", "clusters": {"selector": {"env": "prod"}},
                                       "max_duration": "1800s"}
    code, out, err = sam("breakglass", "activate", "--cluster", "prod-eu", "--reason", "outage")
    assert (code, err) == (0, "")
    assert re.fullmatch(r'break-glass bg-[0-9a-f]+: role "viewer" on "prod-eu" from \S+Z until \S+Z '
                        r'\(this activation is an alert\)\n', out), out
    activation = re.match(r"break-glass (bg-[0-9a-f]+)", out).group(1)
    code, out, _ = admin("get", "bindings")
    header, row = out.splitlines()
    assert header.split() == ["NAME", "ROLE", "SUBJECTS", "CLUSTERS", "EFFECT", "UNTIL", "GRANT", "REVISION"]
    assert row.split()[:5] == [activation, "viewer", "user:sam", "prod-eu", "allow"]
    assert row.split()[6] == f"break_glass:{activation}"
    code, out, err = sam("breakglass", "activate", "--cluster", "prod-eu", "--reason", "outage", "--duration", "1h")
    assert (code, out, err) == (2, "", "apctl: INVALID_ARGUMENT: duration: at most 1800 s "
                                       "(settings.break_glass.max_duration)\n")
    assert admin("settings", "set", "break_glass_enabled=false")[0] == 0
    code, _, err = sam("breakglass", "activate", "--cluster", "prod-eu", "--reason", "outage")
    assert code == 1 and "FAILED_PRECONDITION: break-glass is disabled fleet-wide" in err
    assert admin("settings", "set", "nonsense=1")[0] == 2

    portal = apctl("portal")
    code, out, _ = portal("session", "create", "ann", "-o", "yaml")
    session = yaml.safe_load(out)
    assert (code, session["kind"], session["user"]) == (0, "Session", "ann")
    assert portal("session", "touch", session["id"]) == (0, f"session {session['id']} touched\n", "")
    code, out, err = admin("kubeconfig", "ann", "--cluster", "prod-eu", "--session", session["id"])
    assert code == 0 and yaml.safe_load(out)["users"]
    code, out, _ = portal("session", "logout", session["id"])
    assert re.fullmatch(rf"session {session['id']} logged out; its credentials are revoked at revision \d+\n", out)
    code, out, _ = admin("session", "list")
    assert out.splitlines()[1].split()[-2:][-1] == "logout"
    assert portal("session", "logout", session["id"]) == (
        1, "", f"apctl: FAILED_PRECONDITION: session '{session['id']}' has already ended (logout)\n")


DENY = """\
kind: Binding
name: no-contractors-in-prod
role: viewer
effect: deny
subjects: [{kind: group, name: contractors}]
clusters:
  match_expressions: [{key: env, operator: In, values: [prod]}]
conditions:
  channels: [kubectl]
  source_cidrs: [10.0.0.0/8]
  schedule: {days: [sat, sun]}
"""


def test_apply_of_the_new_binding_fields_is_idempotent(apctl, tmp_path):
    admin = apctl("admin")
    (tmp_path / "deny.yaml").write_text(DENY)
    assert admin("apply", "-f", str(tmp_path / "deny.yaml")) == (0, "binding/no-contractors-in-prod created\n", "")
    assert admin("apply", "-f", str(tmp_path / "deny.yaml")) == (0, "binding/no-contractors-in-prod unchanged\n", "")
    code, out, _ = admin("get", "binding", "no-contractors-in-prod", "-o", "yaml")
    shown = yaml.safe_load(out)
    assert (shown["effect"], shown["conditions"]["schedule"]) == ("deny", {"days": ["sat", "sun"], "start": "00:00",
                                                                           "end": "24:00"})
    (tmp_path / "shown.yaml").write_text(out)   # what get prints applies as it is
    assert admin("apply", "-f", str(tmp_path / "shown.yaml"))[:2] == (0, "binding/no-contractors-in-prod unchanged\n")
