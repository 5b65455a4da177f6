"""The quick start as a person runs it: `accesspoint up`, then kubectl with the printed kubeconfigs."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest

from dataplane import sandbox
from dataplane.up import free_port
from tests.e2e.kubectl import Kubectl, Streaming


def apctl(state_dir, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "controlplane.apctl", *args], capture_output=True, timeout=60,
                          env={**os.environ, "APCTL_CONFIG": str(state_dir / "apctl.yaml")})


def test_up_serves_kubectl_and_stops_everything_on_ctrl_c(tmp_path):
    """The gateway learns the cluster, the policy and the credentials only from the control plane
    (through Redis); kubectl works with the kubeconfigs the API issued; a revocation through
    apctl ends the revoked user's running watch and refuses the next call."""
    state_dir = tmp_path / "state"
    up = Streaming(subprocess.Popen(
        [sys.executable, "-m", "dataplane.cli", "up", "--state-dir", str(state_dir),
         "--port", str(free_port()), "--admin-port", str(free_port()), "--api-port", str(free_port())],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    try:
        up.expect("AccessPoint is up", timeout=90)
        admin = Kubectl(state_dir / "kubeconfig", tmp_path / "cache-admin")
        assert "web-0" in admin.ok("get", "pods")
        readonly = Kubectl(state_dir / "readonly.kubeconfig", tmp_path / "cache-ro")
        assert "web-0" in readonly.ok("get", "pods")
        assert "Forbidden" in readonly.fails("delete", "pod", "web-0")
        assert (state_dir / "audit" / "spool.jsonl").stat().st_size > 0

        gateways = apctl(state_dir, "get", "gateways", "-o", "json")
        assert gateways.returncode == 0, gateways.stderr
        assert len(json.loads(gateways.stdout)["items"]) == 1

        watch = readonly.start("get", "pods", "-w")
        try:
            watch.expect("web-0")
            revoked = apctl(state_dir, "revoke", "user", "bob", "--wait")
            assert revoked.returncode == 0, revoked.stderr
            assert re.match(r'revoked user "bob"; applied by 1 gateway in \d+ ms', revoked.stdout.decode())
            assert watch.wait_exit(timeout=30) is not None  # the running watch was ended
        finally:
            watch.stop()
        assert "Unauthorized" in readonly.fails("get", "pods")
        assert "web-0" in admin.ok("get", "pods")
    finally:
        up.process.send_signal(signal.SIGINT)
        assert up.wait_exit(timeout=60) == 0
        up.stop()
    # Nothing it started is left listening: the sandbox and the gateway went with it.
    after = Kubectl(state_dir / "kubeconfig", tmp_path / "cache-after")
    assert after.run("get", "pods", "--request-timeout=3s").returncode != 0


def test_up_tunnel_serves_the_sandbox_through_an_enrolled_agent(tmp_path):
    """`accesspoint up --tunnel`: the sandbox is a tunnel cluster, served by an agent that enrolled
    with its bootstrap token; the gateway holds neither its address nor its credential."""
    state_dir = tmp_path / "state"
    up = Streaming(subprocess.Popen(
        [sys.executable, "-m", "dataplane.cli", "up", "--tunnel", "--state-dir", str(state_dir),
         "--port", str(free_port()), "--admin-port", str(free_port()), "--api-port", str(free_port()),
         "--tunnel-port", str(free_port())],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    try:
        up.expect("AccessPoint is up: .*through the agent's reverse tunnel", timeout=90)
        admin = Kubectl(state_dir / "kubeconfig", tmp_path / "cache-admin")
        assert "web-0" in admin.ok("get", "pods")
        assert not (state_dir / "secrets" / "sandbox.token").exists()      # the agent holds the credential
        listed = apctl(state_dir, "get", "cluster", "sandbox", "-o", "json")
        assert listed.returncode == 0, listed.stderr
        cluster = json.loads(listed.stdout)
        assert cluster["tunnel"] and "endpoint" not in cluster and "connectivity" in cluster
        agents = apctl(state_dir, "get", "agents", "sandbox", "-o", "json")
        assert [a["live"] for a in json.loads(agents.stdout)["items"]] == [True]
    finally:
        up.process.send_signal(signal.SIGINT)
        assert up.wait_exit(timeout=60) == 0
        up.stop()


def test_cluster_from_kubeconfig_reads_token_and_certificate_users(tmp_path):
    ca = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    token_config = tmp_path / "token.kubeconfig"
    token_config.write_text(sandbox.kubeconfig("https://10.0.0.1:6443", ca, "ci", token="s3cret", context="prod"))
    spec = sandbox.cluster_from_kubeconfig("prod-eu", token_config)
    assert (spec.name, spec.endpoint, spec.token, spec.ca_pem) == ("prod-eu", "https://10.0.0.1:6443", "s3cret", ca)

    cert_config = tmp_path / "cert.kubeconfig"
    cert_config.write_text(sandbox.kubeconfig("https://10.0.0.2:6443", ca, "ops", cert_pem=b"CERT", key_pem=b"KEY",
                                              context="stage"))
    spec = sandbox.cluster_from_kubeconfig("stage", cert_config)
    assert (spec.client_cert_pem, spec.client_key_pem, spec.token) == (b"CERT", b"KEY", None)


def test_cluster_from_kubeconfig_refuses_what_it_cannot_pin_or_use(tmp_path):
    config = tmp_path / "bad.kubeconfig"
    config.write_text(sandbox.kubeconfig("https://10.0.0.1:6443", b"CA", "ci", token="t", context="c")
                      .replace("certificate-authority-data", "insecure-skip-tls-verify-was"))
    with pytest.raises(ValueError, match="certificate-authority"):
        sandbox.cluster_from_kubeconfig("x", config)
