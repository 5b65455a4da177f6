"""Regenerate the Python modules of the API's protos: `python -m controlplane.api.generate [OUT]`.

The proto import paths mirror the package (controlplane/api/v1/x.proto is module
controlplane.api.v1.x_pb2), so the output root is the repository root. A test regenerates into a
temporary directory and compares, so committed modules never drift from their protos.
"""
from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[2]
API_DIR = Path(__file__).resolve().parent / "v1"


def proto_files() -> list[str]:
    return sorted(str(path.relative_to(ROOT)) for path in API_DIR.glob("*.proto"))


def generate(out_dir: Path = ROOT) -> None:
    well_known = resources.files("grpc_tools") / "_proto"   # google/protobuf/*.proto
    args = ["grpc_tools.protoc", f"-I{ROOT}", f"-I{well_known}", f"--python_out={out_dir}",
            f"--pyi_out={out_dir}", f"--grpc_python_out={out_dir}", *proto_files()]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed (its message is above)")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
