"""Errors raised by the tariff engine; each names the offending field path."""

from __future__ import annotations

__all__ = ["CdrError", "PricingError", "TariffError"]


class PricingError(ValueError):
    """Input that cannot be priced; `path` names the field, e.g. `elements[0].price_components[1].price`."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path or "$"
        self.message = message
        super().__init__(f"{self.path}: {message}")


class TariffError(PricingError):
    """A malformed OCPI Tariff."""


class CdrError(PricingError):
    """A malformed OCPI CDR, Session or charging period list (or arguments describing one)."""
