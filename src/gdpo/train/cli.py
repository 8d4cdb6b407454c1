"""`gdpo train`: multi-reward RL fine-tuning of a causal LM from a YAML config.

Examples::

    gdpo train                                    # the built-in default (SmolLM2 on the toy task)
    gdpo train --config configs/smoke.yaml --output-dir runs/smoke
    gdpo train --config configs/smoke.yaml --set method=grpo --set optim.lr=3e-3
    gdpo train --output-dir runs/smoke --resume   # continue from the last checkpoint
    gdpo train --config configs/smoke.yaml --output-dir runs/smoke --overwrite   # replace that run

Exit codes: 0 done; 2 a config / output-folder error (nothing was written); 3 a NaN / inf the
run could not skip; 130 / 143 stopped by SIGINT / SIGTERM after a checkpoint (resume it).
    torchrun --nproc_per_node 2 -m gdpo train --config configs/smoke.yaml
"""

from __future__ import annotations

import argparse
import os
import sys

EXIT_NONFINITE = 3  # the run met a NaN / inf it could not skip (optim.on_nonfinite); config errors exit 2


def add_run_arguments(parser: argparse.ArgumentParser, example: str, resume_help: str) -> None:
    """The options every run command shares (``gdpo train``, ``gdpo sft``): config, output dir,
    overrides, resume and print-config. ``example`` is an override shown in the help."""
    parser.add_argument("--config", "-c", help="YAML config file (default: built-in defaults; with --resume "
                                                "and no --config: <output-dir>/config.yaml)")
    parser.add_argument("--output-dir", "-o", help="overrides output_dir of the config")
    parser.add_argument("--set", "-s", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help=f"override a config field, e.g. --set {example} (repeatable; value is YAML)")
    parser.add_argument("--resume", action="store_true", help=resume_help)
    parser.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(parser, "optim.lr=1e-5", "continue the run in the output dir from its last checkpoint "
                                               "(needs <output-dir>/config.yaml)")
    parser.add_argument("--overwrite", action="store_true", help="the output dir holds a run: delete what the "
                                                                "trainer wrote there and start afresh")


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # model hubs are never contacted
    from gdpo.train.config import ConfigError, config_to_dict, load_config
    from gdpo.train.loop import load_and_train
    from gdpo.train.run_folder import RunFolderError
    from gdpo.train.stop import signal_name
    from gdpo.train.update import NonFiniteError

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
        result = load_and_train(args.config, overrides, args.output_dir, args.resume, args.overwrite)
    except RunFolderError as exc:
        print(f"gdpo train: {exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"gdpo train: config error: {exc}", file=sys.stderr)
        return 2
    except NonFiniteError as exc:
        print(f"gdpo train: {exc}", file=sys.stderr)
        return EXIT_NONFINITE
    main = os.environ.get("RANK", "0") == "0"
    if result.stopped_by:
        if main:
            print(f"stopped at step {result.steps_done} by {signal_name(result.stopped_by)}; checkpoint saved; "
                  f"resume with: gdpo train -o {result.output_dir} --resume", file=sys.stderr)
        return 128 + result.stopped_by  # the shell's convention: 130 = SIGINT, 143 = SIGTERM
    if result.history and main:
        from gdpo.train.summary import summarize_run

        summary = summarize_run(result.output_dir)
        print(f"\n{summary.table}\n")
        print(f"done: step {result.steps_done}; curves in {summary.curves_png}, summary in {summary.markdown_path}; "
              f"all outputs in {result.output_dir}")
    return 0
