"""Revocation across a fleet of real processes: the operator revokes a user with `apctl revoke
--wait`; both gateways (which learn everything through Redis) end that user's running `kubectl
exec` sessions (WebSocket and SPDY) and watch, refuse the next call with 401, and the control
plane's audit shows the sessions ended by the revocation. Other users carry on."""
from __future__ import annotations

import json
import re

from controlplane.api.v1 import audit_pb2
from tests.e2e.topology import WAIT, eventually, fleet

SPDY = {"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false"}
REASON = "session ended by AccessPoint: credentials revoked"


def test_revoking_a_user_ends_their_sessions_on_every_gateway_and_refuses_the_next_call(tmp_path):
    with fleet(tmp_path, gateways=2) as topology:
        first, second = topology.gateways
        carol_first = topology.kubectl(topology.kubeconfig("carol", ["devs"], first))
        carol_second = topology.kubectl(topology.kubeconfig("carol", ["devs"], second))
        alice = topology.kubectl(topology.state.kubeconfig)

        sessions = [carol_first.start("exec", "-i", "web-0", "-c", "app", "--", "cat"),
                    carol_second.start("exec", "-i", "web-0", "-c", "app", "--", "cat", env=SPDY)]
        watch = carol_first.start("get", "pods", "-w")
        try:
            for index, session in enumerate(sessions):
                session.echo(f"carol's shell {index} is live")
            watch.expect("web-0")

            revoked = topology.apctl("revoke", "user", "carol", "--reason", "left", "--wait")
            assert revoked.returncode == 0, revoked.stderr
            measured = re.fullmatch(r'revoked user "carol"; applied by 2 gateways in (\d+) ms\n', revoked.stdout)
            assert measured, revoked.stdout
            assert int(measured.group(1)) < WAIT * 1000

            for running in (*sessions, watch):
                running.wait_exit(timeout=WAIT)    # ended by the gateways, not by the test
            # both protocols: kubectl fails, saying why (over SPDY it used to exit 0 in silence)
            for session in sessions:
                assert session.process.returncode != 0
                assert REASON in session.process.stderr.read().decode()
        finally:
            for running in (*sessions, watch):
                running.stop()

        for carol in (carol_first, carol_second):
            assert "Unauthorized" in carol.fails("get", "pods")
            assert "Unauthorized" in carol.fails("exec", "web-0", "-c", "app", "--", "echo", "again")
        assert "web-0" in alice.ok("get", "pods")              # the revocation is the user's alone
        assert alice.ok("exec", "web-0", "-c", "app", "--", "echo", "alice") == "alice\n"

        # The gateways' audit, shipped through Redis, says which sessions the revocation ended.
        client = topology.client()
        try:
            def ended_by_revocation():
                events = client.call(client.audit.QueryAudit, audit_pb2.QueryAuditRequest(user="carol", limit=1000))
                ended = [json.loads(e.json) for e in events.events]
                ended = [e for e in ended if e.get("session_ended_by") == "revoked"]
                return ended if len(ended) == 3 else None
            ended = eventually(ended_by_revocation, "three session ends of carol in the control plane's audit")
        finally:
            client.close()
        assert sorted(e.get("subresource") or e["verb"] for e in ended) == ["exec", "exec", "watch"]
        assert {e["revocation"] for e in ended} == {"authentication refused: revoked"}
