"""`gdpo train`: multi-reward RL fine-tuning of a causal LM from a YAML config.

Examples::

    gdpo train                                    # the built-in default (SmolLM2 on the toy task)
    gdpo train --config configs/smoke.yaml --output-dir runs/smoke
    gdpo train --config configs/smoke.yaml --set method=grpo --set optim.lr=3e-3
    gdpo train --output-dir runs/smoke --resume   # continue from the last checkpoint
    torchrun --nproc_per_node 2 -m gdpo train --config configs/smoke.yaml
"""

from __future__ import annotations

import argparse
import os
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", help="YAML config file (default: built-in defaults; with --resume "
                                                "and no --config: <output-dir>/config.yaml)")
    parser.add_argument("--output-dir", "-o", help="overrides output_dir of the config")
    parser.add_argument("--set", "-s", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override a config field, e.g. --set optim.lr=1e-5 (repeatable; value is YAML)")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in the output dir")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # model hubs are never contacted
    from gdpo.train.config import ConfigError, config_to_dict, load_config
    from gdpo.train.loop import load_and_train

    overrides = list(args.overrides)
    if args.print_config:
        import yaml

        try:
            cfg = load_config(args.config, overrides + ([f"output_dir={args.output_dir}"] if args.output_dir else []))
        except ConfigError as exc:
            print(f"gdpo train: config error: {exc}", file=sys.stderr)
            return 2
        print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), end="")
        return 0
    try:
        result = load_and_train(args.config, overrides, args.output_dir, args.resume)
    except ConfigError as exc:
        print(f"gdpo train: config error: {exc}", file=sys.stderr)
        return 2
    if result.history and os.environ.get("RANK", "0") == "0":
        from gdpo.train.summary import summarize_run

        summary = summarize_run(result.output_dir)
        print(f"\n{summary.table}\n")
        print(f"done: step {result.steps_done}; curves in {summary.curves_png}, summary in {summary.markdown_path}; "
              f"all outputs in {result.output_dir}")
    return 0
