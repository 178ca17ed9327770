"""`python -m medlit <command> ...`: the same as the `medlit` command."""

from medlit.cli import main

main()
