"""`accesspoint controlplane`: run the control plane (thin over ControlPlaneConfig and server).

Provides `add_arguments(parser)` and `command(namespace) -> int` like every subcommand module.
"""
from __future__ import annotations

import argparse
import sys

from dataplane.logsetup import add_log_level, setup_logging

from .config import ConfigError, ControlPlaneConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    ControlPlaneConfig.add_arguments(parser)
    add_log_level(parser)


def command(ns: argparse.Namespace) -> int:
    setup_logging(ns.log_level)
    try:
        config = ControlPlaneConfig.from_namespace(ns)
        config.validate()
        config.tokens()          # fail now on unreadable secrets, with a message naming the option
        config.private_key()
        config.client_authority()   # and on a first start, create the client CA
        config.agent_authority()    # and the agent CA
    except ConfigError as exc:
        print(f"accesspoint controlplane: {exc}", file=sys.stderr)
        return 2
    from .server import run  # the gRPC stack loads only when the process really starts
    return run(config)
