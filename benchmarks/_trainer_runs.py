"""One trainer run for bench_trainer.py, in its own process: ours (gdpo / grpo) or TRL's GRPOTrainer.

Each run records, per step: wall time, generation time (ours only), prompt and completion
tokens actually processed; once: the fp32 matmul rate measured in this process just before
training, the parameter count, RSS after loading and the peak RSS of the whole process.
Everything goes to a JSON file whose path the parent passes.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402


def rss_mib() -> float:
    """Current resident set size (MiB), from /proc."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def matmul_gflops(rows: int, inner: int, cols: int, repeats: int = 7) -> float:
    """fp32 GEMM rate (GFLOP/s) of [rows, inner] @ [inner, cols]: median of ``repeats`` timings."""
    a, b = torch.randn(rows, inner), torch.randn(inner, cols)
    a @ b  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2.0 * rows * inner * cols / statistics.median(times) / 1e9


def load(spec: dict[str, Any]):
    """The model (fp32) and tokenizer both systems train, built the same way."""
    from gdpo.models import load_model_and_tokenizer

    return load_model_and_tokenizer(spec["model"], tiny=spec.get("tiny") or None, seed=spec["seed"])


def force_length(model, spec: dict[str, Any]) -> None:
    """With ``forced`` lengths every completion has exactly max_new_tokens (EOS is suppressed)."""
    if spec["lengths"] == "forced":
        model.generation_config.min_new_tokens = spec["max_new_tokens"]


def task_rows(spec: dict[str, Any]):
    from gdpo.data.base import get_task

    return get_task("math", num_train=spec["num_prompts"], num_test=0, seed=spec["seed"])


def measure(spec: dict[str, Any], model) -> dict[str, float]:
    """Parameter count, and the matmul rate of a GEMM shaped like the model's MLP up-projection
    over the batch's tokens (N x ~(64 + max_new_tokens) rows), measured right before training."""
    cfg = model.config
    hidden = cfg.hidden_size
    rows = spec["prompts"] * spec["generations"] * (spec["max_new_tokens"] + 64)
    return {"params": float(sum(p.numel() for p in model.parameters())),
            "matmul_gflops": matmul_gflops(rows, hidden, cfg.intermediate_size)}


# ----------------------------------------------------------------------------------------------
def run_ours(spec: dict[str, Any]) -> dict[str, Any]:
    import gdpo.models
    import gdpo.rollout.backends as generators
    from gdpo.train import train

    steps: list[dict[str, float]] = []
    probe: dict[str, float] = {}
    # generators.generate is what the HF rollout backend calls
    original_load, original_generate = gdpo.models.load_model_and_tokenizer, generators.generate

    def load_forced(*args, **kwargs):  # the trainer loads its own copy; force lengths on it
        out = original_load(*args, **kwargs)
        force_length(out.model, spec)
        probe.update(measure(spec, out.model))
        return out

    def generate_counted(*args, **kwargs):
        rollout = original_generate(*args, **kwargs)
        steps.append({"prompt_tokens": float(rollout.prompt_mask.sum()),
                      "prompt_width": float(rollout.prompt_ids.shape[1]),
                      "completion_tokens": float(rollout.completion_mask.sum()),
                      "sequences": float(len(rollout))})
        return rollout

    gdpo.models.load_model_and_tokenizer = load_forced
    generators.generate = generate_counted
    n = spec["prompts"] * spec["generations"]
    with tempfile.TemporaryDirectory() as out:
        config = {
            "seed": spec["seed"], "steps": spec["steps"], "output_dir": out, "method": spec["method"],
            "model": {"name": spec["model"], "tiny": spec.get("tiny") or {}},
            "task": {"name": "math", "params": {"num_train": spec["num_prompts"], "num_test": 0,
                                                "seed": spec["seed"]}},
            "rollout": {"prompts_per_step": spec["prompts"], "num_generations": spec["generations"],
                        "max_new_tokens": spec["max_new_tokens"], "temperature": 1.0},
            "loss": {"beta": 0.0, "aggregation": "token_mean"},
            "optim": {"lr": 1e-6, "max_grad_norm": 1.0},
            "update": {"ppo_epochs": 1, "num_minibatches": 1, "micro_batch_size": spec["micro"] or n},
            "checkpoint": {"every": 0, "keep_last": 1, "save_final_model": False},
            "logging": {"tensorboard": False, "samples_every": 0, "progress": "lines"},
            "eval": {"every": 0},
        }
        rss_before = rss_mib()
        result = train(config)
    for row, step in zip(result.history, steps):
        step["step_s"] = row["time/step_s"]
        step["generate_s"] = row["time/generate_s"]
    return {"steps": steps, "rss_before_mib": rss_before, **probe}


# ----------------------------------------------------------------------------------------------
def run_trl(spec: dict[str, Any]) -> dict[str, Any]:
    import warnings

    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from gdpo.integrations.trl import trl_rewards

    warnings.filterwarnings("ignore")
    model, tok, _ = load(spec)
    force_length(model, spec)
    probe = measure(spec, model)
    task = task_rows(spec)
    data = Dataset.from_list([{"prompt": r["prompt"], "answer": r["answer"]} for r in task.train])
    rewards = trl_rewards(task.rewards, tokenizer=tok)
    n = spec["prompts"] * spec["generations"]
    micro = spec["micro"] or n
    steps: list[dict[str, float]] = []

    class Counted(GRPOTrainer):
        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)
            steps.append({"prompt_tokens": float(out["prompt_mask"].sum()),
                          "prompt_width": float(out["prompt_ids"].shape[1]),
                          "completion_tokens": float(out["completion_mask"].sum()),
                          "sequences": float(out["completion_ids"].shape[0])})
            return out

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t0)

    times: list[float] = []
    with tempfile.TemporaryDirectory() as out:
        args = GRPOConfig(
            output_dir=out, use_cpu=True, bf16=False, fp16=False, seed=spec["seed"],
            max_steps=spec["steps"], per_device_train_batch_size=micro, gradient_accumulation_steps=n // micro,
            num_generations=spec["generations"], max_completion_length=spec["max_new_tokens"],
            temperature=1.0, top_p=1.0, top_k=0, beta=0.0, num_iterations=1, learning_rate=1e-6,
            max_grad_norm=1.0, loss_type="dapo", reward_weights=rewards.weights,
            generation_kwargs={"min_new_tokens": spec["max_new_tokens"]} if spec["lengths"] == "forced" else None,
            logging_steps=1, report_to="none", save_strategy="no", disable_tqdm=True,
            dataloader_num_workers=0, log_completions=False,
        )
        rss_before = rss_mib()
        trainer = Counted(model=model, processing_class=tok, reward_funcs=rewards.funcs, args=args,
                          train_dataset=data, callbacks=[Clock()])
        trainer.train()
    if len(steps) != len(times):  # one generation per optimizer step is what this benchmark compares
        raise RuntimeError(f"TRL generated {len(steps)} times in {len(times)} steps")
    for row, t in zip(steps, times):
        row["step_s"] = t
    return {"steps": steps, "rss_before_mib": rss_before, **probe}


# ----------------------------------------------------------------------------------------------
def main(spec_path: str, out_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(spec["seed"])
    system = spec["system"]
    result = run_trl(spec) if system == "trl" else run_ours(spec)
    result.update(system=system, peak_rss_mib=peak_rss_mib(), threads=torch.get_num_threads())
    Path(out_path).write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
