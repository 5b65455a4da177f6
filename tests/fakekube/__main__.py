"""python -m tests.fakekube --host 127.0.0.1 --port N --cert C --key K --token-file F [--rbac-file F]
[--client-ca F] [--ready-file F]: the fake API server as a process; SIGTERM/SIGINT stop it cleanly."""
from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

import yaml

from .server import FakeKube


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.fakekube", description="fake Kubernetes API server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--cert", required=True, help="serving certificate (PEM)")
    parser.add_argument("--key", required=True, help="serving key (PEM)")
    parser.add_argument("--token-file", required=True, help="the gateway's bearer token, the only one accepted")
    parser.add_argument("--rbac-file", help='JSON/YAML {"users": {name: admin|view}, "groups": {...}}')
    parser.add_argument("--client-ca", help="verify client certificates against this CA")
    parser.add_argument("--ready-file", help="written with the URL once listening")
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    rbac = yaml.safe_load(Path(args.rbac_file).read_text()) if args.rbac_file else None
    fake = FakeKube(args.host, args.port, cert=args.cert, key=args.key,
                    gateway_token=Path(args.token_file).read_text().strip(), client_ca=args.client_ca, rbac=rbac)
    await fake.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"fakekube listening on {fake.url}", flush=True)
    if args.ready_file:
        ready = Path(args.ready_file)
        tmp = ready.with_name(ready.name + ".tmp")
        tmp.write_text(fake.url + "\n")
        tmp.replace(ready)        # atomic: readers never see a partial file
    await stop.wait()
    await fake.stop()


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    try:
        asyncio.run(_serve(args))
    except (OSError, ValueError) as exc:
        print(f"fakekube: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
