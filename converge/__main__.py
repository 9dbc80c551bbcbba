"""Run the command line: ``python -m converge``."""

from __future__ import annotations

from converge.cli import main

if __name__ == "__main__":
    main()
