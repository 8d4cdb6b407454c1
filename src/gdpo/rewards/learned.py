"""Shared pieces of the learned rewards (``reward_model``, ``judge``): option checks, loading.

Contract:

* every check here runs *before* any weights load and raises :class:`LearnedRewardError`
  (a ``ValueError``) whose message names the reward, the key, the value and the fix;
* a model folder is loaded at most once per process for a given (kind, folder, device,
  dtype): every reward set that names it shares the same module (:func:`load_shared`);
* models are put in ``eval()`` mode and only ever run under ``torch.inference_mode()``
  (no gradient reaches them, whatever the trainer does).

``precheck(entries)`` runs the checks of every learned reward in a list of reward config
entries without building anything (for CLIs that want to fail before loading a policy);
``load_reward_config(path)`` reads and checks a YAML list of entries (``gdpo eval
--reward-config``). Each factory exposes its checks as ``factory.check_params(**params)``,
which :mod:`gdpo.schema` also calls when it checks a config.
"""

from __future__ import annotations

import json
import math
import os
import threading
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Sequence

from gdpo.errors import InputError

DTYPES = ("float32", "bfloat16", "float16", "auto")  # "auto": bfloat16 on a CUDA device, else float32


class LearnedRewardError(InputError):
    """A learned reward's option is wrong; the message says which and how to fix it (a ValueError)."""


def fail(reward: str, key: str, value: Any, fix: str) -> LearnedRewardError:
    return LearnedRewardError(f"reward {reward!r}: params.{key} = {value!r}: {fix}")


def check_model_folder(reward: str, key: str, path: Any, *, allow: Sequence[str] = ()) -> Path:
    """``path`` must be a folder holding ``config.json`` (a ``save_pretrained`` folder)."""
    if path in allow:
        return Path(str(path))
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise fail(reward, key, path, "give the path of a local Hugging Face model folder "
                                      "(one saved with save_pretrained)")
    folder = Path(path).expanduser()
    if not folder.exists():
        raise fail(reward, key, str(path), "no such folder; model hubs are not contacted, give a local path")
    if not folder.is_dir():
        raise fail(reward, key, str(path), "is a file; give the model's folder (the one with config.json)")
    if not (folder / "config.json").is_file():
        raise fail(reward, key, str(path), "has no config.json; give a folder saved with save_pretrained")
    return folder


def read_model_config(folder: Path) -> dict[str, Any]:
    """The folder's ``config.json`` as a dict (checked to be a JSON object)."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise LearnedRewardError(f"{folder / 'config.json'} is not readable JSON ({exc}); re-save the model") from exc
    if not isinstance(config, dict):
        raise LearnedRewardError(f"{folder / 'config.json'} is not a JSON object; re-save the model")
    return config


def check_choice(reward: str, key: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise fail(reward, key, value, f"use one of {list(choices)}")
    return str(value)


def check_int(reward: str, key: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise fail(reward, key, value, f"must be an integer >= {minimum}")
    return value


def check_number(reward: str, key: str, value: Any, minimum: float, *, strict: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value <= minimum if strict else value < minimum):
        raise fail(reward, key, value, f"must be a finite number {'>' if strict else '>='} {minimum}")
    return float(value)


def check_device(reward: str, value: Any) -> str:
    """'auto', 'cpu', 'cuda', 'cuda:N' or 'mps' (whether it exists is checked at load)."""
    text = str(value)
    base, _, index = text.partition(":")
    if base not in ("auto", "cpu", "cuda", "mps") or (index and (base != "cuda" or not index.isdigit())):
        raise fail(reward, "device", value, "use 'auto' (a GPU when there is one), 'cpu', 'cuda' or 'cuda:N'")
    return text


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise LearnedRewardError(f"device {device!r} was asked for but CUDA is not available; use device: cpu or auto")
    return device


def resolve_dtype(dtype: str, device: str) -> Any:
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)


class Loaded(NamedTuple):
    """A model and its tokenizer, loaded once per process and shared."""

    model: Any
    tokenizer: Any
    device: str
    key: tuple


_SHARED: dict[tuple, Loaded] = {}
_LOCK = threading.Lock()


def load_shared(kind: str, folder: Path, device: str, dtype: str,
                load: Callable[[Path, Any], tuple[Any, Any]]) -> Loaded:
    """``load(folder, torch_dtype) -> (model, tokenizer)`` once per (kind, folder, device, dtype)."""
    resolved = resolve_device(device)
    key = (kind, str(folder.resolve()), resolved, dtype)
    with _LOCK:
        if key not in _SHARED:
            model, tokenizer = load(folder, resolve_dtype(dtype, resolved))
            model.to(resolved).eval()
            model.requires_grad_(False)
            _SHARED[key] = Loaded(model, tokenizer, resolved, key)
        return _SHARED[key]


def release_shared() -> None:
    """Forget every shared model (tests; a long-lived process that is done with them)."""
    with _LOCK:
        _SHARED.clear()


def chat_messages(prompt: Any) -> list[dict[str, Any]]:
    """A prompt as chat messages: a message list as is, a string as one user turn, None as []."""
    if prompt is None:
        return []
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, Mapping):
        return [dict(prompt)]
    if isinstance(prompt, (list, tuple)) and all(isinstance(m, Mapping) for m in prompt):
        return [dict(m) for m in prompt]
    return [{"role": "user", "content": str(prompt)}]


def prompts_column(n: int, columns: Mapping[str, Any]) -> list[Any]:
    """The prompts aligned with ``n`` completions: column ``prompts`` (TRL, gdpo train), else
    ``prompt`` (a ``gdpo score`` JSONL), else ``None`` each."""
    for key in ("prompts", "prompt"):
        value = columns.get(key)
        if isinstance(value, (list, tuple)) and len(value) == n:
            return list(value)
    return [None] * n


def precheck(entries: Sequence[Mapping[str, Any] | str]) -> None:
    """Run the option checks of the learned rewards among config ``entries`` (nothing loads)."""
    from gdpo.rewards import registry

    for item in entries:
        if not isinstance(item, Mapping) or "name" not in item:
            continue
        builder = registry.entry(str(item["name"])).builder
        check = getattr(builder, "check_params", None)
        if check is not None:
            check(**dict(item.get("params") or {}))


def load_reward_config(path: str | os.PathLike | None) -> list[Any]:
    """Reward entries from a YAML file (``gdpo eval --reward-config``), checked, nothing loaded.

    The file holds a list of entries (``[{name: reward_model, params: {model: PATH}}]``) or a
    mapping with a ``rewards:`` list (a training config works as is). None -> [].
    """
    if path is None:
        return []
    import yaml

    from gdpo.schema import check_reward_entry

    where = f"--reward-config {str(path)!r}"
    file = Path(path)
    if not file.is_file():
        raise InputError(f"{where}: no such file; give a YAML file with a list of reward entries")
    try:
        data = yaml.safe_load(file.read_text())
    except yaml.YAMLError as exc:
        raise InputError(f"{where}: not valid YAML ({' '.join(str(exc).split())})") from None
    if isinstance(data, Mapping) and "rewards" in data:
        data = data["rewards"]
    if not isinstance(data, list) or not data:
        raise InputError(f"{where}: expected a non-empty list of reward entries, e.g. "
                         f"[{{name: reward_model, params: {{model: path/to/rm}}}}], got {data!r:.60}")
    for i, item in enumerate(data):
        check_reward_entry(item, f"{where}[{i}]")
    precheck(data)
    return data
