"""`apctl`: the operator CLI of the control plane, kubectl-like and thin over the gRPC stubs.

connection.py  settings file, channel, stubs
manifests.py   YAML manifests and idempotent apply
output.py      tables, -o json|yaml, durations
commands.py    the commands and the entry point
policy.py      access requests, break-glass, console sessions, settings
"""
from .commands import main

__all__ = ["main"]
