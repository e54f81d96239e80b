"""The `maild` command: a thin click layer over the library; errors a person can act on.

Each command lives in a module of this package and is imported only when named (`maild
case list` loads neither the CRM nor the reports); what they share is cli/common.py.
"""

from __future__ import annotations

import importlib
import os

import click

# command name -> (module, attribute): the modules are imported only when their command runs
COMMANDS = {
    "run": ("maild.cli.service", "run"),
    "check-config": ("maild.cli.service", "check_config"),
    "db": ("maild.cli.service", "db"),
    "inspect": ("maild.cli.cases", "inspect"),
    "case": ("maild.cli.cases", "case"),
    "message": ("maild.cli.cases", "message"),
    "outbox": ("maild.cli.outbox", "outbox"),
    "contact": ("maild.cli.crm", "contact"),
    "org": ("maild.cli.crm", "org"),
    "contract": ("maild.cli.contracts", "contract"),
    "report": ("maild.cli.report", "report"),
}


class LazyGroup(click.Group):
    """Lists every command of COMMANDS; imports a command's module when it is asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMANDS and cmd_name not in self.commands:
            module, attr = COMMANDS[cmd_name]
            self.add_command(getattr(importlib.import_module(module), attr), cmd_name)
        return super().get_command(ctx, cmd_name)


# SPEC §11: what maild writes (database, WAL, raw mails, attachments, outbox Maildir with its
# reply tokens) is never world-readable, whatever umask the shell or service manager gave us.
UMASK = 0o027


def restrict_umask() -> None:
    """Adds the bits of UMASK to the process's umask (a stricter one, e.g. 077, is kept)."""
    os.umask(os.umask(UMASK) | UMASK)


@click.group(cls=LazyGroup, help="maild: an email-first help desk. See README.md.")
def main() -> None:
    restrict_umask()  # before any subcommand opens a file; parse workers inherit it
