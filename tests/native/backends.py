"""Both backends of a hot path, for tests parametrised over them.

A missing compiled module is an error (the import fails at collection), never a skip; only
ACCESSPOINT_NO_EXTENSIONS=1 restricts the tests to the pure-Python twin.
"""
import importlib
import os

PURE_ONLY = os.environ.get("ACCESSPOINT_NO_EXTENSIONS", "") not in ("", "0")


def backends(name: str) -> list:
    suffixes = ["py"] if PURE_ONLY else ["py", "c"]
    return [importlib.import_module(f"native._{name}_{suffix}") for suffix in suffixes]


def backend_id(module) -> str:
    return "python" if module.__name__.endswith("_py") else "cython"
