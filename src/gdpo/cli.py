"""The `gdpo` command line: one subcommand per module, imported only when used.

Each subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> int``.

Bad input (a :class:`gdpo.errors.UserError`, raised before any model loads) is printed as
one line ``gdpo <command>: <message>`` on stderr, exit code 2, no traceback;
``gdpo --debug <command> ...`` (or ``GDPO_DEBUG=1``) lets the traceback through.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys

from gdpo.errors import UserError, one_line

SUBCOMMANDS = {
    "train": ("gdpo.train.cli", "train a Hugging Face causal LM with GDPO/GRPO on several rewards"),
    "sft": ("gdpo.train.sft_cli", "supervised fine-tuning on chat data (loss on assistant replies); an HF folder out"),
    "compare": ("gdpo.reports.compare", "run several methods x seeds on one config and write a report"),
    "score": ("gdpo.rewards.score_cli", "score a JSONL of completions with named rewards"),
    "eval": ("gdpo.eval.cli", "evaluate a model on a task with the paper's metrics"),
    "collapse": ("gdpo.reports.collapse_cli", "count distinct advantage groups per method (the collapse table + plot)"),
}


def _available() -> dict[str, tuple[str, str]]:
    out = {}
    for name, (module, help_text) in SUBCOMMANDS.items():
        if importlib.util.find_spec(module.rsplit(".", 1)[0]) is None:
            continue
        try:
            if importlib.util.find_spec(module) is None:
                continue
        except ModuleNotFoundError:
            continue
        out[name] = (module, help_text)
    return out


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gdpo", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"gdpo {_version()}")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of a bad-input error too (also: GDPO_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = next((a for a in argv or [] if not a.startswith("-")), None)
    for name, (module, help_text) in _available().items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:  # import only the module that runs
            importlib.import_module(module).add_arguments(p)
        else:
            p.set_defaults(_lazy=module)
    return parser


def _version() -> str:
    from gdpo import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    debug = args.debug or os.environ.get("GDPO_DEBUG", "") not in ("", "0")
    try:
        module = importlib.import_module(_available()[args.command][0])
        return int(module.run(args) or 0)
    except UserError as exc:
        if debug:
            raise
        print(f"gdpo {args.command}: {one_line(str(exc))}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
