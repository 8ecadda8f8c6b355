"""`python tools/export.py`: the `edgevit export` command (edgevit.cli.export), under its older name."""

from edgevit.cli.export import main

if __name__ == "__main__":
    main()
