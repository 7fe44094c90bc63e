"""OCPI 2.1.1, 2.2.1 and 2.3.0 on one domain model (docs/ocpi-versions.md).

Everything past the wire is 2.2.1-shaped: the normalizers take 2.2.1 objects and the renderers make them. Per
version, pure functions turn what a partner sends into that shape (`upgrade`) and what we send into the
partner's version (`downgrade`); `ocpi/versions/wire.py` calls them at the edges (views, pulled pages,
pushes, commands). 2.2.1 itself passes through unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ocpi.versions import cdrs, tariffs, v211, v230
from ocpi.versions.common import CannotCarry, Context

CANONICAL = "2.2.1"
# Highest first: negotiation takes the first one both sides offer.
SUPPORTED: tuple[str, ...] = ("2.3.0", "2.2.1", "2.1.1")

Mapper = Callable[..., dict[str, Any]]

_UPGRADES: dict[str, dict[str, Mapper]] = {
    v: {**m.UPGRADES, **tariffs.UPGRADES[v], **cdrs.UPGRADES[v]} for v, m in (("2.1.1", v211), ("2.3.0", v230))
}
_DOWNGRADES: dict[str, dict[str, Mapper]] = {
    v: {**m.DOWNGRADES, **tariffs.DOWNGRADES[v], **cdrs.DOWNGRADES[v]} for v, m in (("2.1.1", v211), ("2.3.0", v230))
}

__all__ = ["CANONICAL", "SUPPORTED", "CannotCarry", "Context", "downgrade", "negotiate", "supported", "upgrade"]


def supported(version: str) -> bool:
    return version in SUPPORTED


def negotiate(offered: Iterable[str]) -> str | None:
    """The highest version both we and the partner offer (credentials.asciidoc: the parties agree on the
    highest common version), or None."""
    theirs = {str(v).strip() for v in offered}
    return next((v for v in SUPPORTED if v in theirs), None)


def upgrade(version: str, kind: str, obj: Any, ctx: Context | None = None) -> Any:
    """An object of `kind` as a partner speaking `version` sent it, in the 2.2.1 shape. Objects that are not
    JSON objects pass through (the normalizer refuses them with its own message)."""
    mapper = _UPGRADES.get(version, {}).get(kind)
    if mapper is None or not isinstance(obj, dict):
        return obj
    return mapper(obj, ctx or Context())


def downgrade(version: str, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    """One of our 2.2.1-shaped objects of `kind` as a partner speaking `version` reads it. Raises CannotCarry
    when that version has no way to say it (e.g. CANCEL_RESERVATION in 2.1.1)."""
    mapper = _DOWNGRADES.get(version, {}).get(kind)
    return obj if mapper is None else mapper(obj)
