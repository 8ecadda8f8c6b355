"""`python -m edgevit VERB ...`: the `edgevit` command (edgevit.cli.main)."""

from edgevit.cli.main import main

main()
