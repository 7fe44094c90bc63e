"""`python -m paysim --port 8700 [options]`: the sandbox payment provider (paysim/cli.py lists the options)."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
