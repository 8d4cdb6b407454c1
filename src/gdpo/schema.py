"""Checks of every user-supplied name, run before any model loads.

Covers: reward entries (``{name, weight, params, condition, floor}``; ``params`` against the
reward factory's signature), reward names, task names and task parameters (against the task
builder's signature), advantage estimators and their options.

Contract:

* pure: imports only the registries (no torch, no transformers); nothing is built or loaded,
  except a reward given as a dotted import path, whose module is imported to resolve it;
* every failure raises :class:`gdpo.errors.InputError` (an unknown name:
  :class:`~gdpo.errors.UnknownNameError`) with ONE line: the key, the value, what is wrong,
  the nearest valid choice (``Did you mean ...?``) and the valid choices;
* parameter values are checked against simple annotations only (``int``, ``float``,
  ``str``, ``bool``, ``Path``, ``Literal``, ``X | None``, lists, mappings); any other
  annotation is left to the builder. A builder with ``**kwargs`` accepts any parameter name;
* ``key_format`` arguments say how a parameter is named in messages: ``"task.params.{}"``
  for a config, ``"--task-param {}"`` for a command line.

>>> nearest("num_trian", ["num_train", "num_test", "seed"])
'num_train'
>>> check_reward_entries([{"name": "toy_letter", "wieght": 2}])
Traceback (most recent call last):
...
gdpo.errors.UnknownNameError: rewards[0].wieght = 2: not a key of a reward entry. Did you mean 'weight'? Valid: name, weight, params, condition, floor
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Mapping, Sequence

from gdpo.errors import InputError, UserError, one_line
from gdpo.signature import (  # noqa: F401  (re-exported: the checks' building blocks)
    RUN_WIDE_PARAMS,
    Signature,
    check_params,
    describe,
    fits,
    nearest,
    signature_of,
    unknown,
)

SchemaError = InputError  # the name used in this module's docs and callers

REWARD_ENTRY_KEYS = ("name", "weight", "params", "condition", "floor")
CONDITION_KEYS = ("on", "min")


# -- helpers ----------------------------------------------------------------------------
def _wrap(key: str, exc: Exception) -> InputError:
    """A builder's own ValueError/TypeError as one InputError line prefixed by ``key``."""
    message = one_line(str(exc))
    return InputError(message if isinstance(exc, UserError) and key in message else f"{key}: {message}")


def _number(key: str, value: Any, minimum: float | None = None) -> float:
    if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string; the reward set takes float()
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise InputError(f"{key} = {value!r}: must be a finite number"
                         + (f" >= {minimum:g}" if minimum is not None else ""))
    if minimum is not None and value < minimum:
        raise InputError(f"{key} = {value!r}: must be >= {minimum:g}")
    return float(value)


# -- tasks -------------------------------------------------------------------------------
def task_builder(name: Any, key: str = "task.name") -> Callable:
    """The registered builder of task ``name`` (unknown: the nearest name and the valid ones)."""
    from gdpo.data import base

    names = base.task_names()
    if not isinstance(name, str) or name not in names:
        raise unknown(key, name, "not a registered task", name, names)
    return base._TASKS[name]


def check_task_params(task_name: Any, params: Any, *, key: str = "task.name",
                      key_format: str = "task.params.{}") -> None:
    """Task ``task_name`` exists and ``params`` fit its builder's signature."""
    builder = task_builder(task_name, key)
    check_params(f"task {task_name!r}", builder, params, key_format, provided=())


# -- rewards -----------------------------------------------------------------------------
def reward_entry(name: Any, key: str = "rewards[0].name") -> Any:
    """The registry entry of reward ``name`` (a registered name or a dotted import path)."""
    from gdpo.rewards import registry

    if not isinstance(name, str) or not name:
        raise InputError(f"{key} = {name!r}: a reward name must be a non-empty string, e.g. math_format")
    names = registry.names()
    if name in names:
        return registry.entry(name)
    if "." in name or ":" in name:
        try:
            found = registry.entry(name)
        except (ImportError, KeyError, TypeError, ValueError) as exc:
            raise _wrap(key, exc) from None
        if not callable(found.builder):
            raise InputError(f"{key} = {name!r}: resolves to {found.builder!r}, which is not callable")
        return found
    raise unknown(key, name, "not a registered reward", name, names,
                  tail="; or a dotted import path 'package.module:function'")


def check_reward_names(names: Sequence[Any], key: str = "--rewards") -> None:
    """Each of ``names`` is a registered reward or a resolvable dotted path; none twice."""
    if not names:
        raise InputError(f"{key} is empty: name at least one reward, e.g. math_correctness,math_format")
    for name in names:
        reward_entry(name, key)
    dupes = sorted({str(n) for n in names if list(names).count(n) > 1})
    if dupes:
        raise InputError(f"{key} = {','.join(map(str, names))!r}: reward(s) {dupes} listed twice; list each once")


def check_reward_params(name: str, params: Any, key_format: str) -> None:
    """``params`` of reward ``name`` against its factory's signature (a plain reward takes none)."""
    found = reward_entry(name, key_format.format("").rstrip(".") or "reward")
    where = key_format.format("").rstrip(". ") or "params"
    if params is not None and not isinstance(params, Mapping):
        raise InputError(f"{where} = {params!r}: must be a mapping of parameter names to values")
    params = dict(params or {})
    if not found.is_factory:
        if params:
            raise InputError(f"{where} = {params!r}: reward {name!r} takes no parameters; remove them")
        return
    check_params(f"reward {name!r}", found.builder, params, key_format)
    sig = signature_of(found.builder)
    # A transform (noisy, negated) names the reward it wraps: check that one, and its params.
    if "reward" in sig.accepted and isinstance(params.get("reward"), str):
        inner = params["reward"]
        reward_entry(inner, key_format.format("reward"))
        if "params" in sig.accepted:
            check_reward_params(inner, params.get("params"), key_format.format("params") + ".{}")
    check = getattr(found.builder, "check_params", None)  # a factory's own value checks (load nothing)
    if check is not None:
        try:
            check(**params)
        except (ValueError, TypeError) as exc:
            raise _wrap(where, exc) from None


def check_reward_entry(item: Any, key: str) -> str:
    """One config entry: a name, or ``{name, weight, params, condition: {on, min}, floor}``; returns the name."""
    if isinstance(item, str):
        reward_entry(item, key)
        return item
    if not isinstance(item, Mapping):
        raise InputError(f"{key} = {item!r}: a reward entry is a name or a mapping "
                         f"{{name, weight, params, condition, floor}}, e.g. {{name: math_format, weight: 1}}")
    for k in item:
        if k not in REWARD_ENTRY_KEYS:
            raise unknown(f"{key}.{k}", item[k], "not a key of a reward entry", k, REWARD_ENTRY_KEYS)
    if "name" not in item:
        raise InputError(f"{key} = {dict(item)!r}: missing 'name', e.g. {{name: math_format}}")
    name = item["name"]
    reward_entry(name, f"{key}.name")
    if "weight" in item:
        _number(f"{key}.weight", item["weight"], 0.0)
    if item.get("floor") is not None:
        _number(f"{key}.floor", item["floor"])
    check_reward_params(name, item.get("params"), f"{key}.params.{{}}")
    if item.get("condition") is not None:
        _check_condition(item["condition"], f"{key}.condition")
    return name


def condition_mapping(cond: Any) -> Any:
    """A condition with YAML 1.1's boolean ``True`` key (a bare ``on:``) read back as ``"on"``."""
    if isinstance(cond, Mapping) and True in cond and "on" not in cond:
        return {("on" if k is True else k): v for k, v in cond.items()}  # YAML 1.1 reads `on:` as True
    return cond


def _check_condition(cond: Any, key: str) -> None:
    cond = condition_mapping(cond)
    if not isinstance(cond, Mapping):
        raise InputError(f"{key} = {cond!r}: must look like {{on: other_reward, min: 1.0}}")
    for k in cond:
        if k not in CONDITION_KEYS:
            raise unknown(f"{key}.{k}", cond[k], "not a key of a condition", k, CONDITION_KEYS)
    if not isinstance(cond.get("on"), str):
        raise InputError(f"{key}.on = {cond.get('on')!r}: name the reward this one depends on, "
                         "e.g. condition: {on: math_correctness, min: 1.0}")
    if "min" in cond:
        _number(f"{key}.min", cond["min"])


def check_reward_entries(entries: Any, *, key: str = "rewards") -> None:
    """A reward set's config entries: each entry, no name twice, conditions on rewards of the set."""
    if entries is None:
        return
    if not isinstance(entries, (list, tuple)):
        raise InputError(f"{key} = {entries!r}: must be a list of reward entries, e.g. "
                         "[{name: math_format}, {name: math_correctness, weight: 2}]")
    if not entries:
        raise InputError(f"{key} = []: a run needs at least one reward; leave it out (null) for the task's defaults")
    names = [check_reward_entry(item, f"{key}[{i}]") for i, item in enumerate(entries)]
    for i, name in enumerate(names):
        if names.index(name) != i:
            raise InputError(f"{key}[{i}].name = {name!r}: listed twice (also {key}[{names.index(name)}]); "
                             "each reward may appear once")
    for i, item in enumerate(entries):
        cond = condition_mapping(item.get("condition")) if isinstance(item, Mapping) else None
        if cond is None:
            continue
        on = cond["on"]
        if on == names[i]:
            raise InputError(f"{key}[{i}].condition.on = {on!r}: a reward cannot be conditioned on itself")
        if on not in names:
            raise unknown(f"{key}[{i}].condition.on", on, "not a reward of this set (add it, weight 0 if "
                          "it should not count by itself)", on, names)


# -- advantage estimators --------------------------------------------------------------------
def check_estimator_options(method: Any, options: Any, *, token_weighted: bool = False,
                            num_rewards: int | None = None, key: str = "method",
                            options_key: str = "method_options") -> None:
    """``method`` is a registered estimator, ``options`` are its options (names and values)."""
    from gdpo import advantages

    names = advantages.estimator_names()
    if not isinstance(method, str) or method not in names:
        raise unknown(key, method, "not an advantage estimator", method, names)
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise InputError(f"{options_key} = {options!r}: must be a mapping, e.g. {{eps: 1.0e-4}}")
    accepted = advantages.get_estimator(method).options
    valid = [k for k in accepted if k != "lengths"]
    for name, value in options.items():
        if name not in valid:
            extra = " (set token_weighted_batch_norm: true for lengths)" if name == "lengths" else ""
            raise unknown(f"{options_key}.{name}", value, f"not an option of {method!r}{extra}", name, valid)
    if token_weighted and "lengths" not in accepted:
        with_lengths = [n for n in names if "lengths" in advantages.get_estimator(n).options]
        raise InputError(f"token_weighted_batch_norm = true needs a method with a batch step "
                         f"({', '.join(with_lengths)}); {method!r} has none. Set it to false.")
    check_values = getattr(advantages, "check_options", None)
    if check_values is not None:
        try:
            check_values(method, dict(options), num_rewards)
        except (ValueError, TypeError) as exc:
            raise _wrap(options_key, exc) from None


# -- a training config -----------------------------------------------------------------------
def check_train_config(cfg: Any) -> None:
    """The names of a :class:`gdpo.train.config.TrainConfig`: method and options, task and params, rewards."""
    rewards = cfg.rewards
    check_estimator_options(cfg.method, cfg.method_options, token_weighted=cfg.token_weighted_batch_norm,
                            num_rewards=len(rewards) if isinstance(rewards, (list, tuple)) and rewards else None)
    check_task_params(cfg.task.name, cfg.task.params)
    check_reward_entries(rewards)
