"""`python -m edgevit.evaluate`: the `edgevit evaluate` command (edgevit.cli.evaluate), under its older name."""

from edgevit.cli.evaluate import main

if __name__ == "__main__":
    main()
