"""Builds the Cython hot paths in native/.

ACCESSPOINT_NO_EXTENSIONS=1 skips the build (and, at run time, forces the pure-Python twins).
"""
import glob
import os

from setuptools import setup

ext_modules = []
sources = sorted(glob.glob("native/*.pyx"))
if sources and os.environ.get("ACCESSPOINT_NO_EXTENSIONS", "") in ("", "0"):
    from Cython.Build import cythonize

    ext_modules = cythonize(
        sources,
        compiler_directives={"language_level": "3"},
        quiet=True,
    )

setup(ext_modules=ext_modules)
