"""Reverse tunnels: clusters whose API server the gateways cannot reach (docs/tunnels.md).

An agent inside the cluster dials the gateway's tunnel listener (mTLS), names its cluster in a
one-line greeting, and, once the gateway accepts, the connection carries HTTP/2 with the roles
reversed: the gateway is the h2 client, so a tunnel is just another upstream connection to the
pipeline. The gateway signs the caller's identity into every stream (assertion.py); the agent
verifies it, sets the impersonation itself with its own credential and forwards to its API server.

- protocol.py: everything on the wire (greeting, header names, ALPN), sans-IO;
- identities.py: agent identities (`cn:`, `spki-sha256:`) and the snapshot's allow-list;
- assertion.py: the signed identity assertion;
- gateway.py: the gateway side (listener, registry of live tunnels, upstream selection);
- forwarder.py: the agent side of one stream; dataplane/agent.py: the agent process;
- backoff.py: reconnect delays.
"""
