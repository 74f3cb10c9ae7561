"""`python -m llavolta <command>`: the same as the `llavolta` console script."""

from llavolta.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
