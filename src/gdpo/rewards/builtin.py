"""Imports every built-in reward module so that their rewards register themselves."""

import importlib

# Reward modules, and the toy task modules (their toy_* rewards live beside the task).
for _module in ("gdpo.rewards.toolcall", "gdpo.rewards.math", "gdpo.rewards.code", "gdpo.rewards.transforms",
                "gdpo.rewards.reward_model", "gdpo.rewards.judge", "gdpo.rewards.trajectory", "gdpo.rewards.bfcl",
                "gdpo.data.toy", "gdpo.data.toy_extra"):
    try:
        importlib.import_module(_module)
    except ModuleNotFoundError as exc:  # a module not written yet, or its optional dependency missing
        if exc.name != _module:
            raise
