"""One exception hierarchy, so that the edges (SMTP replies, CLI messages) can translate maild's
own failures without knowing every module that raises them."""

from __future__ import annotations


class MaildError(Exception):
    """A failure maild raises on purpose, with a message a person can act on."""


class ParseError(MaildError):
    """The bytes cannot be read as a mail; the message goes to quarantine with this reason."""


class StorageError(MaildError):
    """The database did not take the transaction; the sender should retry later (SMTP 451,
    or 452 when `disk_full`)."""

    def __init__(self, message: str, *, disk_full: bool = False):
        super().__init__(message)
        self.disk_full = disk_full


class ConfigError(MaildError):
    """Raised with every problem found; each is "file: key.path: reason"."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems
