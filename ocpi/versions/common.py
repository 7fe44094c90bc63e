"""What every version's mappings share: what they may ask about the world (`Context`), the refusal when a
version cannot say something (`CannotCarry`), and small dict helpers. Pure: no ORM, no I/O."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any


class CannotCarry(Exception):
    """The partner's OCPI version has no way to say this (a command, a value): nothing is sent."""


def _no_token(contract_id: str) -> tuple[str, str] | None:
    return None


def _no_reference(session: dict[str, Any]) -> str | None:
    return None


@dataclass(frozen=True)
class Context:
    """What an upgrade may need beyond the object itself. `owner` is the party the object belongs to (the
    URL's, or the partner's on a pull): 2.1.1 objects don't name it. `emsp` is our party. The lookups answer
    from our records what 2.1.1 leaves out: the token (uid, type) of a contract id, and the authorization
    reference of the START_SESSION a (2.2.1-shaped) session answers."""

    owner: tuple[str, str] = ("", "")
    emsp: tuple[str, str] = ("", "")
    token_for: Callable[[str], tuple[str, str] | None] = field(default=_no_token)
    authorization_reference_for: Callable[[dict[str, Any]], str | None] = field(default=_no_reference)


def renamed(obj: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """`obj` with fields renamed (old → new); a new name already present wins over the old one."""
    out = dict(obj)
    for old, new in names.items():
        if old in out:
            value = out.pop(old)
            out.setdefault(new, value)
    return out


def without(obj: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in names}


def each(value: Any, mapper: Callable[[dict[str, Any]], dict[str, Any]]) -> Any:
    """`mapper` over a list of objects; anything else is returned as it is (the normalizer judges it)."""
    if not isinstance(value, list):
        return value
    return [mapper(item) if isinstance(item, dict) else item for item in value]


_MAX_SAFE_INT = 2**53


def decimal_or_none(value: Any) -> Decimal | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return None
    # An exponent beyond what money can mean ("1e1000000") would overflow the first sum: not a number to us.
    return number if number.is_finite() and -30 < number.adjusted() < 30 else None


def json_number(value: Decimal) -> int | float | str:
    """A Decimal as the JSON value the normalizers read exactly: an int or float when Decimal(str(x)) gives
    the same Decimal back (integers up to 2**53, at most 15 significant digits), else its text, which the
    normalizers refuse as they would the partner's own (no silent rounding of money)."""
    if value == value.to_integral_value() and abs(value) <= _MAX_SAFE_INT:
        return int(value)
    if len(value.as_tuple().digits) <= 15:
        return float(value)
    return str(value)
