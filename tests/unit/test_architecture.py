"""The package's shape, checked: no import cycle, no module reaching into another's
private names, no module too long to read.

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


#: Names with a leading underscore that are public by their owners' documentation.
DOCUMENTED_PRIVATE = {
    "_current_frames",  # sys._current_frames(): documented in the sys module
    "_get_current_object",  # werkzeug.local.LocalProxy: documented as the way to unwrap a proxy
}

#: The most lines a module may have, as the package's layout promises.
MAX_LINES = 500


def defined_names(tree: ast.Module) -> set[str]:
    """Every name a module defines or binds: its own, which it may use with or without an underscore."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.add(node.value)  # __slots__ entries
        elif isinstance(node, ast.arg):
            names.add(node.arg)
    return names


def reached_privates(tree: ast.Module, modules: set[str]) -> list[str]:
    """Underscore names ``tree`` takes from elsewhere: imported, or read off an object it did not define them for."""
    own = defined_names(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                private = alias.name.startswith("_") and not alias.name.startswith("__")
                if private and alias.name not in modules:
                    found.append(f"line {node.lineno}: imports {alias.name} from {node.module or '.'}")
        elif isinstance(node, ast.Attribute):
            name = node.attr
            if not name.startswith("_") or name.startswith("__") or name in own or name in DOCUMENTED_PRIVATE:
                continue
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_reached_privates_sees_imports_and_attributes() -> None:
    tree = ast.parse(
        "from ._a import _secret, _b\nfrom .c import open_\ndef f(ws):\n    ws._close()\n    sys._current_frames()"
    )
    assert reached_privates(tree, {"_a", "_b"}) == ["line 1: imports _secret from _a", "line 4: ws._close"]


def test_no_module_reaches_another_modules_private_names() -> None:
    trees = modules()
    reached = {name: reached_privates(tree, set(trees)) for name, tree in trees.items()}
    assert {name: found for name, found in reached.items() if found} == {}


def test_no_module_is_over_500_lines() -> None:
    lengths = {path.name: len(path.read_text().splitlines()) for path in PACKAGE.glob("*.py")}
    assert {name: length for name, length in lengths.items() if length > MAX_LINES} == {}
