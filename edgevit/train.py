"""`python -m edgevit.train`: the `edgevit train` command (edgevit.cli.train), under its older name."""

from edgevit.cli.train import main

if __name__ == "__main__":
    main()
