"""Environments for multi-turn tool use: the protocol, the registry, user tools, BFCL's APIs.

See ``docs/multi_turn.md``. ``gdpo.envs.bfcl`` imports ``bfcl-eval`` only when an entry is
loaded or checked.
"""

from gdpo.envs.base import (
    Environment,
    Episode,
    StepResult,
    env_names,
    get_env,
    make_env,
    register_env,
    system_prompt,
    tool_message,
    unregister_env,
)
from gdpo.envs.tools import ToolsEnv, function_schema, register_tools, tool_schemas

__all__ = ["Environment", "Episode", "StepResult", "ToolsEnv", "env_names", "function_schema", "get_env",
           "make_env", "register_env", "register_tools", "system_prompt", "tool_message", "tool_schemas",
           "unregister_env"]
