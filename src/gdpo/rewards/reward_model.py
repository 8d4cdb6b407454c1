"""``reward_model``: a local Hugging Face sequence-classification model as a reward.

    rewards:
      - {name: reward_model, params: {model: path/to/rm, batch_size: 16, label: 0}}
      - {name: math_format}

Contract: ``fn(completions, prompts=None, **columns) -> list[float]``, one score per
completion, the raw logit ``logits[i, label]`` of ``AutoModelForSequenceClassification``
(``activation: sigmoid`` turns it into a probability). Scale and offset are whatever the
model learned; GDPO normalizes each reward within its group, so no rescaling is needed.

Input: the prompt (column ``prompts`` as gdpo train and TRL pass it, else ``prompt``; a
message list, a string or absent) and the completion (a string or TRL's message list) as one
conversation ``[*prompt_messages, {"role": "assistant", "content": completion}]``, rendered
with *the reward model's* chat template and tokenizer (not the policy's). A tokenizer with no
chat template reads ``prompt text + "\\n" + completion``. Over ``max_length`` tokens the
*start* is cut (the score is read at the last token, which must stay).

Batching: inputs are sorted by length and run ``batch_size`` at a time, right-padded (the
real tokens keep their positions, so a batch scores what one-at-a-time scoring gives, up to
float rounding). Scores are cached per input text for the run (:mod:`score_cache`).

Loading: once per process per (folder, device, dtype), shared by every reward set that names
it; ``eval()``, no gradient. Every option is checked before anything loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gdpo.rewards import learned as L
from gdpo.rewards.registry import register_reward_factory
from gdpo.rewards.score_cache import ScoreCache, cached_scores
from gdpo.rewards.text import completion_text

NAME = "reward_model"
ACTIVATIONS = ("none", "sigmoid")


class RMOptions(dict):
    """The checked options (a dict, so they print as the config wrote them)."""


def check_params(model: Any = None, label: Any = 0, batch_size: Any = 8, device: Any = "auto",
                 dtype: Any = "float32", max_length: Any = 1024, chat_template: Any = True,
                 activation: Any = "none", cache: Any = True, name: Any = NAME) -> RMOptions:
    """Check every option without loading anything; returns them with ``label`` as an index."""
    reward = str(name)
    if model is None:
        raise L.fail(reward, "model", None, "give the path of a sequence-classification model folder")
    folder = L.check_model_folder(reward, "model", model)
    config = L.read_model_config(folder)
    arch = config.get("architectures") or []
    if arch and not any(str(a).endswith("ForSequenceClassification") for a in arch):
        raise L.fail(reward, "model", str(model),
                     f"its architectures {arch} are not a sequence-classification head; save the reward model "
                     "with AutoModelForSequenceClassification (a causal LM belongs in the 'judge' reward)")
    index = _label_index(reward, label, config)
    L.check_int(reward, "batch_size", batch_size, 1)
    L.check_int(reward, "max_length", max_length, 2)
    L.check_device(reward, device)
    L.check_choice(reward, "dtype", dtype, L.DTYPES)
    L.check_choice(reward, "activation", activation, ACTIVATIONS)
    for key, value in (("chat_template", chat_template), ("cache", cache)):
        if not isinstance(value, bool):
            raise L.fail(reward, key, value, "must be true or false")
    return RMOptions(model=folder, label=index, batch_size=batch_size, device=str(device), dtype=dtype,
                     max_length=max_length, chat_template=chat_template, activation=activation, cache=cache,
                     name=reward)


def _label_index(reward: str, label: Any, config: dict[str, Any]) -> int:
    """``label``: an index into the head, or one of the names in config.json's ``id2label``."""
    id2label = {int(k): str(v) for k, v in (config.get("id2label") or {}).items()}
    # transformers writes no labels for its default of 2 (LABEL_0, LABEL_1)
    num_labels = int(config.get("num_labels") or len(id2label) or 2)
    id2label = id2label or {i: f"LABEL_{i}" for i in range(num_labels)}
    if isinstance(label, str) and not label.lstrip("-").isdigit():
        names = {v: k for k, v in id2label.items()}
        if label not in names:
            raise L.fail(reward, "label", label, f"not a label of this head; its labels are {sorted(names)}")
        return names[label]
    try:
        index = int(label)
    except (TypeError, ValueError):
        raise L.fail(reward, "label", label, "give an index into the head or a name from id2label") from None
    if not 0 <= index < num_labels:
        raise L.fail(reward, "label", label, f"the head has {num_labels} label(s); use 0..{num_labels - 1}")
    return index


def _load(folder: Path, dtype: Any) -> tuple[Any, Any]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=dtype)
    tokenizer.padding_side = "right"  # real tokens keep positions 0..len-1 in a batch
    tokenizer.truncation_side = "left"  # the score is read at the last token: keep the end
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if model.config.pad_token_id is None:  # the head finds the last real token by the pad id
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


class RewardModelReward:
    """The callable; ``__name__`` is the reward's name (what TRL logs it as)."""

    def __init__(self, options: RMOptions):
        self.options = options
        self.__name__ = self.reward_name = options["name"]
        self.floor = 0.0
        loaded = L.load_shared(NAME, options["model"], options["device"], options["dtype"], _load)
        self.model, self.tokenizer, self.device = loaded.model, loaded.tokenizer, loaded.device
        self.cache = ScoreCache(enabled=options["cache"])
        self.use_template = bool(options["chat_template"] and getattr(self.tokenizer, "chat_template", None))

    def __call__(self, completions: list[Any], prompts: list[Any] | None = None, **columns: Any) -> list[float]:
        n = len(completions)
        prompt_list = prompts if isinstance(prompts, (list, tuple)) and len(prompts) == n \
            else L.prompts_column(n, columns)
        texts = [self.render(p, c) for p, c in zip(prompt_list, completions)]
        scores, _ = cached_scores(self.cache, texts, self.score_texts)
        log_metric = columns.get("log_metric")  # TRL passes one to reward functions
        if callable(log_metric):
            log_metric(f"{self.reward_name}/cache_hit_rate", self.cache.stats().hit_rate)
        return scores

    def render(self, prompt: Any, completion: Any) -> str:
        """The text the model reads for one (prompt, completion)."""
        messages = L.chat_messages(prompt)
        answer = completion_text(completion)
        if self.use_template:
            messages = [*messages, {"role": "assistant", "content": answer}]
            return self.tokenizer.apply_chat_template(messages, tokenize=False)
        question = "\n".join(completion_text([m]) for m in messages)
        return f"{question}\n{answer}" if question else answer

    def score_texts(self, texts: list[str]) -> list[float]:
        """Batched forward passes; one float per text, in the order given."""
        import torch

        tok, opts = self.tokenizer, self.options
        special = not self.use_template  # a chat template writes its own special tokens
        lengths = [len(tok(t, add_special_tokens=special)["input_ids"]) for t in texts]
        order = sorted(range(len(texts)), key=lambda i: lengths[i])
        out = [0.0] * len(texts)
        for start in range(0, len(order), opts["batch_size"]):
            idx = order[start:start + opts["batch_size"]]
            enc = tok([texts[i] for i in idx], return_tensors="pt", padding=True, truncation=True,
                      max_length=opts["max_length"], add_special_tokens=special).to(self.device)
            with torch.inference_mode():
                logits = self.model(**enc).logits.float()  # [b, num_labels]
            col = logits[:, opts["label"]]  # [b]
            if opts["activation"] == "sigmoid":
                col = torch.sigmoid(col)
            for i, v in zip(idx, col.tolist()):
                out[i] = float(v)
        return out

    def __repr__(self) -> str:
        return f"RewardModelReward({str(self.options['model'])!r}, label={self.options['label']})"


@register_reward_factory(NAME, floor=0.0, description="a local HF sequence-classification model's score")
def make_reward_model(model: str | None = None, label: int | str = 0, batch_size: int = 8, device: str = "auto",
                      dtype: str = "float32", max_length: int = 1024, chat_template: bool = True,
                      activation: str = "none", cache: bool = True) -> RewardModelReward:
    """Build the ``reward_model`` reward (options: see the module docstring)."""
    options = check_params(model=model, label=label, batch_size=batch_size, device=device, dtype=dtype,
                           max_length=max_length, chat_template=chat_template, activation=activation, cache=cache)
    return RewardModelReward(options)


make_reward_model.check_params = check_params  # type: ignore[attr-defined]


def save_tiny_reward_model(path: str | Path, *, hidden_size: int = 32, num_layers: int = 2, num_labels: int = 1,
                           seed: int = 0, init_std: float = 0.5) -> Path:
    """A random-init Llama sequence classifier with gdpo's character-level tokenizer, saved as
    an HF folder (for tests, benchmarks and trying the config out); returns the path.

    ``init_std`` is larger than a trained model's so that random scores spread visibly.
    """
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from gdpo.models import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden_size, num_hidden_layers=num_layers, num_attention_heads=4,
        num_key_value_heads=4, intermediate_size=2 * hidden_size, max_position_embeddings=2048,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None,
        num_labels=num_labels, initializer_range=init_std,
        id2label={i: f"LABEL_{i}" for i in range(num_labels)}, label2id={f"LABEL_{i}": i for i in range(num_labels)},
    )
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = LlamaForSequenceClassification(config)
    torch.random.set_rng_state(state)  # building a model must not shift the caller's RNG
    path = Path(path)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
