"""The `loadtests/bench` harness: the gateway, nginx and direct access measured side by side.

One module per job: `packages` (Debian tools), `fixtures` (bodies and certificates), `nginx`
(upstream and reference proxy configs), `gateway` (the AccessPoint under test), `processes`
(pinned processes, readiness, CPU accounting), `loadgen` (wrk / h2load and their output),
`scenarios`, `report` (medians, ratios, the table) and `run` (the whole run).
"""
