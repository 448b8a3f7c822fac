"""The package's import graph has no cycles (a static walk over every import statement, nested ones too)."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def package_modules() -> dict[str, Path]:
    """Module name -> file, for every module of the import root (``package-dir`` of pyproject.toml)."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    roots: dict[str, str] = config["tool"]["setuptools"]["package-dir"]
    modules: dict[str, Path] = {}
    for package, folder in sorted(roots.items(), key=lambda kv: -len(kv[0])):
        for path in (REPO / folder).rglob("*.py"):
            parts = list(path.relative_to(REPO / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            name = ".".join([package, *parts])
            modules.setdefault(name, path)  # the longest mapped prefix wins (domains/ is not apigen_envs/domains/)
    return modules


def _type_checking_only(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules that ``name`` imports anywhere in its file (not under ``if TYPE_CHECKING``).

    Only explicit imports count: importing ``a.b.c`` also runs ``a/__init__`` and ``a/b/__init__``, but a
    module's own parent packages are started before it, so ``from . import sibling`` depends on the sibling
    only; ``from pkg import name`` of a name defined in ``pkg/__init__`` depends on that ``__init__``.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if _type_checking_only(node):
            stack.extend(node.orelse)  # type: ignore[attr-defined]
            continue
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            ancestor = name == source or name.startswith(f"{source}.")
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                targets.add(submodule if submodule in modules else source)
            if not ancestor:
                targets.add(source)  # importing a submodule of another package runs that package first
        stack.extend(ast.iter_child_nodes(node))
    resolved = set()
    for target in targets:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != name:
            resolved.add(target)
    return resolved


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    cycles: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def test_the_package_has_no_import_cycles() -> None:
    modules = package_modules()
    assert "apigen_envs.runner" in modules and "apigen_envs.domains.mock" in modules
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    assert find_cycles(graph) == []


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b"}, "b": {"a"}, "c": set()}, [["a", "b"]]),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
        ({"a": {"b"}, "b": set()}, []),
    ],
)
def test_the_cycle_finder_finds_cycles(graph: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert find_cycles(graph) == expected


def test_the_walk_sees_nested_and_relative_imports(tmp_path: Path) -> None:
    # The two cycles this test was written against were both made of imports inside functions.
    module = tmp_path / "m.py"
    module.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from pkg import only_for_types\n"
        "def f():\n    from pkg.b import thing\n"
        "from . import c\n"
        "from pkg import VERSION\n"
    )
    modules = {"pkg": tmp_path, "pkg.m": module, "pkg.b": tmp_path, "pkg.c": tmp_path, "pkg.only_for_types": tmp_path}
    # ``from pkg import VERSION`` reads the package's __init__ (a real dependency); ``from . import c`` only c.
    assert imports_of("pkg.m", module, modules) == {"pkg", "pkg.b", "pkg.c"}
    module.write_text("from . import c\n")
    assert imports_of("pkg.m", module, modules) == {"pkg.c"}
