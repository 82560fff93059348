"""The package is a one-way house: its imports form no cycle and no layer reaches up.

Every import of every module is read with ``ast`` (module-level, inside functions, under ``TYPE_CHECKING``: a
type-only import is a dependency too), and checked against :data:`LAYERS`, the same layers that
``docs/architecture.md`` describes. A module may import its own layer and the layers below it, never one above.
Sizes are checked too: a module over :data:`MAX_MODULE_LINES` lines or a function whose body (docstring aside) is
over :data:`MAX_FUNCTION_LINES` lines fails, unless :data:`SIZE_EXCEPTIONS` names it with the reason.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = "zerosearch_trl"
SOURCE = Path(__file__).resolve().parents[1] / "src" / PACKAGE

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundations", ("answers", "prompts", "models", "generation")),
    ("data", ("data", "demo")),
    ("engines", ("engines",)),
    ("protocol", ("protocol", "rewards", "environment")),
    ("rollout", ("rollout",)),
    ("evaluation", ("evaluation",)),
    ("training", ("training",)),
    ("simulator", ("simulator",)),
    ("facade", ("",)),  # the package root: the flat public API, zerosearch_trl.<name>
    ("commands", ("commands",)),
    ("cli", ("cli",)),
]
"""Bottom to top. Each entry names the top-level modules or subpackages of ``zerosearch_trl`` in that layer."""

MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 80
SIZE_EXCEPTIONS: dict[str, str] = {}
"""``module`` or ``module:function`` -> why it may be longer (none today)."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SOURCE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(SOURCE.rglob("*.py"))}


def imports_of(name: str) -> set[str]:
    """The package's modules that ``name`` imports (``from package import submodule`` counts as the submodule)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            submodules = [f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in MODULES]
            candidates = submodules or [target]
        else:
            continue
        for candidate in candidates:
            while candidate and candidate not in MODULES:  # `import a.b.c` where only a.b is a module of ours
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name:
                found.add(candidate)
    return found


GRAPH = {name: imports_of(name) for name in MODULES}


def layer_of(name: str) -> int:
    relative = name.removeprefix(PACKAGE).removeprefix(".")
    top = relative.split(".")[0]
    for index, (_, members) in enumerate(LAYERS):
        if top in members:
            return index
    raise AssertionError(f"{name} is in no layer: add {top!r} to LAYERS in {Path(__file__).name} and to the docs.")


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a chain ``[a, b, ..., a]``, or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_inside_the_package():
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_every_module_is_in_a_layer():
    for name in MODULES:
        layer_of(name)


def test_no_layer_reaches_up():
    upward = [
        f"{name} ({LAYERS[layer_of(name)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
        for name, targets in GRAPH.items()
        for target in sorted(targets)
        if layer_of(target) > layer_of(name)
    ]
    assert not upward, "imports that reach up a layer:\n" + "\n".join(upward)


def test_only_the_command_line_imports_the_commands():
    outside = [
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        for target in targets
        if target.startswith((f"{PACKAGE}.commands", f"{PACKAGE}.cli"))
        and not name.startswith((f"{PACKAGE}.commands", f"{PACKAGE}.cli"))
    ]
    assert not outside, "the library imports its command line:\n" + "\n".join(outside)


def test_the_cli_dispatches_to_modules_that_exist():
    from zerosearch_trl.cli import COMMANDS

    for command, (target, _) in COMMANDS.items():
        module, _, function = target.partition(":")
        assert f"{PACKAGE}.commands.{module}" in MODULES, command
        assert re.search(rf"^def {function}\(", MODULES[f"{PACKAGE}.commands.{module}"].read_text(), re.M), command


def test_the_architecture_page_names_every_layer_and_subpackage():
    page = (SOURCE.parents[1] / "docs" / "architecture.md").read_text(encoding="utf-8")
    for layer, members in LAYERS:
        assert f"**{layer}**" in page, f"docs/architecture.md does not describe the {layer} layer"
        for member in members:
            if member:
                assert f"`{member}" in page, f"docs/architecture.md does not mention {member}"


def function_sizes(path: Path) -> list[tuple[str, int]]:
    sizes = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                body = body[1:]  # the docstring
            if body:
                sizes.append((node.name, body[-1].end_lineno - body[0].lineno + 1))
    return sizes


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_and_functions_stay_small(name):
    path = MODULES[name]
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_MODULE_LINES or name in SIZE_EXCEPTIONS, (
        f"{name} has {lines} lines (> {MAX_MODULE_LINES}): split it by concept, or name it in SIZE_EXCEPTIONS with why"
    )
    for function, size in function_sizes(path):
        key = f"{name}:{function}"
        assert size <= MAX_FUNCTION_LINES or key in SIZE_EXCEPTIONS, (
            f"{key} has a {size}-line body (> {MAX_FUNCTION_LINES}): give its steps names, or explain in "
            "SIZE_EXCEPTIONS"
        )


def test_every_package_folder_is_a_regular_package():
    """``packages.find`` installs only folders with an ``__init__.py``: a wheel would leave the others out."""
    folders = {p.parent for p in SOURCE.rglob("*.py")}
    missing = sorted(str(f.relative_to(SOURCE.parent)) for f in folders if not (f / "__init__.py").is_file())
    assert not missing, f"package folders without __init__.py: {missing}"
