"""`accesspoint` console script: a thin dispatcher over one module per subcommand.

Each subcommand module provides `add_arguments(parser)` and `command(namespace) -> int`.
Add a subcommand by adding a line to SUBCOMMANDS.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name → (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "gateway": ("dataplane.server", "run the gateway (TLS listener, workers, drain on SIGTERM)"),
    "up": ("dataplane.up", "run a gateway in front of a local sandbox cluster (or real clusters)"),
    "agent": ("dataplane.agent", "run the in-cluster agent: a reverse tunnel to the gateways"),
    "controlplane": ("controlplane.cli", "run the control plane (gRPC API, store, snapshot publishing)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="accesspoint", description="AccessPoint: the Cluster Shield")
    sub = parser.add_subparsers(dest="subcommand", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        sp = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sp)
        sp.set_defaults(_command=module.command)
    return parser


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    return int(ns._command(ns) or 0)


if __name__ == "__main__":
    sys.exit(main())
