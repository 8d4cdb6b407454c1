"""Imports every built-in reward module so that their rewards register themselves."""

import importlib

for _module in ("toolcall", "math", "code"):
    try:
        importlib.import_module(f"gdpo.rewards.{_module}")
    except ModuleNotFoundError as exc:  # a module not written yet, or its optional dependency missing
        if exc.name != f"gdpo.rewards.{_module}":
            raise
