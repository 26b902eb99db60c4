"""Output file names derived from the configured [output] path.

Exports:
    stem(path) -> str     the path without its HDF5 suffix (.h5 or .hdf5), the base of the
                          files a command writes next to its results (<stem>_L64.h5, <stem>_fss.png)
"""
from __future__ import annotations

import os

_SUFFIXES = (".h5", ".hdf5")


def stem(path) -> str:
    """`path` without a trailing .h5 / .hdf5 (other suffixes are kept: "run.out" -> "run.out")."""
    path = os.fspath(path)
    for suffix in _SUFFIXES:
        if path.endswith(suffix):
            return path[:-len(suffix)]
    return path
