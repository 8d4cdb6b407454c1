"""``python -m gdpo.envs --model reference|<folder> [--split test] [--limit N] [--output FILE]``

BFCL multi-turn accuracy (BFCL's own ``multi_turn_checker``) of a model, or of the ground-truth
policy, on the ``bfcl_multi_turn`` task's split; prints one JSON summary line. Until
``gdpo eval --task bfcl_multi_turn`` calls :func:`gdpo.data.bfcl_multi_turn.evaluate_entries`
itself, this is the command. Exit code 2 with one line on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gdpo.envs", description=__doc__.split("\n\n")[1])
    p.add_argument("--model", required=True, help="'reference' (ground-truth calls) or a local HF model folder")
    p.add_argument("--split", choices=("train", "test"), default="test")
    p.add_argument("--limit", type=int, default=None, help="first N entries of the split")
    p.add_argument("--docs", choices=("full", "brief"), default="full")
    p.add_argument("--max-new-tokens", type=int, default=256, help="per model turn")
    p.add_argument("--output", default=None, help="write the per-entry records (JSON lines) here")
    args = p.parse_args(argv)
    from gdpo.data import get_task
    from gdpo.data.bfcl_multi_turn import evaluate_entries, summarize

    task = get_task("bfcl_multi_turn", docs=args.docs)
    rows = (task.test if args.split == "test" else task.train)[:args.limit]
    model = tokenizer = None
    if args.model != "reference":
        from gdpo.models import load_model_and_tokenizer

        try:
            model, tokenizer, _ = load_model_and_tokenizer(args.model)
        except (FileNotFoundError, OSError, ValueError) as exc:
            print(f"error: --model {args.model!r}: {exc}; give 'reference' or a local HF model folder", file=sys.stderr)
            return 2
        model.eval()
    records = evaluate_entries(rows, model, tokenizer, max_new_tokens=args.max_new_tokens)
    if args.output:
        with open(args.output, "w") as fh:
            for r in records:
                fh.write(json.dumps(r, default=str) + "\n")
    print(json.dumps({"task": "bfcl_multi_turn", "split": args.split, "model": args.model, **summarize(records)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
