"""A migration no database has applied: tests/emsp/test_probes.py points an app without migrations at it."""
