"""Hot paths with two interchangeable backends: the Cython build and its pure-Python twin.

There is no hybrid mode: either every module uses its compiled backend, or (when
ACCESSPOINT_NO_EXTENSIONS=1, or when the extensions were not built) every module uses its twin.
"""
import importlib
import os

NO_EXTENSIONS = os.environ.get("ACCESSPOINT_NO_EXTENSIONS", "") not in ("", "0")


def _compiled_available() -> bool:
    try:
        importlib.import_module("native._httpparse_c")
        importlib.import_module("native._requestinfo_c")
        importlib.import_module("native._policy_c")
    except ImportError:
        return False
    return True


USE_EXTENSIONS = not NO_EXTENSIONS and _compiled_available()
BACKEND = "cython" if USE_EXTENSIONS else "python"


def load(name: str):
    """The backend module for hot path `name` (e.g. "httpparse")."""
    suffix = "_c" if USE_EXTENSIONS else "_py"
    return importlib.import_module(f"native._{name}{suffix}")
