"""The `--log-level` option and the logging setup every long-running subcommand shares."""
from __future__ import annotations

import argparse
import logging
import os

LOG_FORMAT = "%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"


def add_log_level(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", default=os.environ.get("ACCESSPOINT_LOG_LEVEL", "INFO"),
                        help="logging level (env ACCESSPOINT_LOG_LEVEL)")


def setup_logging(level: str) -> None:
    """Configure the root logger at `level` (a name, any case; INFO when unknown)."""
    logging.basicConfig(level=getattr(logging, str(level).upper(), logging.INFO), format=LOG_FORMAT)
