"""The whole real-kubectl suite (tests/e2e/test_kubectl.py) against the sandbox cluster behind an
agent tunnel: get, watch, apply, logs -f, exec, cp, port-forward, refusals and audit, unchanged."""
from dataplane import signing
from dataplane.snapshot import load_snapshot_file
from tests.e2e.test_kubectl import *  # noqa: F401,F403  (collected here with this folder's stack)


def test_the_cluster_is_reached_only_through_the_agent(stack, admin, fake_cluster):
    snapshot = load_snapshot_file(stack.state.snapshot, signing.load_public_key(stack.state.signing_pub))
    cluster = snapshot.clusters["sandbox"]
    assert cluster.tunnel and cluster.agent_identities
    assert f":{fake_cluster.port}" not in cluster.endpoint          # the gateway knows no way there
    assert admin.kubeconfig == stack.state.kubeconfig
    before = len(fake_cluster.requests)
    assert "web-0" in admin.ok("get", "pods")
    seen = fake_cluster.requests[before:]
    assert seen and all(r.header_values("authorization") == [f"Bearer {stack.sandbox_token}"] for r in seen)
    assert all(r.header("impersonate-user") == "alice" for r in seen)
