"""The whole real-kubectl suite (tests/e2e/test_kubectl.py) against the sandbox cluster behind an
agent tunnel: get, watch, apply, logs -f, exec, cp, port-forward, refusals and audit, unchanged."""
from tests.e2e.test_kubectl import *  # noqa: F401,F403  (collected here with this folder's stack)
