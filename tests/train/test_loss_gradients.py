"""Gradient checks of the two hand-made paths of the loss: the chunked logprob backward
(``_SelectedLogprobs``) against autograd, and the shared-prompt KV-cache path of
``completion_logits`` against N separate sequences (per-sample gradients, summed)."""

import pytest
import torch

from gdpo.models import build_tiny
from gdpo.rollout.hf import completion_logits, render_prompts
from gdpo.train import loss as loss_module
from gdpo.train.loss import selected_logprobs, token_entropy, token_logprobs


def _reference_logprobs(logits, tokens):
    # plain autograd: log_softmax then gather -> [N, L]
    return torch.log_softmax(logits.float(), -1).gather(-1, tokens[..., None])[..., 0]


@pytest.mark.parametrize("chunk_elements", [1 << 24, 7])  # one chunk; then 7 // V = 1 row per chunk
def test_selected_logprobs_backward_equals_autograd(monkeypatch, chunk_elements):
    monkeypatch.setattr(loss_module, "_CHUNK_ELEMENTS", chunk_elements)
    torch.manual_seed(0)
    n, length, vocab = 3, 4, 5
    logits = torch.randn(n, length, vocab, requires_grad=True)
    tokens = torch.randint(0, vocab, (n, length))
    upstream = torch.randn(n, length)  # an arbitrary d loss / d logp
    logp, ent = selected_logprobs(logits, tokens, with_entropy=True)
    (grad,) = torch.autograd.grad((logp * upstream).sum(), logits)

    ref_logits = logits.detach().clone().requires_grad_(True)
    ref = _reference_logprobs(ref_logits, tokens)
    (ref_grad,) = torch.autograd.grad((ref * upstream).sum(), ref_logits)
    assert torch.allclose(logp, ref, atol=1e-6)
    assert torch.allclose(grad, ref_grad, atol=1e-6)
    assert torch.allclose(ent, token_entropy(logits.detach()), atol=1e-5)
    # each row of d logp_t / d logits_t sums to 0 (onehot - softmax), times the upstream gradient
    assert torch.allclose(grad.sum(-1), torch.zeros(n, length), atol=1e-6)


def test_selected_logprobs_gradcheck_in_double():
    # gradcheck needs float64 end to end: compare against the same function's analytic backward
    torch.manual_seed(1)
    logits = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    tokens = torch.randint(0, 4, (2, 3))

    def f(x):
        return loss_module._SelectedLogprobs.apply(x, tokens, False)[0].double()

    # forward runs in fp32 inside, so use a tolerance that fits fp32 rounding
    assert torch.autograd.gradcheck(f, (logits,), eps=1e-3, atol=1e-3, rtol=1e-3)


def test_token_logprobs_agrees_with_the_chunked_path():
    torch.manual_seed(2)
    logits = torch.randn(2, 3, 6)
    tokens = torch.randint(0, 6, (2, 3))
    assert torch.allclose(token_logprobs(logits, tokens), selected_logprobs(logits, tokens)[0], atol=1e-6)


ROWS = [{"prompt": [{"role": "user", "content": "Say the letter a."}]},
        {"prompt": [{"role": "user", "content": "Hi"}]}]


def _group_batch(tokenizer, group_size=3, length=5, seed=0):
    """Two prompts x ``group_size`` completions (left-padded prompts, some padded completions)."""
    prompt_ids, prompt_mask = render_prompts(tokenizer, ROWS, max_prompt_tokens=512)  # [2, P]
    prompt_ids = prompt_ids.repeat_interleave(group_size, 0)  # [N, P], a group's samples contiguous
    prompt_mask = prompt_mask.repeat_interleave(group_size, 0)
    gen = torch.Generator().manual_seed(seed)
    n = prompt_ids.shape[0]
    completion_ids = torch.randint(5, 40, (n, length), generator=gen)  # [N, L]
    completion_mask = torch.ones(n, length, dtype=prompt_mask.dtype)
    completion_mask[1, 3:] = 0  # a shorter completion in the first group
    completion_mask[4, 2:] = 0
    return prompt_ids, prompt_mask, completion_ids, completion_mask


def test_shared_prompt_cache_matches_separate_sequences_and_their_gradients():
    model, tok, _ = build_tiny(seed=0)
    model.train(False)
    p_ids, p_mask, c_ids, c_mask = _group_batch(tok)
    n = c_ids.shape[0]
    weights = torch.randn(n, c_ids.shape[1], generator=torch.Generator().manual_seed(3))  # [N, L]

    def objective(logits, i=slice(None)):
        # a weighted sum of the selected logprobs: any differentiable function of the logits works
        return (_reference_logprobs(logits, c_ids[i]) * weights[i] * c_mask[i]).sum()

    shared = completion_logits(model, p_ids, p_mask, c_ids, c_mask)  # the cache path: 2 distinct prompts
    model.zero_grad()
    objective(shared).backward()
    shared_grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}

    separate, summed = [], {k: torch.zeros_like(g) for k, g in shared_grads.items()}
    for i in range(n):  # one sequence at a time: no sharing is possible (N = U = 1)
        model.zero_grad()
        logits_i = completion_logits(model, p_ids[i:i + 1], p_mask[i:i + 1], c_ids[i:i + 1], c_mask[i:i + 1])
        objective(logits_i, slice(i, i + 1)).backward()
        separate.append(logits_i.detach())
        for k, p in model.named_parameters():
            if p.grad is not None:
                summed[k] += p.grad
    valid = c_mask.bool()
    assert torch.allclose(shared[valid], torch.cat(separate)[valid], atol=1e-5)
    assert shared_grads.keys() == summed.keys() and shared_grads
    for k in shared_grads:
        assert torch.allclose(shared_grads[k], summed[k], atol=1e-5, rtol=1e-4), k
