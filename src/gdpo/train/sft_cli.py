"""`gdpo sft`: supervised fine-tuning of a causal LM on chat data (loss on assistant replies only).

Examples::

    gdpo sft --config configs/sft/smoke.yaml --output-dir runs/sft-smoke
    gdpo sft --config configs/sft/smollm2_toolrl.yaml --set train.lr=1e-5
    gdpo sft --output-dir runs/sft-smoke --resume      # continue from the last checkpoint
    gdpo train --config configs/smoke.yaml --set model.name=runs/sft-smoke/final

The model lands in ``<output-dir>/final``, a plain HF folder for ``model.name`` / ``--model``.
"""

from __future__ import annotations

import argparse
import os
import sys

from gdpo.train.cli import add_run_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(parser, "train.lr=1e-5", "continue from the last checkpoint in the output dir")


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # model hubs are never contacted
    from gdpo.train.config_io import ConfigError
    from gdpo.train.sft_config import config_to_dict, load_sft_config

    overrides = list(args.overrides)
    try:
        if args.print_config:
            import yaml

            extra = [f"output_dir={args.output_dir}"] if args.output_dir else []
            print(yaml.safe_dump(config_to_dict(load_sft_config(args.config, overrides + extra)), sort_keys=False),
                  end="")
            return 0
        from gdpo.train.sft import load_and_sft

        result = load_and_sft(args.config, overrides, args.output_dir, args.resume)
    except ConfigError as exc:
        print(f"gdpo sft: config error: {exc}", file=sys.stderr)
        return 2
    loss = "n/a" if result.final_loss is None else f"{result.final_loss:.4f}"
    tps = "n/a" if result.tokens_per_s is None else f"{result.tokens_per_s:.0f}"
    print(f"done: step {result.steps_done}, last logged loss {loss}, {tps} tokens/s, {result.wall_s:.1f} s; "
          f"model in {result.final_model_dir} (use it as model.name / --model)")
    return 0
