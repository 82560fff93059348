"""The ``zerosearch-trl`` command line: it dispatches to one module of :mod:`zerosearch_trl.commands` per subcommand.

Each subcommand is configured by dataclasses whose fields carry ``help`` metadata and is parsed with TRL's
``TrlParser``, so every option works as a flag or from ``--config recipe.yaml``. A subcommand's module is imported
only when it runs, so ``zerosearch-trl --help`` stays fast.

    zerosearch-trl train --config examples/recipes/cpu.yaml
    zerosearch-trl probe --n_samples 16 --prompt_style one_shot

Example:
    >>> main(["--version"]) == 0  # doctest: +ELLIPSIS
    0...
    True
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Sequence

from zerosearch_trl import __version__

COMMANDS: dict[str, tuple[str, str]] = {
    "train": (
        "train:main",
        "GRPO with the search rollout, a simulated engine and a noise curriculum; writes a report",
    ),
    "eval": ("eval:main", "score an agent on QA sets with one or several engines, greedy, every row; writes a report"),
    "collect-simulator-data": (
        "simulator:collect_main",
        "play QA questions against a real engine; keep labelled (query, documents)",
    ),
    "sft-simulator": ("simulator:sft_main", "fine-tune a simulator (SFTTrainer + LoRA/QLoRA) on collected pairs"),
    "check-simulator": ("simulator:check_main", "score a simulator: useful-answer rate, noisy leak rate, format"),
    "simulate": ("tools:simulate_main", "print the documents the simulated search engine writes for a query"),
    "probe": ("tools:probe_main", "share of well-formed search/answer actions a model writes with a given prompt"),
    "make-demo": ("tools:make_demo_main", "write the generated fictional QA task and its corpus to a folder"),
    "serve": ("serve:main", "serve bm25, dense, simulated or hybrid search over HTTP (Search-R1's /retrieve API)"),
}
"""Each subcommand: ``module:function`` in :mod:`zerosearch_trl.commands`, and its one-line summary."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``zerosearch-trl``; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not argv or argv[0] in ("-h", "--help"):
        print(
            f"zerosearch-trl {__version__}\n\nusage: zerosearch-trl COMMAND [--help] [--config recipe.yaml] [options]\n\ncommands:"
        )
        for name, (_, summary) in COMMANDS.items():
            print(f"  {name:<24}{summary}")
        return 0
    if argv[0] in ("-V", "--version"):
        print(__version__)
        return 0
    if argv[0] not in COMMANDS:
        print(f"zerosearch-trl: unknown command {argv[0]!r}; choose one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module, _, function = COMMANDS[argv[0]][0].partition(":")
    runner = getattr(importlib.import_module(f"zerosearch_trl.commands.{module}"), function)
    return runner(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
