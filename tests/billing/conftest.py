"""Fixtures for the pricing tests: the read-only reference vectors in shared/ (skipped when absent)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

SHARED_DIR = Path(os.environ.get("SHARED_DIR") or Path(__file__).resolve().parents[2].parent / "shared")
SPEC_DIR = SHARED_DIR / "vectors" / "ocpi" / "spec-2.2.1"
CASES_DIR = SHARED_DIR / "vectors" / "ocpi" / "tariff-cases"


def load_json(path: Path) -> Any:
    if not path.exists():
        pytest.skip(f"reference vector {path} not available (shared/ is not mounted; set SHARED_DIR)")
    with path.open(encoding="utf-8") as handle:
        return json.load(handle)


@pytest.fixture
def spec_tariff() -> Any:
    """Load an official OCPI 2.2.1 example tariff by file name."""
    return lambda name: load_json(SPEC_DIR / name)
