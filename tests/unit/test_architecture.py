"""The package's shape, checked: its internal imports form no cycle.

Type-only imports count too: a cycle hidden behind ``TYPE_CHECKING`` is still two
modules that each need the other to be read.
"""

from __future__ import annotations

import ast
import pathlib

import flask_asyncws

PACKAGE = pathlib.Path(flask_asyncws.__file__).parent


def modules() -> dict[str, ast.Module]:
    return {path.stem: ast.parse(path.read_text(), str(path)) for path in sorted(PACKAGE.glob("*.py"))}


def imported(tree: ast.Module, names: set[str]) -> set[str]:
    """The package's modules that ``tree`` imports, wherever the import statement is."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module is None:
                found.update(alias.name for alias in node.names if alias.name in names)
            else:
                found.add(node.module.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "flask_asyncws":
            found.add("__init__")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("flask_asyncws."):
            found.add(node.module.split(".")[1])  # type: ignore[union-attr]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("flask_asyncws."):
                    found.add(alias.name.split(".")[1])
    return found & names


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle in ``graph`` as the modules along it, or None."""
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> list[str] | None:
        if name in path:
            return [*path[path.index(name) :], name]
        if name in done:
            return None
        for target in sorted(graph[name]):
            cycle = visit(target, [*path, name])
            if cycle is not None:
                return cycle
        done.add(name)
        return None

    for name in sorted(graph):
        cycle = visit(name, [])
        if cycle is not None:
            return cycle
    return None


def test_find_cycle_finds_a_type_only_cycle() -> None:
    trees = {
        "a": ast.parse("from . import b"),
        "b": ast.parse("import typing\nif typing.TYPE_CHECKING:\n    from .c import X"),
        "c": ast.parse("def f():\n    from flask_asyncws.a import Y"),
    }
    graph = {name: imported(tree, set(trees)) for name, tree in trees.items()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]


def test_no_import_cycle() -> None:
    trees = modules()
    graph = {name: imported(tree, set(trees)) - {name} for name, tree in trees.items()}
    assert find_cycle(graph) is None
