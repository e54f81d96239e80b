"""Every command of the `maild` CLI is in the README, where a newcomer looks first."""

from __future__ import annotations

import re
from pathlib import Path

import click

from maild.cli import main

README = (Path(__file__).parents[2] / "README.md").read_text()


def commands(group: click.Group, prefix: str, parent: click.Context | None = None) -> list[str]:
    """Every command's path, asked as click asks (list_commands, get_command): a group that
    imports its commands only when named shows them too."""
    ctx = click.Context(group, info_name=prefix.rsplit(" ", 1)[-1], parent=parent)
    out = []
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        assert cmd is not None, f"{prefix} {name} is listed but cannot be loaded"
        path = f"{prefix} {name}"
        out += commands(cmd, path, ctx) if isinstance(cmd, click.Group) else [path]
    return out


def documented(path: str) -> bool:
    """`maild contact add/show/list` in one line documents each of those commands."""
    group, _, leaf = path.rpartition(" ")
    word = re.compile(rf"(?<![\w-]){re.escape(leaf)}(?![\w-])")
    return any(group in line and word.search(line.split(group, 1)[1]) for line in README.splitlines())


def test_every_command_is_documented() -> None:
    assert [p for p in commands(main, "maild") if not documented(p)] == []


def test_the_walk_reaches_the_lazy_groups() -> None:
    """Every command module is imported only when its command is named (contact, org, contract
    and report were the first): a walk over `main.commands` alone would check none of them."""
    found = commands(main, "maild")
    assert {"maild contact add", "maild org add-domain", "maild contract move-client", "maild report",
            "maild case update"} <= set(found)


def test_the_readme_opens_with_the_two_commands() -> None:
    head = README.split("\n## ", 1)[0]
    assert "make run" in head and "make test" in head
