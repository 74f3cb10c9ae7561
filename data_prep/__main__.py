"""Entry point: `python -m data_prep <sub-command> ...`."""

from __future__ import annotations

from data_prep.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
