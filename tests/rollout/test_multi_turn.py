"""The multi-turn rollout: trajectory layout and masks, environment tokens get no gradient but
stay visible, BFCL's reference replayed token by token, and training end to end."""

from __future__ import annotations

import json

import pytest
import torch

from gdpo.data import get_task
from gdpo.envs.toy import reference_calls
from gdpo.models import build_tiny
from gdpo.rewards.reward_set import RewardSet
from gdpo.rewards.toolcall import render_tool_calls
from gdpo.rollout.hf import completion_logits, sequence_logprobs
from gdpo.rollout.multi_turn import ScriptedTurns, env_token_ids, generate_multi_turn
from gdpo.train.loss import policy_loss, token_logprobs
from gdpo.train.scoring import reward_columns


def calculator_policy(row):
    """The reference of a multi_turn_toy row: add, then multiply its result, then the number."""
    calls = reference_calls(row)

    def reply(ep):
        k = len(ep.turns)
        return render_tool_calls(calls[k]) if k < len(calls) else row["answer"]

    return reply


@pytest.fixture(scope="module")
def tiny():
    return build_tiny(max_positions=1024, seed=0)


@pytest.fixture(scope="module")
def scripted(tiny):
    tok = tiny.tokenizer
    rows = get_task("multi_turn_toy", brief=True, num_train=2, num_test=0).train
    replies = [calculator_policy(r) for r in rows for _ in range(2)]
    # sample 1 and 3 answer at once (a one-turn episode) so the batch mixes lengths
    replies[1] = replies[3] = lambda ep: "I do not know."
    out = generate_multi_turn(None, tok, rows, num_generations=2, max_new_tokens=200, max_prompt_tokens=1000,
                              turns=ScriptedTurns(tok, replies))
    return rows, out


def test_trajectory_layout_and_loss_mask(tiny, scripted):
    tok = tiny.tokenizer
    rows, out = scripted
    a, b, c = (int(x) for x in rows[0]["prompt"][-1]["content"].strip("What is?").replace("(", "").replace(")", "")
               .replace("+", " ").replace("*", " ").split())
    ids, mask = out.completion_ids[0], out.completion_mask[0]
    calls = reference_calls(rows[0])
    model_text = render_tool_calls(calls[0]) + "<|end|>" + render_tool_calls(calls[1]) + "<|end|>" + rows[0]["answer"] + "<|end|>"
    assert tok.decode(ids[mask.bool()]) == model_text  # mask 1: exactly the model's own tokens, EOS included
    # mask 0: the template's tool messages and generation prompts, then padding
    env = f"<|tool|>{a + b}<|end|><|assistant|><|tool|>{(a + b) * c}<|end|><|assistant|>"
    assert tok.decode(ids[~mask.bool()]).replace("<|pad|>", "") == env
    # the completion text is the whole trajectory, in order, without padding
    assert out.completions[0] == (render_tool_calls(calls[0]) + f"<|end|><|tool|>{a + b}<|end|><|assistant|>"
                                  + render_tool_calls(calls[1]) + f"<|end|><|tool|>{(a + b) * c}<|end|><|assistant|>"
                                  + rows[0]["answer"] + "<|end|>")
    ep = out.rows[0]["episode"]
    assert len(ep.turns) == 3 and ep.end == "answer" and ep.num_calls == 2 and ep.errors == 0
    assert out.rows[1]["episode"].end == "answer" and len(out.rows[1]["episode"].turns) == 1
    assert out.lengths[1] == len(tok("I do not know.")["input_ids"]) + 1
    # metrics: 4 episodes with 3, 1, 3, 1 turns and 2, 0, 2, 0 calls
    assert out.metrics["episode/turns"] == 2.0 and out.metrics["episode/calls_per_turn"] == pytest.approx(4 / 8)
    assert out.metrics["episode/end_answer"] == 1.0 and out.metrics["episode/env_errors"] == 0.0
    v = RewardSet.from_config(get_task("multi_turn_toy").rewards).score(out.completions, **reward_columns(out.rows))
    assert v.names == ["final_answer", "turn_format", "call_efficiency", "env_no_errors"]
    assert v.values[0].tolist() == [1.0, 1.0, 1.0, 1.0] and v.values[1].tolist() == [0.0, 1.0, 0.0, 1.0]


def test_environment_tokens_get_no_gradient_but_stay_visible(tiny, scripted):
    model = tiny.model
    _, out = scripted
    mask = out.completion_mask
    assert (mask == 0).any() and (mask == 1).any()
    logits = completion_logits(model, out.prompt_ids, out.prompt_mask, out.completion_ids, mask)  # [N, L, V]
    logits.retain_grad()
    logp = token_logprobs(logits, out.completion_ids)  # [N, L]
    adv = torch.tensor([1.0, -0.5, 2.0, -1.0])
    loss = policy_loss(logp, logp.detach(), adv, mask, eps_low=0.2, eps_high=0.2).loss
    loss.backward()
    grad = logits.grad.abs().sum(-1)  # [N, L]
    assert grad[mask == 0].max().item() == 0.0  # no loss term predicts an environment/template/pad token
    assert (grad[mask == 1] > 0).all()  # every model token is trained on
    model.zero_grad(set_to_none=True)
    # Visible: changing the tool result changes the model's later logprobs (sample 0, turn 3).
    with torch.no_grad():
        base, _ = sequence_logprobs(model, out.prompt_ids, out.prompt_mask, out.completion_ids, mask)
        env_pos = (mask[0] == 0).nonzero()[0].item() + 8  # inside the first <|tool|> message
        changed = out.completion_ids.clone()
        changed[0, env_pos] = (changed[0, env_pos] + 1) % 50 + 10
        after, _ = sequence_logprobs(model, out.prompt_ids, out.prompt_mask, changed, mask)
    last_model = mask[0].nonzero()[-1].item()
    assert not torch.allclose(base[0, last_model], after[0, last_model])
    assert torch.equal(base[1], after[1])  # other samples untouched


def test_env_token_ids_follow_the_chat_template(tiny):
    tok = tiny.tokenizer
    msgs = [{"role": "tool", "name": "add", "content": "5"}]
    assert tok.decode(env_token_ids(tok, msgs)) == "<|tool|>5<|end|><|assistant|>"
    # a turn cut without EOS gets it, masked, before the tool message
    assert tok.decode(env_token_ids(tok, msgs, ended_eos=False)) == "<|end|><|tool|>5<|end|><|assistant|>"


def test_budget_and_max_turns_end_episodes(tiny):
    tok = tiny.tokenizer
    rows = get_task("multi_turn_toy", brief=True, num_train=1, num_test=0, max_turns=2).train
    loop = lambda ep: render_tool_calls(reference_calls(rows[0])[0])  # calls forever
    out = generate_multi_turn(None, tok, rows, num_generations=1, max_new_tokens=200, max_prompt_tokens=1000,
                              turns=ScriptedTurns(tok, [loop]))
    ep = out.rows[0]["episode"]
    assert ep.end == "max_turns" and len(ep.turns) == 2 and out.metrics["episode/end_max_turns"] == 1.0
    rows = [dict(rows[0], max_turns=5, max_trajectory_tokens=70)]
    out = generate_multi_turn(None, tok, rows, num_generations=1, max_new_tokens=200, max_prompt_tokens=1000,
                              turns=ScriptedTurns(tok, [loop]))
    ep = out.rows[0]["episode"]
    assert ep.end == "budget" and out.completion_ids.shape[1] <= 70 and out.metrics["episode/end_budget"] == 1.0


def test_a_sampler_context_limit_cuts_every_budget_to_fit(tiny):
    """max_context (the vLLM engine's max_model_len) bounds prompt + trajectory for every sample."""
    from gdpo.rollout.hf import render_prompts

    tok = tiny.tokenizer
    rows = get_task("multi_turn_toy", brief=True, num_train=2, num_test=0, max_turns=5).train
    loops = [lambda ep, r=r: render_tool_calls(reference_calls(r)[0]) for r in rows]  # call forever
    prompt_lengths = render_prompts(tok, rows, 1000)[1].sum(-1)  # [2]
    limit = int(prompt_lengths.max()) + 60  # room for about two turns of the longer prompt
    out = generate_multi_turn(None, tok, rows, num_generations=1, max_new_tokens=200, max_prompt_tokens=1000,
                              turns=ScriptedTurns(tok, loops), max_context=limit)
    for i in range(2):
        trajectory = int((out.completion_ids[i] != tok.pad_token_id).sum())  # model + environment tokens
        assert limit - 25 < int(prompt_lengths[i]) + trajectory <= limit and out.rows[i]["episode"].end == "budget"
    with pytest.raises(ValueError, match="lower rollout.max_prompt_tokens"):
        generate_multi_turn(None, tok, rows, num_generations=1, max_new_tokens=200, max_prompt_tokens=1000,
                            turns=ScriptedTurns(tok, loops), max_context=int(prompt_lengths.min()))


def test_bfcl_reference_replayed_token_by_token_scores_100_percent(tiny):
    pytest.importorskip("bfcl_eval", reason="could not import bfcl_eval (scripts/setup.sh installs bfcl-eval)")
    from gdpo.data.bfcl_multi_turn import reference_replies
    from gdpo.envs.bfcl import bfcl_accuracy

    tok = tiny.tokenizer
    rows = get_task("bfcl_multi_turn", num_test=4).test
    replies = [reference_replies(r) for r in rows]
    out = generate_multi_turn(None, tok, rows, num_generations=1, max_new_tokens=2000, max_prompt_tokens=20000,
                              turns=ScriptedTurns(tok, replies))
    episodes = [r["episode"] for r in out.rows]
    assert bfcl_accuracy(episodes)["accuracy"] == 1.0
    assert all(len(e.turns) == sum(1 + bool(t) for t in json.loads(r["ground_truth"])) for e, r in zip(episodes, rows))
    assert out.metrics["episode/env_errors"] == 0.0
