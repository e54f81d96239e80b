"""`python -m maild` is the `maild` command."""

from maild.cli import main

main()
