"""Rollout backends on CPU: config, fail-fast checks, and the vLLM path's pieces that need no vLLM.

The vLLM engine itself runs only in tests/train/test_vllm_gpu.py (skipped without vLLM + CUDA).
"""

import copy
import importlib.util
from pathlib import Path

import pytest
import torch
import yaml

from gdpo.cli import main
from gdpo.models import build_tiny, load_model_and_tokenizer
from gdpo.rollout import backends as generators
from gdpo.train import ConfigError, config_from_dict, train
from gdpo.rollout.backends import HFGenerator, check_backend
from gdpo.train.precision import compute_dtype
from gdpo.rollout.hf import generate, render_prompts
from gdpo.rollout.vllm_io import (
    engine_context,
    engine_dtype,
    engine_folder,
    policy_weights,
    prompt_seeds,
    rollout_from_samples,
    turn_seeds,
)

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml"

VLLM_PRESENT = importlib.util.find_spec("vllm") is not None
ROWS = [{"prompt": "Say the letter a.", "target": "a"}, {"prompt": "Hi", "target": "b"}]


def _smoke(tmp_path, **rollout):
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg.update(output_dir=str(tmp_path / "run"), steps=1)
    cfg["rollout"].update(prompts_per_step=2, num_generations=2, max_new_tokens=3, **rollout)
    return cfg


# --------------------------------------------------------------------------- config
def test_backend_defaults_to_hf_and_round_trips():
    cfg = config_from_dict({"rollout": {"backend": "vllm", "vllm_sleep": True}})
    assert (cfg.rollout.backend, cfg.rollout.vllm_sleep, cfg.rollout.vllm_gpu_memory_utilization) == ("vllm", True, 0.3)
    assert config_from_dict({}).rollout.backend == "hf"


@pytest.mark.parametrize("rollout, words", [
    ({"backend": "vlm"}, ["rollout.backend", "'vlm'", "Did you mean 'vllm'"]),
    ({"backend": "hff"}, ["rollout.backend", "Did you mean 'hf'", "'vllm'"]),
    ({"vllm_gpu_memory_utilization": 0}, ["rollout.vllm_gpu_memory_utilization", "(0, 1]"]),
    ({"vllm_gpu_memory_utilization": 1.5}, ["rollout.vllm_gpu_memory_utilization", "1.5"]),
    ({"vllm_gpu_memory_utilization": "lots"}, ["rollout.vllm_gpu_memory_utilization", "must be a number"]),
    ({"vllm_sleep": "yes"}, ["rollout.vllm_sleep", "true or false"]),
    ({"vllm_sleeep": True}, ["rollout.vllm_sleeep", "'vllm_sleep'"]),
])
def test_bad_backend_settings_name_the_key_and_the_fix(rollout, words):
    with pytest.raises(ConfigError) as info:
        config_from_dict({"rollout": rollout})
    for word in words:
        assert word in str(info.value)


# --------------------------------------------------------------------------- fail fast
@pytest.mark.skipif(VLLM_PRESENT, reason="vllm is installed here; this checks the message where it is absent")
def test_vllm_backend_without_vllm_fails_before_loading_any_model(tmp_path, monkeypatch):
    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded before the backend check")

    monkeypatch.setattr("gdpo.train.session.load_policy", no_loading)
    with pytest.raises(ConfigError) as info:
        train(_smoke(tmp_path, backend="vllm"))
    message = str(info.value)
    assert "rollout.backend" in message and "pip install vllm on a CUDA machine" in message
    assert "rollout.backend=hf" in message
    assert not (tmp_path / "run").exists()  # nothing written either


@pytest.mark.skipif(VLLM_PRESENT, reason="vllm is installed here")
def test_cli_reports_the_missing_vllm_as_a_config_error(tmp_path, capsys):
    code = main(["train", "--config", str(SMOKE), "--output-dir", str(tmp_path), "--set", "rollout.backend=vllm"])
    assert code == 2
    err = capsys.readouterr().err
    assert "rollout.backend" in err and "pip install vllm" in err


def test_vllm_backend_without_cuda_names_the_gpu_and_the_fix(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    monkeypatch.setattr(generators, "vllm_installed", lambda: True)  # only the install check is bypassed
    with pytest.raises(ConfigError, match="needs a CUDA GPU.*rollout.backend=hf"):
        check_backend(config_from_dict({"rollout": {"backend": "vllm"}}))


def test_hf_backend_needs_nothing():
    check_backend(config_from_dict({}))


# --------------------------------------------------------------------------- HF backend unchanged
def test_hf_generator_is_plain_generate():
    cfg = config_from_dict({"rollout": {"num_generations": 3, "max_new_tokens": 5, "temperature": 0.8}})
    model, tok, _ = build_tiny(seed=0)
    policy = type("P", (), {"core": model, "tokenizer": tok})()
    torch.manual_seed(1)
    ours = HFGenerator(cfg, policy).generate(ROWS, step=1)
    torch.manual_seed(1)
    plain = generate(model, tok, ROWS, num_generations=3, max_new_tokens=5, max_prompt_tokens=1024, temperature=0.8)
    assert torch.equal(ours.completion_ids, plain.completion_ids) and ours.completions == plain.completions


# --------------------------------------------------------------------------- vLLM path pieces
def test_samples_are_padded_and_masked_like_the_hf_path():
    model, tok, _ = build_tiny(seed=0)
    torch.manual_seed(0)
    hf = generate(model, tok, ROWS, num_generations=3, max_new_tokens=6, max_prompt_tokens=1024)
    # What vLLM returns: each sample's tokens up to its first EOS (included) or the length limit.
    samples = [ids[: int(n)].tolist() for ids, n in zip(hf.completion_ids, hf.lengths)]
    prompt_ids, prompt_mask = render_prompts(tok, ROWS, 1024)
    ours = rollout_from_samples(prompt_ids, prompt_mask, samples, ROWS, 3, tok)
    for name in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask"):
        assert torch.equal(getattr(ours, name), getattr(hf, name)), name
    assert ours.completions == hf.completions and ours.rows == hf.rows


def test_eos_in_the_middle_truncation_and_pad_equal_to_eos():
    tok = copy.deepcopy(build_tiny().tokenizer)
    eos, pad = tok.eos_token_id, tok.pad_token_id
    a, b = tok.convert_tokens_to_ids(["a", "b"])
    prompt_ids, prompt_mask = render_prompts(tok, ROWS[:1], 1024)
    out = rollout_from_samples(prompt_ids, prompt_mask, [[a, eos], [a, b, b, b], [eos]], ROWS[:1], 3, tok)
    assert out.completion_mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    assert out.completion_ids.tolist() == [[a, eos, pad, pad], [a, b, b, b], [eos, pad, pad, pad]]
    assert out.completions == ["a", "abbb", ""] and out.lengths.tolist() == [2, 4, 1]
    tok.pad_token = tok.eos_token  # models whose pad is their EOS: padding must not count as a token
    out = rollout_from_samples(prompt_ids, prompt_mask, [[a], [a, b, eos]], ROWS[:1], 2, tok)
    assert out.completion_mask.tolist() == [[1, 0, 0], [1, 1, 1]]
    with pytest.raises(ValueError, match="num_generations=3"):
        rollout_from_samples(prompt_ids, prompt_mask, [[a]], ROWS[:1], 3, tok)


def test_policy_weights_are_the_hf_names_of_a_plain_model():
    model = build_tiny(seed=0).model
    pushed = dict(policy_weights(model))
    assert pushed.keys() == dict(model.named_parameters()).keys()
    assert all(t.data_ptr() == p.data_ptr() for t, p in zip(pushed.values(), model.parameters()))  # no copies


def test_lora_weights_are_merged_without_touching_the_trained_model():
    from peft import LoraConfig, get_peft_model

    base = build_tiny(seed=0).model
    names = set(base.state_dict())
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.1)  # B = 0 at init would make the merge trivial
    before = {k: v.clone() for k, v in peft_model.state_dict().items()}
    pushed = dict(policy_weights(peft_model))
    merged = copy.deepcopy(peft_model).merge_and_unload()
    reference = {k: v.detach() for k, v in merged.named_parameters()}  # a tied lm_head is not listed twice
    assert set(pushed) <= names and set(pushed) == set(reference)
    for name, tensor in pushed.items():
        assert torch.allclose(tensor, reference[name], atol=1e-6), name
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(pushed[q], before[f"base_model.model.{q.replace('.weight', '.base_layer.weight')}"])
    assert all(torch.equal(v, before[k]) for k, v in peft_model.state_dict().items())


def test_tiny_is_saved_for_the_engine_and_other_names_must_be_folders(tmp_path):
    cfg = config_from_dict({"model": {"name": "tiny", "tiny": {"hidden_size": 32, "num_heads": 2}},
                            "output_dir": str(tmp_path)})
    folder = engine_folder(cfg, rank=1)
    assert folder == tmp_path / "vllm_model" / "rank-1" and (folder / "config.json").is_file()
    loaded = load_model_and_tokenizer(str(folder))
    assert loaded.model.config.hidden_size == 32 and loaded.tokenizer.eos_token == "<|end|>"
    built = build_tiny(hidden_size=32, num_heads=2, seed=cfg.seed).model
    assert all(torch.equal(a, b) for a, b in zip(loaded.model.parameters(), built.parameters()))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no config.json"):
        engine_folder(config_from_dict({"model": {"name": str(tmp_path / "empty")}}), rank=0)


def test_engine_dtype_follows_the_training_dtype():
    assert engine_dtype("bfloat16", torch.bfloat16) == "bfloat16"
    assert engine_dtype("auto", torch.bfloat16) == "bfloat16"
    assert engine_dtype("float32", torch.float32) == "float32"
    assert engine_dtype("auto", torch.float32) == "float16"  # fp16-only GPU: fast sampling, fp32 training


def test_prompt_seeds_are_reproducible_and_differ_by_step_and_rank():
    assert prompt_seeds(0, 0, 5, 4) == prompt_seeds(0, 0, 5, 4)
    seen = {s for step in range(1, 50) for rank in range(2) for s in prompt_seeds(0, rank, step, 4)}
    assert len(seen) == 49 * 2 * 4


def test_turn_seeds_are_reproducible_and_differ_by_turn_step_rank_and_sample():
    assert turn_seeds(0, 0, 3, 1, 8) == turn_seeds(0, 0, 3, 1, 8)
    seen = [s for step in range(1, 6) for rank in range(2) for turn in range(4) for s in turn_seeds(0, rank, step, turn, 8)]
    assert len(set(seen)) == len(seen) == 5 * 2 * 4 * 8
    assert not set(seen) & {s for step in range(1, 6) for rank in range(2) for s in prompt_seeds(0, rank, step, 8)}


def test_engine_context_covers_the_longest_trajectory_budget():
    cfg = config_from_dict({"rollout": {"max_prompt_tokens": 100, "max_new_tokens": 16}})
    assert engine_context(cfg, ROWS, model_limit=None) == 116  # single turn: prompt + completion
    assert engine_context(cfg, ROWS, model_limit=64) == 64  # never past the model's positions
    # multi-turn: 3 turns x 16 + 1024 environment allowance = 1072 (row 1), an explicit 500 (row 2)
    rows = [{"prompt": "x", "env": "toy_peek", "max_turns": 3}, {"prompt": "y", "env": "toy_peek",
                                                                  "max_trajectory_tokens": 500}]
    assert engine_context(cfg, rows, model_limit=None) == 100 + 1072
    assert engine_context(cfg, rows[1:], model_limit=8192) == 600
    assert engine_context(cfg, rows, model_limit=1024) == 1024


def test_mixed_single_and_multi_turn_rows_are_refused_in_one_line():
    from gdpo.errors import InputError

    with pytest.raises(InputError, match="mixes rows with and without an 'env' column"):
        generators.is_multi_turn([{"prompt": "x", "env": "toy_peek"}, {"prompt": "y"}])


# --------------------------------------------------------------------------- dtype on GPUs without bf16
def test_auto_falls_back_to_fp32_where_bf16_is_not_native(monkeypatch):
    from gdpo.train import precision

    cpu, gpu = torch.device("cpu"), torch.device("cuda:0")
    assert compute_dtype("auto", cpu) == torch.float32
    assert compute_dtype("bfloat16", cpu) == torch.bfloat16
    assert compute_dtype("float32", cpu) == torch.float32
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)  # e.g. a T4 or V100
    monkeypatch.setattr(precision, "_device_name", lambda device: "cuda:0 (Tesla T4)")
    assert compute_dtype("auto", gpu) == torch.float32
    with pytest.raises(ConfigError, match="no native bf16.*model.dtype=auto or float32"):
        compute_dtype("bfloat16", gpu)
    monkeypatch.setattr(precision, "native_bf16", lambda device: True)
    assert compute_dtype("auto", gpu) == torch.bfloat16
