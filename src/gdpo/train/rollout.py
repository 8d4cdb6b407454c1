"""Rollouts: render prompts with the chat template, sample G completions each, and score them.

Also the forward pass that turns (prompt, completion) tokens into per-token logprobs, used
for the old, reference and current policy alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from gdpo.train.loss import token_entropy, token_logprobs


@dataclass
class Rollout:
    """G completions for each of a process's prompts, samples grouped contiguously."""

    prompt_ids: torch.Tensor  # [N, P] left-padded
    prompt_mask: torch.Tensor  # [N, P]
    completion_ids: torch.Tensor  # [N, L] right-padded with pad_token_id after EOS
    completion_mask: torch.Tensor  # [N, L] 1 up to and including the first EOS
    completions: list[str]  # [N] decoded, without special tokens
    rows: list[dict[str, Any]]  # [N] the dataset row of each sample (repeated G times)

    @property
    def lengths(self) -> torch.Tensor:
        return self.completion_mask.sum(-1)  # [N]

    def __len__(self) -> int:
        return self.completion_ids.shape[0]


def render_prompts(tokenizer, rows: list[dict[str, Any]], max_prompt_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Chat-template each row's ``prompt`` and tokenize, left-padded -> ids, mask [B, P]."""
    texts = []
    for row in rows:
        prompt = row["prompt"]
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        texts.append(tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False))
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
    ids, mask = render_prompts(tokenizer, rows, max_prompt_tokens)  # [B, P]
    ids = ids.repeat_interleave(num_generations, dim=0).to(device)  # [N, P]
    mask = mask.repeat_interleave(num_generations, dim=0).to(device)  # [N, P]
    eos = tokenizer.eos_token_id
    sampling = dict(do_sample=False) if greedy else dict(do_sample=True, temperature=temperature,
                                                         top_p=top_p, top_k=top_k or None)
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=eos, use_cache=True, **sampling)
    completion_ids = out[:, ids.shape[1]:]  # [N, L]
    cmask = response_mask(completion_ids, eos)  # [N, L]
    completion_ids = torch.where(cmask.bool(), completion_ids, tokenizer.pad_token_id)
    texts = tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
    expanded = [row for row in rows for _ in range(num_generations)]
    return Rollout(ids, mask, completion_ids, cmask, texts, expanded)


def sequence_logprobs(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, completion_ids: torch.Tensor,
                      completion_mask: torch.Tensor, *, temperature: float = 1.0,
                      with_entropy: bool = False, entropy_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token logprobs [N, L] of the completion (and entropies [N, L] if asked).

    Logits are divided by the sampling ``temperature`` so that the old logprobs describe the
    distribution the tokens were sampled from. Position ids follow the attention mask, as in
    generation with left padding.
    """
    input_ids = torch.cat([prompt_ids, completion_ids], dim=1)  # [N, P+L]
    attn = torch.cat([prompt_mask, completion_mask], dim=1)  # [N, P+L]
    positions = (attn.cumsum(-1) - 1).clamp(min=0)  # [N, P+L]
    logits = model(input_ids=input_ids, attention_mask=attn, position_ids=positions, use_cache=False).logits
    p = prompt_ids.shape[1]
    logits = logits[:, p - 1:-1, :] / temperature  # [N, L, V]: position t predicts token t+1
    logp = token_logprobs(logits, completion_ids)  # [N, L]
    ent = None
    if with_entropy:  # the entropy over V is costly to backprop: only when it is in the loss
        ent = token_entropy(logits if entropy_grad else logits.detach())  # [N, L]
    return logp, ent
