"""The house rules of maild's imports (ARCHITECTURE.md, issue 22 §2), checked on the source.

Read from the AST, not by importing: every `import` counts wherever it stands (inside a
function, under `if TYPE_CHECKING:`), because a cycle hidden in a function is still a cycle
and still makes the layers impossible to read apart. Each broken rule is printed with the
importing module and line, so the failure says what to change.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "maild"

# (importer's folder or module, folders or modules it must not import, why)
LAYERS: list[tuple[str, tuple[str, ...], str]] = [
    ("maild.store", ("maild.rules", "maild.notify", "maild.ingest", "maild.crm", "maild.threading"),
     "storage keeps rows, it does not decide"),
    ("maild.threading", ("maild.ingest", "maild.store", "maild.notify", "maild.crm"),
     "threading is pure decisions on plain data"),
    ("maild.rules", ("maild.ingest", "maild.store", "maild.notify", "maild.crm"),
     "rules are pure decisions on plain data"),
    ("maild.config", ("maild.rules", "maild.notify", "maild.ingest", "maild.crm", "maild.store", "maild.threading"),
     "config is the schema; feature checks are composed in maild.config_checks"),
    ("maild.notify", ("maild.ingest",), "notify works from stored events, not from the adapter"),
    ("maild.crm", ("maild.ingest",), "crm works on stored contacts, not on the adapter"),
]
ENTRY_POINTS = ("maild.cli", "maild.daemon")  # nothing below them imports them
ENTRY_IMPORTERS = ("maild.cli", "maild.daemon", "maild.__main__")
VOCABULARY = "maild.domain"  # imports nothing of maild


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name
    target: str  # the maild module imported (resolved to a module file when one exists)
    names: tuple[str, ...]  # names taken from it (`from x import a, b`), () for `import x`
    line: int

    def where(self) -> str:
        return f"{self.importer}:{self.line}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "migrations" not in p.parts}


def within(module: str, scope: str) -> bool:
    """Whether `module` is `scope` or inside it ("maild.cli" also covers maild.cli_crm and maild.cli.*)."""
    if scope == "maild.cli":
        return module == scope or module.startswith(("maild.cli.", "maild.cli_"))
    return module == scope or module.startswith(scope + ".")


def resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join([*base, node.module] if node.module else base)


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "maild" or alias.name.startswith("maild."):
                    found.append(Import(module, alias.name, (), node.lineno))
        elif isinstance(node, ast.ImportFrom):
            source = resolve(module, path.name == "__init__.py", node)
            if not (source == "maild" or source.startswith("maild.")):
                continue
            plain: list[str] = []
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                if sub in modules:  # `from maild.ingest import parse`: the module itself
                    found.append(Import(module, sub, (), node.lineno))
                else:
                    plain.append(alias.name)
            if plain:
                found.append(Import(module, source, tuple(plain), node.lineno))
    return found


def all_imports() -> list[Import]:
    modules = all_modules()
    return [imp for name, path in modules.items() for imp in imports_of(name, path, modules)]


def cycles(imports: list[Import]) -> list[list[str]]:
    """Strongly connected components of more than one module, or a module importing itself (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        if imp.target != imp.importer or imp.names:
            graph.setdefault(imp.importer, set()).add(imp.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:  # recursion depth is bounded by the module count (~150)
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def broken_rules(imports: list[Import]) -> list[str]:
    """Every broken rule, one line each, naming the importing module and line."""
    broken: list[str] = []
    for component in cycles(imports):
        members = set(component)
        edges = sorted({f"{i.where()} -> {i.target}" for i in imports
                        if i.importer in members and i.target in members and i.target != i.importer})
        broken.append(f"import cycle among {len(component)} modules ({', '.join(component)}):\n      "
                      + "\n      ".join(edges))
    for imp in imports:
        if within(imp.importer, VOCABULARY) and not within(imp.target, VOCABULARY):
            broken.append(f"{imp.where()} imports {imp.target}: maild.domain imports nothing else of maild")
        for scope, forbidden, why in LAYERS:
            if within(imp.importer, scope):
                for other in forbidden:
                    if within(imp.target, other):
                        broken.append(f"{imp.where()} imports {imp.target}: {scope} must not import {other} ({why})")
        for entry in ENTRY_POINTS:
            if within(imp.target, entry) and not any(within(imp.importer, e) for e in ENTRY_IMPORTERS):
                broken.append(f"{imp.where()} imports {imp.target}: only the CLI and the daemon import {entry}")
        private = [n for n in imp.names if n.startswith("_") and not n.startswith("__")]
        if private and imp.target != imp.importer:
            broken.append(f"{imp.where()} imports private {', '.join(private)} from {imp.target}")
        if any(p.startswith("_") and not p.startswith("__") for p in imp.target.split(".")):
            broken.append(f"{imp.where()} imports the private module {imp.target}")
    return broken


def test_import_rules_hold() -> None:
    broken = broken_rules(all_imports())
    assert not broken, f"{len(broken)} broken import rule(s):\n  " + "\n  ".join(broken)


def test_the_check_sees_what_it_must() -> None:
    """The checker itself: a function-local and a TYPE_CHECKING import count, a cycle is found,
    a private name is caught. Guards against a rule that silently checks nothing."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from maild.ingest.parse import InboundMessage\n"
        "def f():\n    from maild.store.db import _private\n"
    )
    tree_path = PACKAGE / "store" / "db.py"
    modules = all_modules()
    assert "maild.ingest.parse" in modules and "maild.store.db" in modules
    fake = Path(ROOT / "maild" / "store" / "fake_for_check.py")
    imports = [Import("maild.store.fake_for_check", i.target, i.names, i.line)
               for i in _imports_of_source(source, "maild.store.fake_for_check", modules)]
    messages = broken_rules([*imports, Import("maild.ingest.parse", "maild.store.fake_for_check", (), 1)])
    assert any("maild.store.fake_for_check:3 imports maild.ingest.parse" in m for m in messages), messages
    assert any("imports private _private from maild.store.db" in m for m in messages), messages
    assert any(m.startswith("import cycle among 2 modules") for m in messages), messages
    assert tree_path.exists() and not fake.exists()


def _imports_of_source(source: str, module: str, modules: dict[str, Path]) -> list[Import]:
    """imports_of for source text that is not a file (the self-check above)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.py"
        path.write_text(source, encoding="utf-8")
        return imports_of(module, path, modules)
