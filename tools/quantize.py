"""`python tools/quantize.py`: the `edgevit quantize` command (edgevit.cli.quantize), under its older name."""

from edgevit.cli.quantize import main

if __name__ == "__main__":
    main()
