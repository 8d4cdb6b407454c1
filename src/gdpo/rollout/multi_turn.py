"""Multi-turn rollouts: generate -> parse calls -> execute -> append tool results -> generate again.

For each of the G samples of a row, an environment is made from the row (``row["env"]``,
:func:`gdpo.envs.make_env`) and the episode runs turn by turn, batched over the samples still
running, until the environment ends it (the model answered without a call), the sample's
``max_turns`` model turns, or its ``max_trajectory_tokens`` budget (model + environment tokens
after the prompt). Rows set both as columns; defaults :data:`DEFAULT_MAX_TURNS` and
``max_turns * max_new_tokens + ENV_TOKEN_ALLOWANCE``. ``rollout.max_new_tokens`` limits each model turn.

It returns the single-turn :class:`~gdpo.rollout.hf.Rollout` shape, so the trainer consumes it
unchanged:

* ``completion_ids`` [N, L]: the whole trajectory after the prompt, right-padded: the model's
  tokens of turn 1, the environment's tokens (the chat template's tool messages, the next
  generation prompt), the model's tokens of turn 2, ...
* ``completion_mask`` [N, L]: 1 on the model's own tokens only (its EOS included), 0 on the
  environment's and the template's tokens and on padding. It is the loss mask; the forward
  pass (:func:`gdpo.rollout.hf.completion_logits`) attends to every token up to the last
  model token, so tool results are read but never trained on.
* ``completions`` [N]: the decoded trajectory (special tokens kept, no padding), which
  is what samples.jsonl shows; ``rows[i]["episode"]`` holds the :class:`~gdpo.envs.Episode`
  (turn texts, parsed calls, the live environment) for the trajectory rewards.
* ``metrics``: turns per episode, calls per turn, environment errors, end reasons.

Token ids of the model's turns are kept exactly as sampled (never re-tokenized). The
environment's messages are rendered with the tokenizer's chat template as the difference
between a conversation with and without them (:func:`env_token_ids`); a turn cut at the
per-turn limit without EOS gets the EOS appended as an environment (masked) token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

import torch

from gdpo.errors import InputError
from gdpo.envs.base import Episode, Environment, StepResult, make_env, tool_message
from gdpo.rollout.hf import Rollout, render_prompts

DEFAULT_MAX_TURNS = 4
ENV_TOKEN_ALLOWANCE = 1024  # default budget for the environment's tokens on top of the model's


@dataclass
class _Sample:
    """The running state of one sample."""

    index: int  # position in the batch (row b's samples are b*G .. b*G+G-1)
    prompt: list[int]  # unpadded prompt ids
    env: Environment
    episode: Episode
    max_turns: int
    budget: int
    ids: list[int]  # trajectory ids after the prompt
    mask: list[int]  # 1 = model token
    running: bool = True


def is_multi_turn(rows: list[dict[str, Any]]) -> bool:
    """Rows that name an environment get multi-turn episodes (all or none of a batch)."""
    flags = {bool(row.get("env")) for row in rows}
    if len(flags) > 1:
        raise InputError("a rollout batch mixes rows with and without an 'env' column; a task's rows "
                         "must all be multi-turn (env set) or all single-turn")
    return flags == {True}


@torch.no_grad()
def generate_multi_turn(model, tokenizer, rows: list[dict[str, Any]], *, num_generations: int,
                        max_new_tokens: int, max_prompt_tokens: int, temperature: float = 1.0,
                        top_p: float = 1.0, top_k: int = 0, greedy: bool = False,
                        turns: TurnSampler | None = None, max_context: int | None = None) -> Rollout:
    """Run one episode per sample (G per row, contiguous); see the module doc.

    ``turns`` samples the model turns: HF ``generate`` on ``model`` by default
    (:class:`HFTurns`); :class:`ScriptedTurns` plays text policies (the reference) through the
    same token-level path; the vLLM backend passes its engine's
    (:class:`gdpo.rollout.vllm_engine.VLLMTurns`). ``max_context``: the longest prompt +
    trajectory the sampler takes (an engine's ``max_model_len``); each sample's budget is cut
    to fit it, so an episode that would outgrow it ends by ``budget``.
    """
    device = next(model.parameters()).device if model is not None else torch.device("cpu")
    prompt_ids, prompt_mask = render_prompts(tokenizer, rows, max_prompt_tokens)  # [B, P]
    expanded = [row for row in rows for _ in range(num_generations)]
    samples = [_new_sample(i, row, prompt_ids[i // num_generations], prompt_mask[i // num_generations],
                           max_new_tokens, max_context) for i, row in enumerate(expanded)]
    if turns is None:
        sampling = dict(do_sample=False) if greedy else dict(do_sample=True, temperature=temperature,
                                                             top_p=top_p, top_k=top_k or None)
        turns = HFTurns(model, tokenizer, device, sampling)
    while any(s.running for s in samples):
        active = [s for s in samples if s.running]
        limit = min(max_new_tokens, max(s.budget - len(s.ids) for s in active))
        for s, tokens in zip(active, turns(active, limit)):
            _advance(s, tokens, tokenizer)
    ids = prompt_ids.repeat_interleave(num_generations, dim=0).to(device)  # [N, P]
    mask = prompt_mask.repeat_interleave(num_generations, dim=0).to(device)  # [N, P]
    completion_ids, completion_mask = _pad(samples, tokenizer.pad_token_id, device)  # [N, L]
    texts = [_decode(tokenizer, s.ids) for s in samples]
    out_rows = [{**row, "episode": s.episode} for row, s in zip(expanded, samples)]
    return Rollout(ids, mask, completion_ids, completion_mask, texts, out_rows,
                   metrics=episode_metrics([s.episode for s in samples]))


def episode_limits(row: dict[str, Any], max_new_tokens: int) -> tuple[int, int]:
    """A row's (model turns, trajectory token budget): its ``max_turns`` and
    ``max_trajectory_tokens`` columns, else the defaults of the module doc.

    >>> episode_limits({"max_turns": 2}, max_new_tokens=8)
    (2, 1040)
    >>> episode_limits({"max_trajectory_tokens": 50}, max_new_tokens=8)
    (4, 50)
    """
    max_turns = int(DEFAULT_MAX_TURNS if row.get("max_turns") is None else row["max_turns"])
    budget = row.get("max_trajectory_tokens")
    budget = int(max_turns * max_new_tokens + ENV_TOKEN_ALLOWANCE if budget is None else budget)
    if max_turns < 1 or budget < 1:
        raise ValueError(f"row {row.get('id', '')!r}: max_turns={max_turns} and max_trajectory_tokens={budget} "
                         "must be >= 1")
    return max_turns, budget


def _new_sample(index: int, row: dict[str, Any], prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                max_new_tokens: int, max_context: int | None = None) -> _Sample:
    env = make_env(row)
    env.reset(row)
    max_turns, budget = episode_limits(row, max_new_tokens)
    prompt = prompt_ids[prompt_mask.bool()].tolist()
    if max_context is not None:
        budget = min(budget, max_context - len(prompt))
        if budget < 1:
            raise ValueError(f"row {row.get('id', '')!r}: its prompt ({len(prompt)} tokens) leaves no room in the "
                             f"sampler's context of {max_context} tokens; lower rollout.max_prompt_tokens")
    episode = Episode(env=env, turns=[], parsed=[], env_messages=[])
    return _Sample(index, prompt, env, episode, max_turns, budget, [], [])


class TurnSampler(Protocol):
    """Samples one model turn for each running sample -> its new token ids (EOS-terminated or cut)."""

    def __call__(self, active: list[_Sample], limit: int) -> list[list[int]]: ...


class HFTurns:
    """Model turns from HF ``generate`` on the left-padded contexts (prompt + trajectory so far)."""

    def __init__(self, model, tokenizer, device, sampling: dict[str, Any]):
        self.model, self.tokenizer, self.device, self.sampling = model, tokenizer, device, sampling

    def __call__(self, active: list[_Sample], limit: int) -> list[list[int]]:
        contexts = [s.prompt + s.ids for s in active]
        width = max(len(c) for c in contexts)
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(c)) + c for c in contexts], device=self.device)  # [A, W]
        attn = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in contexts], device=self.device)  # [A, W]
        out = self.model.generate(input_ids=ids, attention_mask=attn, max_new_tokens=limit, pad_token_id=pad,
                                  eos_token_id=self.tokenizer.eos_token_id, use_cache=True, **self.sampling)
        eos = eos_ids(self.tokenizer)
        return [until_eos(row, eos) for row in out[:, width:].tolist()]


def until_eos(tokens: list[int], eos_ids: list[int]) -> list[int]:
    """``tokens`` up to and including the first EOS (all of them when there is none).

    >>> until_eos([5, 6, 2, 0, 0], [2])
    [5, 6, 2]
    >>> until_eos([5, 6], [2])
    [5, 6]
    """
    for i, t in enumerate(tokens):
        if t in eos_ids:
            return tokens[: i + 1]
    return list(tokens)


class ScriptedTurns:
    """Model turns from text policies: ``replies[i](episode) -> text`` for sample ``i``, + EOS.

    The text is tokenized as the model would have written it; the environment, masks and
    rendering are the real ones. Used for the reference policy and for tests.
    """

    def __init__(self, tokenizer, replies: list[Callable[[Episode], str]]):
        self.tokenizer, self.replies = tokenizer, replies

    def __call__(self, active: list[_Sample], limit: int) -> list[list[int]]:
        out = []
        for s in active:
            text = self.replies[s.index](s.episode)
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"] + [eos_ids(self.tokenizer)[0]]
            out.append(ids[:limit])
        return out


def _advance(s: _Sample, tokens: list[int], tokenizer) -> None:
    """Append a model turn, run the environment, append its reply or end the episode."""
    ep = s.episode
    tokens = tokens[: s.budget - len(s.ids)]
    ended_eos = bool(tokens) and tokens[-1] in eos_ids(tokenizer)
    s.ids += tokens
    s.mask += [1] * len(tokens)
    ep.model_tokens += len(tokens)
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    ep.turns.append(text)
    parsed = s.env.parse(text)
    ep.parsed.append(parsed)
    if parsed.ok:
        result = s.env.step(parsed.calls, text)
    else:  # an unreadable block: the model is told why, the episode goes on
        ep.parse_errors += 1
        result = StepResult([tool_message("error", f"Error: could not read the tool calls: {parsed.error}")])
    if result.done:
        return _end(s, "answer" if not parsed.calls else "env")
    if len(ep.turns) >= s.max_turns:
        return _end(s, "max_turns")
    if len(s.ids) >= s.budget:
        return _end(s, "budget")
    env_ids = env_token_ids(tokenizer, result.messages, ended_eos)
    if len(s.ids) + len(env_ids) >= s.budget:  # no room left for a model token after them
        return _end(s, "budget")
    ep.env_messages.append(result.messages)
    s.ids += env_ids
    s.mask += [0] * len(env_ids)
    ep.env_tokens += len(env_ids)


def _end(s: _Sample, reason: str) -> None:
    s.running = False
    s.episode.end = reason
    s.episode.env_messages.append([])


def env_token_ids(tokenizer, messages: list[dict[str, str]], ended_eos: bool = True) -> list[int]:
    """Token ids of ``messages`` after an assistant turn, up to the next generation prompt.

    Rendered with the chat template as ``render(dummy + messages, generation prompt)`` minus
    ``render(dummy)``, where ``dummy`` is a user/assistant exchange; the text the template puts
    after the assistant's EOS (e.g. a newline) comes first. Templates that refuse the ``tool``
    role get the results as one user message.
    """
    dummy = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]
    base = tokenizer.apply_chat_template(dummy, tokenize=False)
    try:
        full = tokenizer.apply_chat_template(dummy + messages, add_generation_prompt=True, tokenize=False)
    except Exception:  # a template without a tool role
        merged = [{"role": "user", "content": "\n".join(_as_user(m) for m in messages)}]
        full = tokenizer.apply_chat_template(dummy + merged, add_generation_prompt=True, tokenize=False)
    if not full.startswith(base):
        raise ValueError("the chat template renders a conversation differently once messages follow an "
                         "assistant turn, so tool results cannot be appended token by token; use a model "
                         "whose template is prefix-stable (most are)")
    eos_text = tokenizer.eos_token or ""
    cut = base.rfind(eos_text) if eos_text else -1
    tail = base[cut + len(eos_text):] if cut >= base.rfind("y") else ""
    ids = tokenizer(tail + full[len(base):], add_special_tokens=False)["input_ids"]
    return ids if ended_eos else [eos_ids(tokenizer)[0], *ids]


def _as_user(message: dict[str, str]) -> str:
    if message.get("role") == "tool":
        return f"Result of {message.get('name', 'the tool')}: {message.get('content', '')}"
    return str(message.get("content", ""))


def eos_ids(tokenizer) -> list[int]:
    """The tokenizer's EOS id(s) as a list (some tokenizers name several)."""
    eos = tokenizer.eos_token_id
    return list(eos) if isinstance(eos, (list, tuple)) else [eos]


def _pad(samples: list[_Sample], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(1, max(len(s.ids) for s in samples))
    ids = torch.full((len(samples), length), pad_id, dtype=torch.long)  # [N, L]
    mask = torch.zeros((len(samples), length), dtype=torch.long)  # [N, L]
    for i, s in enumerate(samples):
        ids[i, :len(s.ids)] = torch.tensor(s.ids, dtype=torch.long)
        mask[i, :len(s.mask)] = torch.tensor(s.mask, dtype=torch.long)
    return ids.to(device), mask.to(device)


def _decode(tokenizer, ids: list[int]) -> str:
    """The trajectory's text with its template tokens (``ids`` hold no padding: that is added in _pad)."""
    return tokenizer.decode(ids, skip_special_tokens=False)


def episode_metrics(episodes: list[Episode]) -> dict[str, float]:
    """Means over this process's episodes: turns, calls per turn, errors, end reasons."""
    n = max(1, len(episodes))
    turns = sum(len(e.turns) for e in episodes)
    out = {
        "episode/turns": turns / n,
        "episode/calls_per_turn": sum(e.num_calls for e in episodes) / max(1, turns),
        "episode/env_errors": sum(e.errors for e in episodes) / n,
        "episode/env_tokens": sum(e.env_tokens for e in episodes) / n,
    }
    for reason in ("answer", "max_turns", "budget", "env"):
        out[f"episode/end_{reason}"] = sum(e.end == reason for e in episodes) / n
    return out
