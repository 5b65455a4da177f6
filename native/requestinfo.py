"""Kubernetes request attributes (verb, group, resource, …): the backend chosen by `native.load`.

Contract: docs/architecture.md, section native.requestinfo.
"""
from native import load

_m = load("requestinfo")

RequestInfo = _m.RequestInfo
parse_request_info = _m.parse_request_info

__all__ = ["RequestInfo", "parse_request_info"]
