"""The OCPI 2.3.0 tax fields our one (2.2.1-shaped) model keeps: a Tariff's `tax_included` and
`preauthorize_amount`, a Price's `taxes` (types.asciidoc TaxAmount). ocpi/versions/ puts them there from a
2.3.0 partner's objects; these readers check them like every other field."""

from __future__ import annotations

from typing import Any

from ocpi.normalize.issues import Ctx, Rejected, json_path
from ocpi.normalize.values import read_number, read_text, within

# mod_tariffs 2.3.0 TaxIncluded.
TAX_INCLUDED = ("YES", "NO", "N/A")
MAX_AMOUNT = 10**8


def read_tax_included(value: object, path: str, ctx: Ctx) -> str:
    """YES/NO/N/A, lenient on case. Anything else changes what every price of the tariff means: Rejected."""
    text = value.strip().upper() if isinstance(value, str) else None
    if text not in TAX_INCLUDED:
        raise Rejected(path, f"tax_included {value!r} is not one of {TAX_INCLUDED}", code="unknown_enum")
    if text != value:
        ctx.fix(path, "enum_case", f"tax_included {value!r} read as {text!r}")
    return text


def read_preauthorize_amount(value: object, path: str, ctx: Ctx) -> int | float | None:
    """For payment terminals only (it prices nothing): an unusable amount is dropped, reported."""
    number = read_number(value, path, ctx)
    if not within(number, 0, MAX_AMOUNT):
        ctx.drop(path, "invalid_number", f"preauthorize_amount {value!r} dropped")
        return None
    return number


def read_tax_amounts(value: object, path: str, ctx: Ctx) -> list[dict[str, Any]]:
    """TaxAmount[] {name, account_number?, percentage?, amount}: entries without a name or a readable amount
    are dropped, reported (the Price's incl_vat, computed before, stays the CPO's statement)."""
    out: list[dict[str, Any]] = []
    if not isinstance(value, list):
        ctx.drop(path, "invalid_type", "taxes is not a list")
        return out
    for i, tax in enumerate(value):
        entry_path = f"{path}[{i}]"
        if not isinstance(tax, dict):
            ctx.drop(entry_path, "invalid_type", "tax amount is not an object")
            continue
        name = read_text(tax.get("name"), json_path(entry_path, "name"), ctx, 255)
        amount = read_number(tax.get("amount"), json_path(entry_path, "amount"), ctx)
        if not name or not within(amount, -MAX_AMOUNT, MAX_AMOUNT):
            ctx.drop(entry_path, "invalid_number", f"tax amount {tax!r:.80} without a name or an amount dropped")
            continue
        entry: dict[str, Any] = {"name": name, "amount": amount}
        if tax.get("percentage") is not None:
            percentage = read_number(tax["percentage"], json_path(entry_path, "percentage"), ctx)
            if within(percentage, 0, 100):
                entry["percentage"] = percentage
            else:
                ctx.drop(json_path(entry_path, "percentage"), "invalid_number", "tax percentage dropped")
        account = read_text(tax.get("account_number"), json_path(entry_path, "account_number"), ctx, 255)
        if account:
            entry["account_number"] = account
        out.append(entry)
    return out
