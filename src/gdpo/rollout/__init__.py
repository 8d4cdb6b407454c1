"""Rollouts: turning prompts into sampled completions with their token masks.

``hf`` renders chat prompts and samples with Hugging Face ``generate`` (and holds the per-token
log-prob helpers); ``vllm_engine``/``vllm_io`` drive a colocated vLLM engine; ``backends`` picks
one by ``rollout.backend``. Submodules are imported on use (vLLM only when selected).
"""
