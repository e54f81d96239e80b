"""Every command of the `maild` CLI is in the README, where a newcomer looks first."""

from __future__ import annotations

import re
from pathlib import Path

import click

from maild.cli import main

README = (Path(__file__).parents[2] / "README.md").read_text()


def commands(group: click.Group, prefix: str) -> list[str]:
    out = []
    for name, cmd in group.commands.items():
        path = f"{prefix} {name}"
        out += commands(cmd, path) if isinstance(cmd, click.Group) else [path]
    return out


def documented(path: str) -> bool:
    """`maild contact add/show/list` in one line documents each of those commands."""
    group, _, leaf = path.rpartition(" ")
    word = re.compile(rf"(?<![\w-]){re.escape(leaf)}(?![\w-])")
    return any(group in line and word.search(line.split(group, 1)[1]) for line in README.splitlines())


def test_every_command_is_documented() -> None:
    assert [p for p in commands(main, "maild") if not documented(p)] == []


def test_the_readme_opens_with_the_two_commands() -> None:
    head = README.split("\n## ", 1)[0]
    assert "make run" in head and "make test" in head
