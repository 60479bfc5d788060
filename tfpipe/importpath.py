"""Objects named by import path in a config: `model.name: my_pkg.nets:build`.

A name with a colon is `module:attribute` (dots after the colon walk
attributes, `pkg.mod:Class.method`). The module is imported with the current
directory on `sys.path`, as `python -m` would, so a `models.py` or `prep.py`
next to the notebook or the command is found.
"""

from __future__ import annotations

import importlib
import os
import sys


def is_import_path(name) -> bool:
    """Whether `name` has the `module:attribute` form (built-in names have no colon)."""
    return isinstance(name, str) and ":" in name


def load(spec: str, key: str):
    """The object `spec` names.

    Args:
        spec: `module:attribute`.
        key: the config key, for the error message (`model.name`).

    Raises:
        ValueError: one line naming the key, the spec and what went wrong.
    """
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"{key}: expected module:function, got {spec!r}")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)  # appended: never shadows tfpipe's own modules
    try:
        obj = importlib.import_module(module_name)
    except Exception as e:  # pylint: disable=broad-except  # any import failure is the user's to fix
        raise ValueError(f"{key}: cannot import {module_name!r} for {spec!r}: {type(e).__name__}: {e}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{key}: module {module_name!r} has no attribute {attr!r} (from {spec!r})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"{key}: {spec!r} is a {type(obj).__name__}, expected a function")
    return obj
