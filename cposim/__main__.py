"""`python -m cposim --port P [options]`: the CPO simulator without Django."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
