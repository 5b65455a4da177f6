"""The load generators and the reference proxy come from Debian packages, installed on demand."""
from __future__ import annotations

import os
import shutil
import subprocess

# executable → the Debian package that ships it
TOOLS = {"nginx": "nginx", "wrk": "wrk", "h2load": "nghttp2-client", "taskset": "util-linux"}


def missing_packages() -> list[str]:
    return sorted({package for tool, package in TOOLS.items() if shutil.which(tool) is None})


def ensure_tools() -> None:
    """Installs the packages of missing tools with apt-get (one `apt-get update` first)."""
    missing = missing_packages()
    if not missing:
        return
    if os.geteuid() != 0:
        raise RuntimeError(f"missing {', '.join(missing)}: run as root or `apt-get install -y {' '.join(missing)}`")
    print(f"installing {', '.join(missing)} with apt-get", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    still_missing = missing_packages()
    if still_missing:
        raise RuntimeError(f"apt-get installed nothing usable for: {', '.join(still_missing)}")
