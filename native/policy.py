"""Compiled access policy (docs/policy.md): the backend chosen by `native.load`.

`PolicyIndex(snapshot_data)` compiles a validated snapshot's roles, bindings, clusters and
settings; `decide(...)` returns the index of the deciding binding or one of the negative codes.
"""
from native import load
from native._policyspec import KUBECTL_DISABLED, NO_MATCH, READ_ONLY, UNKNOWN_CLUSTER

_m = load("policy")

PolicyIndex = _m.PolicyIndex

__all__ = ["PolicyIndex", "NO_MATCH", "UNKNOWN_CLUSTER", "KUBECTL_DISABLED", "READ_ONLY"]
