"""The gateway ending `kubectl exec` sessions itself, seen from the real kubectl: switching
kubectl access off on a cluster ends the running sessions over WebSocket and over SPDY, and
kubectl exits non-zero printing why (sessionend.py). Revocation is in test_revocation.py."""
from __future__ import annotations


import yaml

from tests.e2e.topology import WAIT, fleet

SPDY = {"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false"}
DISABLED = 'session ended by AccessPoint: cluster "sandbox" has kubectl access disabled'


def test_switching_kubectl_off_ends_exec_sessions_with_the_reason_over_both_protocols(tmp_path):
    with fleet(tmp_path) as topology:
        alice = topology.kubectl(topology.state.kubeconfig)
        sessions = [alice.start("exec", "-i", "web-0", "-c", "app", "--", "cat"),
                    alice.start("exec", "-i", "web-0", "-c", "app", "--", "cat", env=SPDY)]
        try:
            for index, session in enumerate(sessions):
                session.echo(f"session {index} is live")

            listed = topology.apctl("get", "clusters", "sandbox", "-o", "yaml")   # as an operator would
            assert listed.returncode == 0, listed.stderr
            cluster = yaml.safe_load(listed.stdout)
            manifest = tmp_path / "sandbox-off.yaml"
            manifest.write_text(yaml.safe_dump({**cluster, "kubectl_enabled": False}, sort_keys=False))
            applied = topology.apctl("apply", "-f", str(manifest))
            assert applied.returncode == 0, applied.stderr

            for session in sessions:
                assert session.wait_exit(timeout=WAIT) != 0        # a failure, not a success
                stderr = session.process.stderr.read().decode()
                assert DISABLED in stderr, stderr
        finally:
            for session in sessions:
                session.stop()
