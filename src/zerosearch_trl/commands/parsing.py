"""TRL's argument parser for one subcommand: every option works as a flag or from ``--config recipe.yaml``.

A flag's value goes through argparse's type conversion, but a YAML recipe's values become argparse *defaults*,
which argparse converts only when they are strings (YAML reads ``1e-5`` as one): ``max_steps: [1, 2]``,
``rewards: 5`` or ``per_device_train_batch_size: null`` would reach the configs as they are and fail deep inside
them, or much later. The parser checks each recipe value against its field's type before any config is built,
and names the key, the value and the fix.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Sequence
from typing import Any

from trl import TrlParser

CONFIG_EPILOG = "Every option can also be set in a YAML recipe given with --config recipe.yaml; flags override it."

_SIMPLE = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
_PLURAL = {int: "integers", float: "numbers", bool: "booleans", str: "strings"}


class RecipeParser(TrlParser):
    """:class:`trl.TrlParser` that checks the types of what a recipe sets before any config is built (see the module
    docstring): a config's own checks (``GRPOConfig.__post_init__``) would otherwise meet the raw value first."""

    def set_defaults_with_config(self, **kwargs: Any) -> list[str]:
        hints = {}
        for dataclass_type in reversed(self.dataclass_types):  # the first dataclass with a field wins, as in argparse
            hints.update(_field_hints(dataclass_type))
        for key, value in kwargs.items():
            if key in hints:
                check_value(key, value, *hints[key])
        return super().set_defaults_with_config(**kwargs)


def command_parser(command: str, dataclass_types: Sequence[type]) -> TrlParser:
    """TRL's parser for one subcommand: named ``zerosearch-trl COMMAND`` in its usage line, ``--config`` in its help,
    the recipe's value types checked.

    Example:
        >>> from zerosearch_trl.commands.tools import ProbeConfig
        >>> command_parser("probe", [ProbeConfig]).prog
        'zerosearch-trl probe'
    """
    return RecipeParser(list(dataclass_types), prog=f"zerosearch-trl {command}", epilog=CONFIG_EPILOG)


def check_value(name: str, value: Any, hint: Any, default: Any = dataclasses.MISSING) -> None:
    """Raise a ValueError naming ``name`` when ``value`` (a recipe's, unless it is the field's ``default``) does not
    have the type ``hint``; types other than int, float, bool, str, their lists and ``None`` unions are left to the
    configs' own checks.

    Example:
        >>> check_value("max_steps", [1, 2], int)
        Traceback (most recent call last):
        ...
        ValueError: max_steps: expected an integer, got [1, 2] (list); fix it in the recipe, or pass --max_steps.
    """
    if value == default:
        return
    expected = _expected(hint, value)
    if expected is not None:
        raise ValueError(
            f"{name}: expected {expected}, got {value!r} ({type(value).__name__}); fix it in the recipe, or pass "
            f"--{name}."
        )


def _field_hints(dataclass_type: type) -> dict[str, tuple[Any, Any]]:
    """``{field: (type hint, default)}`` of a dataclass (empty when its annotations cannot be resolved here)."""
    try:
        hints = typing.get_type_hints(dataclass_type)
    except Exception:  # an annotation that cannot be resolved here: nothing to check against
        return {}
    return {f.name: (hints[f.name], _default(f)) for f in dataclasses.fields(dataclass_type) if f.name in hints}


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def _expected(hint: Any, value: Any) -> str | None:
    """What ``value`` should have been to match ``hint`` (``None``: it matches, or the hint is not checked)."""
    origin, arguments = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in arguments if a is not type(None)]
        if value is None and len(options) < len(arguments):
            return None
        problems = [_expected(option, value) for option in options]
        if any(problem is None for problem in problems):
            return None
        return " or ".join(problems) + (" or null" if len(options) < len(arguments) else "")
    if origin is list and len(arguments) == 1 and arguments[0] in _SIMPLE:
        if isinstance(value, str):  # one string where a list is typed: PEFT's lora_target_modules: all-linear
            return None
        if isinstance(value, list) and all(_expected(arguments[0], item) is None for item in value):
            return None
        return f"a list of {_PLURAL[arguments[0]]}"
    if hint not in _SIMPLE:
        return None  # not a type this check knows
    if isinstance(value, str):  # argparse converts a string default itself, and names what it cannot convert
        return None
    if hint is float:
        fits = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif hint is int:
        fits = isinstance(value, int) and not isinstance(value, bool)
    else:
        fits = isinstance(value, hint)
    return None if fits else _SIMPLE[hint]
