"""Rollout pieces on a real tiny model: EOS masks, prompt rendering, logprobs vs generate."""

import torch

from gdpo.models import build_tiny
from gdpo.rollout.hf import (
    generate,
    render_prompts,
    response_mask,
    sequence_logprobs,
)
from gdpo.train.scoring import groups_with_spread

ROWS = [{"prompt": [{"role": "user", "content": "Say the letter a."}], "target": "a"},
        {"prompt": [{"role": "user", "content": "Hi"}], "target": "b"}]


def test_response_mask_stops_after_first_eos():
    eos = 2
    ids = torch.tensor([[5, 2, 7, 2], [5, 6, 7, 8], [2, 0, 0, 0]])
    assert response_mask(ids, eos).tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]


def test_prompts_are_left_padded():
    tok = build_tiny().tokenizer
    ids, mask = render_prompts(tok, ROWS, max_prompt_tokens=512)
    # "<|user|>Hi<|end|><|assistant|>" = 5 tokens; the other = 3 + 17 chars = 20 tokens
    assert mask.sum(-1).tolist() == [20, 5]
    assert mask[1, :15].sum() == 0 and ids[1, 0] == tok.pad_token_id


def test_sequence_logprobs_match_the_generation_distribution():
    model, tok, _ = build_tiny(seed=0)
    torch.manual_seed(0)
    out = generate(model, tok, ROWS, num_generations=2, max_new_tokens=6, max_prompt_tokens=512,
                   temperature=0.7)
    assert len(out) == 4 and out.rows[1] is ROWS[0] and out.rows[2] is ROWS[1]
    # Recompute the sampled tokens' logprobs step by step, unpadded, one sequence at a time.
    logp, _ = sequence_logprobs(model, out.prompt_ids, out.prompt_mask, out.completion_ids,
                                out.completion_mask, temperature=0.7)
    for i in range(4):
        prompt = out.prompt_ids[i][out.prompt_mask[i].bool()]
        n = int(out.completion_mask[i].sum())
        full = torch.cat([prompt, out.completion_ids[i, :n]])[None]
        logits = model(full).logits[0, len(prompt) - 1:-1] / 0.7
        ref = torch.log_softmax(logits, -1).gather(-1, out.completion_ids[i, :n, None])[:, 0]
        assert torch.allclose(logp[i, :n], ref, atol=1e-4)


def test_dynamic_sampling_keeps_groups_with_spread():
    # group 0 totals (1, 1): no spread; group 1 totals (0, 2): spread
    values = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [1.0, 1.0]]).numpy()
    keep = groups_with_spread(values, torch.ones(2).double().numpy(), torch.tensor([0, 0, 1, 1]).numpy())
    assert keep.tolist() == [False, False, True, True]
