"""``zerosearch-trl train``: the main job (:func:`~zerosearch_trl.training.job.train`) from flags or a YAML recipe."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from zerosearch_trl.commands.parsing import command_parser
from zerosearch_trl.training.config import CPU_DEFAULTS, CPU_ENGINE_DEFAULTS, CPU_SCRIPT_DEFAULTS, argument_types


def make_parser() -> Any:
    """TRL's parser over the job's five dataclasses, with :data:`~zerosearch_trl.training.config.CPU_DEFAULTS` as
    defaults (flags and a ``--config`` YAML recipe override them).

    Example:
        >>> script_args, *_ = make_parser().parse_args_and_config(["--max_turns", "3"])
        >>> script_args.max_turns, script_args.rewards
        (3, ['f1', 'format'])
    """
    import torch

    parser = command_parser("train", argument_types())
    parser.set_defaults(
        **CPU_DEFAULTS, **CPU_SCRIPT_DEFAULTS, **CPU_ENGINE_DEFAULTS, use_cpu=not torch.cuda.is_available()
    )
    return parser


def main(argv: Sequence[str]) -> int:
    """``zerosearch-trl train [--config recipe.yaml] [flags]``."""
    from zerosearch_trl.training.job import train

    train(*make_parser().parse_args_and_config(list(argv)))
    return 0
