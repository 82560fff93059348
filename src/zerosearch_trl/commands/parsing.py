"""TRL's argument parser for one subcommand: every option works as a flag or from ``--config recipe.yaml``."""

from __future__ import annotations

from collections.abc import Sequence

from trl import TrlParser

CONFIG_EPILOG = "Every option can also be set in a YAML recipe given with --config recipe.yaml; flags override it."


def command_parser(command: str, dataclass_types: Sequence[type]) -> TrlParser:
    """TRL's parser for one subcommand: named ``zerosearch-trl COMMAND`` in its usage line, ``--config`` in its help.

    Example:
        >>> from zerosearch_trl.commands.tools import ProbeConfig
        >>> command_parser("probe", [ProbeConfig]).prog
        'zerosearch-trl probe'
    """
    return TrlParser(list(dataclass_types), prog=f"zerosearch-trl {command}", epilog=CONFIG_EPILOG)
