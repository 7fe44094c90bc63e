"""paysim: a sandbox payment provider (see paysim/__main__.py)."""
