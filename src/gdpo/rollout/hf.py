"""Rollouts: render prompts with the chat template, sample G completions each, and score them.

Also the forward pass that turns (prompt, completion) tokens into per-token logprobs, used
for the old, reference and current policy alike.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

from gdpo.train.fsdp import is_sharded
from gdpo.train.loss import selected_logprobs, token_entropy, token_logprobs


@dataclass
class Rollout:
    """G completions for each of a process's prompts, samples grouped contiguously."""

    prompt_ids: torch.Tensor  # [N, P] left-padded
    prompt_mask: torch.Tensor  # [N, P]
    completion_ids: torch.Tensor  # [N, L] right-padded with pad_token_id after EOS
    completion_mask: torch.Tensor  # [N, L] 1 up to and including the first EOS
    completions: list[str]  # [N] decoded, without special tokens
    rows: list[dict[str, Any]]  # [N] the dataset row of each sample (repeated G times)
    metrics: dict[str, float] = field(default_factory=dict)  # backend figures for metrics.jsonl (multi-turn)

    @property
    def lengths(self) -> torch.Tensor:
        return self.completion_mask.sum(-1)  # [N]

    def __len__(self) -> int:
        return self.completion_ids.shape[0]


def chat_texts(tokenizer, rows: list[dict[str, Any]]) -> list[str]:
    """Each row's ``prompt`` through the chat template (a string prompt is one user message)."""
    texts = []
    for row in rows:
        prompt = row["prompt"]
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        texts.append(tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False))
    return texts


class LongPrompts(NamedTuple):
    """How many prompts exceed ``limit`` tokens, and so lose their start to left truncation."""

    count: int
    total: int
    longest: int  # tokens of the longest prompt
    limit: int
    lengths: list[int]  # [B] tokens of each prompt (chat template applied)

    def message(self) -> str:
        return (f"{self.count} of {self.total} prompts exceed max_prompt_tokens={self.limit} (longest: {self.longest} "
                "tokens) and are cut from the left, losing their start (system message, tools, format rules)")


def count_long_prompts(tokenizer, rows: list[dict[str, Any]], max_prompt_tokens: int) -> LongPrompts:
    """Token counts of the chat-templated prompts, and how many :func:`render_prompts` would cut."""
    texts = chat_texts(tokenizer, rows)
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]] if texts else []
    over = sum(1 for n in lengths if n > max_prompt_tokens)
    return LongPrompts(over, len(lengths), max(lengths, default=0), max_prompt_tokens, lengths)


def render_prompts(tokenizer, rows: list[dict[str, Any]], max_prompt_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Chat-template each row's ``prompt`` and tokenize, left-padded -> ids, mask [B, P].

    A prompt over ``max_prompt_tokens`` is cut from the left (its start is lost):
    :func:`count_long_prompts` says how many, for a warning before generating.
    """
    texts = chat_texts(tokenizer, rows)
    tokenizer.padding_side = "left"
    tokenizer.truncation_side = "left"
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False,
                    truncation=True, max_length=max_prompt_tokens)
    return enc["input_ids"], enc["attention_mask"]


def response_mask(completion_ids: torch.Tensor, eos_token_id: int | list[int]) -> torch.Tensor:
    """[N, L] mask: 1 on tokens up to and including the first EOS, 0 after it."""
    eos_ids = torch.as_tensor(eos_token_id if isinstance(eos_token_id, list) else [eos_token_id])
    is_eos = torch.isin(completion_ids, eos_ids.to(completion_ids.device))  # [N, L]
    # Count EOS tokens strictly before each position; keep positions with none before.
    before = torch.cumsum(is_eos.long(), dim=-1) - is_eos.long()  # [N, L]
    return (before == 0).long()


@torch.no_grad()
def generate(model, tokenizer, rows: list[dict[str, Any]], *, num_generations: int, max_new_tokens: int,
             max_prompt_tokens: int, temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0,
             greedy: bool = False) -> Rollout:
    """Sample ``num_generations`` completions per row with HF ``generate`` (KV cache, stop at EOS)."""
    device = next(model.parameters()).device
    prompt_ids, prompt_mask = render_prompts(tokenizer, rows, max_prompt_tokens)  # [B, P]
    prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
    ids = prompt_ids.repeat_interleave(num_generations, dim=0)  # [N, P]
    mask = prompt_mask.repeat_interleave(num_generations, dim=0)  # [N, P]
    eos = tokenizer.eos_token_id
    sampling = dict(do_sample=False) if greedy else dict(do_sample=True, temperature=temperature,
                                                         top_p=top_p, top_k=top_k or None)
    # The G completions of a prompt share its prefix: encode it once per prompt, not per sample.
    cache = shared_prefix_cache(model, prompt_ids, prompt_mask, num_generations)
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=eos, use_cache=True,
                         **({} if cache is None else {_cache_arg(model): cache}), **sampling)
    completion_ids = out[:, ids.shape[1]:]  # [N, L]
    cmask = response_mask(completion_ids, eos)  # [N, L]
    completion_ids = torch.where(cmask.bool(), completion_ids, tokenizer.pad_token_id)
    texts = tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
    expanded = [row for row in rows for _ in range(num_generations)]
    return Rollout(ids, mask, completion_ids, cmask, texts, expanded)


def shared_prefix_cache(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, num_generations: int):
    """KV cache of all prompt tokens but the last, computed once per prompt, repeated G times.

    ``generate`` then feeds only the last prompt token for all N samples. The samples are
    drawn exactly as without the cache; only the prefill work drops from N to B sequences.
    Returns None (plain generate) where this does not pay off or the model is not a plain
    HF decoder with a DynamicCache.
    """
    if num_generations < 2 or prompt_ids.shape[1] < 2:
        return None
    try:
        from transformers import DynamicCache
    except ImportError:  # pragma: no cover - very old transformers
        return None
    ids, mask = prompt_ids[:, :-1], prompt_mask[:, :-1]  # [B, P-1]
    positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)  # as generate computes them
    cache = DynamicCache(config=model.config)
    try:
        model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1,
              **{_cache_arg(model): cache})
    except TypeError:  # a model without these arguments: let generate do the prefill
        return None
    cache.batch_repeat_interleave(num_generations)  # [B, ...] -> [N, ...], samples of a prompt contiguous
    return cache


def _cache_arg(model) -> str:
    """The keyword a model's forward takes its KV cache by (``cache`` since transformers 5.2x)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft passes it through
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def sequence_logprobs(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, completion_ids: torch.Tensor,
                      completion_mask: torch.Tensor, *, temperature: float = 1.0,
                      with_entropy: bool = False, entropy_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token logprobs [N, L] of the completion (and entropies [N, L] if asked).

    Logits are divided by the sampling ``temperature`` so that the old logprobs describe the
    distribution the tokens were sampled from. Position ids follow the attention mask, as in
    generation with left padding.
    """
    logits = completion_logits(model, prompt_ids, prompt_mask, completion_ids, completion_mask)  # [N, L, V]
    if temperature != 1.0:
        logits = logits / temperature
    if with_entropy and entropy_grad:  # the entropy is in the loss: plain autograd through both
        return token_logprobs(logits, completion_ids), token_entropy(logits)
    return selected_logprobs(logits, completion_ids, with_entropy)


def completion_logits(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, completion_ids: torch.Tensor,
                      completion_mask: torch.Tensor) -> torch.Tensor:
    """Logits [N, L, V] at the positions that predict the completion tokens (t predicts t+1).

    Only those L positions go through the LM head, and the last completion token (which
    predicts nothing scored) is not fed. Samples that share a prompt (a group) encode it once:
    the prompt's KV cache is computed for the distinct prompts and indexed per sample, and
    gradients flow back through it, summed over the group, as they would through N copies.
    """
    n, length = completion_ids.shape
    p = prompt_ids.shape[1]
    # Attend to every token up to the last one in the mask: the same as the mask for a single
    # turn (a prefix of ones), and in a multi-turn trajectory it keeps the tool results
    # (mask 0, not trained on) visible to the model's later turns.
    seen = completion_mask.flip(-1).cumsum(-1).flip(-1).clamp(max=1).to(completion_mask.dtype)  # [N, L]
    attn = torch.cat([prompt_mask, seen[:, :-1]], dim=1)  # [N, P+L-1]
    positions = (attn.cumsum(-1) - 1).clamp(min=0)  # [N, P+L-1]
    keys = torch.cat([prompt_ids, prompt_mask], dim=1)  # [N, 2P]
    distinct, inverse = torch.unique(keys, dim=0, return_inverse=True)  # [U, 2P], [N]
    # FSDP frees a layer's weights after its backward, before a shared prefix's gradient arrives.
    if p < 2 or distinct.shape[0] == n or is_sharded(model):
        input_ids = torch.cat([prompt_ids, completion_ids[:, :-1]], dim=1)  # [N, P+L-1]
        return model(input_ids=input_ids, attention_mask=attn, position_ids=positions, use_cache=False,
                      logits_to_keep=length).logits
    from transformers import DynamicCache

    core = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    prefix_ids, prefix_mask = distinct[:, :p - 1], distinct[:, p:2 * p - 1]  # [U, P-1]
    cache = DynamicCache(config=core.config)
    core(input_ids=prefix_ids, attention_mask=prefix_mask, position_ids=(prefix_mask.cumsum(-1) - 1).clamp(min=0),
         use_cache=True, logits_to_keep=1, **{_cache_arg(core): cache})
    cache.batch_select_indices(inverse)  # [U, ...] -> [N, ...]
    tail = torch.cat([prompt_ids[:, -1:], completion_ids[:, :-1]], dim=1)  # [N, L]
    return model(input_ids=tail, attention_mask=attn, position_ids=positions[:, -length:], use_cache=True,
                 logits_to_keep=length, **{_cache_arg(core): cache}).logits
