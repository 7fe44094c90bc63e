"""Lenient reading of OCPI field names and scalar values: text, ids, enums, numbers, booleans, Price, DisplayText."""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation
from typing import Any

from emsp.text import CONTROL_CHARACTERS
from ocpi import enums
from ocpi.normalize.issues import Ctx, json_path

# --- field names -------------------------------------------------------------------------------------------


def as_list(value: object) -> list[Any]:
    """The list, or [] for null and for anything that is not a list (reported by the caller if it matters)."""
    return value if isinstance(value, list) else []


def field_set(names: str) -> frozenset[str]:
    """frozenset of the space-separated field names (keeps the long OCPI field lists readable)."""
    return frozenset(names.split())


_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")


def snake_case(name: str) -> str:
    """A camelCase field name in OCPI spelling: "maxKwh" -> "max_kwh" (snake_case names stay as they are)."""
    return _CAMEL.sub(r"_\1", name).lower()


_PLANS: dict[tuple[str, frozenset[str]], tuple[tuple[str, str | None], ...]] = {}


def canonical_fields(
    raw: dict[str, Any],
    known: frozenset[str],
    kind: str,
    prefix: str,
    ctx: Ctx,
    aliases: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Map camelCase / OCPI 2.1.1 field names onto the 2.2.1 names and drop (and report) the rest.

    A value that is the text of a null ("null", "undefined", any case) is read as None, with a finding
    (``null_string``): the field is then absent, as a JSON null makes it. Returns ``raw`` itself when every key is
    already known and no value is such text, a cleaned copy otherwise. Strict out: no unknown
    field survives, but each name is reported once per object kind, so a 500-connector feed stays readable.
    ``kind`` must always come with the same ``known``/``aliases`` (it keys the cached renaming plan).
    """
    extra = raw.keys() - known
    if not extra:
        return _null_texts_read(raw, kind, prefix, ctx)
    plan_key = (kind, frozenset(extra))
    plan = _PLANS.get(plan_key)
    if plan is None:
        # sorted: the issue list must not depend on the key order of the partner's JSON
        targets = ((k, (aliases or {}).get(k) or snake_case(k)) for k in sorted(extra))
        plan = tuple((k, t if t in known else None) for k, t in targets)
        if len(_PLANS) < 4096:  # bounded: the key sets come from partners
            _PLANS[plan_key] = plan
    out = {k: v for k, v in raw.items() if k in known}
    reported = ctx.reported
    for key, target in plan:
        value = raw[key]
        if target is not None and target not in out:
            out[target] = value
            if (kind, key, "renamed_field") not in reported:
                message = f"'{key}' read as 2.2.1 field '{target}'"
                ctx.once(kind, key, json_path(prefix, key), "renamed_field", message, fixed=True)
        elif value is not None and (kind, key, "unknown_field") not in reported:
            message = f"unknown field '{key}' dropped"
            ctx.once(kind, key, json_path(prefix, key), "unknown_field", message, fixed=False)
    return _null_texts_read(out, kind, prefix, ctx)


# The text of a null: what a back end's serialiser writes for a missing value (JavaScript's String(null) and
# String(undefined), a template filling in a None). Read as it was meant, JSON null: an optional field absent, a
# required one refused as missing. Kept as text, a session's end_date_time "null" was refused as "not a DateTime",
# a tariff's vat "null" as no number, and a CDR's meter_id and remark "null" stored and shown as written.
_NULL_TEXTS = frozenset({"null", "undefined"})
_NULL_TEXT_MAX = len(" undefined ")  # longer text is no null (and is not lower-cased to find out)


def _names_something(key: str) -> bool:
    """An id, a uid or a party: "null" there is a CiString like any other, never read as null. Read as null, an
    id "null" had made its location, tariff or session refused as without id (an EVSE "NULL" dropped), and a token's
    party "null" had made another eMSP's token read as ours: its CDR billed our driver of the same RFID uid."""
    return key in _NAMING or key.endswith(("_id", "_uid"))


_NAMING = frozenset({"id", "uid", "country_code", "party_id", "authorization_reference", "visual_number"})


def _null_texts_read(fields: dict[str, Any], kind: str, prefix: str, ctx: Ctx) -> dict[str, Any]:
    """``fields`` with each value that is the text of a null ("null", "NULL", "undefined") read as None, and
    reported; ``fields`` itself when there is none (the common case: no copy)."""
    nulls = [
        key
        for key, value in fields.items()
        if value.__class__ is str
        and len(value) <= _NULL_TEXT_MAX
        and value.strip().lower() in _NULL_TEXTS
        and not _names_something(key)
    ]
    if not nulls:
        return fields
    out = dict(fields)
    for key in nulls:
        ctx.drop(json_path(prefix, key), "null_string", f"{kind} {key} {out[key]!r} read as null (absent)")
        out[key] = None
    return out


# --- strings, numbers, booleans -----------------------------------------------------------------------------

# types.asciidoc §16.1/16.3: CiString and string ids are printable ASCII.
_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]*")
# Location.id and EVSE.uid are string(39) in OCPI 2.1.1 (2.2.1 made them CiString(36)). Taken from a CPO of any
# version up to 39: refusing a 2.1.1 CPO's own id would lose the location and every session and CDR naming it.
PLACE_ID_MAX = 39


# Invisible characters that only hide or disguise text: bidi embeddings/overrides (U+202A-U+202E: a U+202E makes
# "xyz.exe" read "exe.zyx") and isolates (U+2066-U+2069), zero-width spaces (U+200B, U+FEFF; real addresses carry
# them). The zero-width (non-)joiners U+200C/U+200D stay: Indic and Persian spelling and emoji need them.
_INVISIBLE = r"\u200b\u202a-\u202e\u2066-\u2069\ufeff"
_LINE_BREAKS = r"\t\n\r\u2028\u2029"
# What text loses: control characters (emsp/text.py) and the invisible ones; a one-line field (a name, an address)
# also its tabs and line breaks, each run made one space (an address "No:1<TAB>Siirt" was served with the TAB).
# Multi-line text (DisplayText, a CDR remark) keeps them.
_NOT_IN_TEXT = re.compile(f"{CONTROL_CHARACTERS.pattern}|[{_INVISIBLE}]")
_NOT_ON_ONE_LINE = re.compile(rf"[\x00-\x1f\x7f-\x9f{_INVISIBLE}\u2028\u2029]")
_BREAKS = re.compile(f"[ {_LINE_BREAKS}]*[{_LINE_BREAKS}][ {_LINE_BREAKS}]*")


def _clean_text(s: str, path: str, ctx: Ctx, *, multiline: bool) -> str:
    """Text without control or invisible characters (and, on one line, with spaces for its breaks), reported."""
    if not multiline:
        s = _BREAKS.sub(" ", s)
    s = _NOT_IN_TEXT.sub("", s).strip()
    ctx.fix(path, "control_characters", "control or invisible characters removed")
    return s


def read_text(value: object, path: str, ctx: Ctx, max_len: int | None = None, *, multiline: bool = False) -> str | None:
    """Free text (string): stripped; numbers accepted; over-long values truncated with an issue; control and
    invisible characters removed, tabs and line breaks made spaces unless ``multiline``. Text left empty is
    returned empty, for the caller to treat as it treats an empty one."""
    if value is None:
        return None
    if isinstance(value, str):
        s = value.strip()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        s = str(value)
        ctx.fix(path, "type_coerced", f"number {value!r} read as string")
    else:
        ctx.drop(path, "invalid_type", f"expected a string, got {type(value).__name__}")
        return None
    if (_NOT_IN_TEXT if multiline else _NOT_ON_ONE_LINE).search(s):
        s = _clean_text(s, path, ctx, multiline=multiline)
    if max_len is not None and len(s) > max_len:
        ctx.fix(path, "truncated", f"{len(s)} characters truncated to {max_len}")
        s = s[:max_len].rstrip()
    return s


def read_identifier(value: object, path: str, ctx: Ctx, max_len: int = 36) -> str | None:
    """CiString ids: stripped, but stored in the case received (compared case-insensitively elsewhere).

    An id longer than its OCPI maximum (36; 39 for CDR ids and for places, PLACE_ID_MAX; 48 for evse_id) is
    unusable — cutting it could merge two objects — so it is dropped and the caller treats it as missing."""
    if value is None:
        return None
    if isinstance(value, str):
        s = value.strip()
        if s != value:
            ctx.fix(path, "id_whitespace", "surrounding whitespace stripped from identifier")
    elif isinstance(value, int) and not isinstance(value, bool):
        s = str(value)
        ctx.fix(path, "type_coerced", f"number {value!r} read as string identifier")
    else:
        return None
    if len(s) > max_len:
        ctx.drop(path, "id_too_long", f"identifier of {len(s)} characters (OCPI maximum {max_len})")
        return None
    if not _PRINTABLE_ASCII.fullmatch(s):
        # A control character or non-ASCII letter in an id breaks URLs and headers we build from it.
        ctx.drop(path, "invalid_identifier", f"identifier {s[:40]!r} has characters outside printable ASCII")
        return None
    return s or None


def read_enum(value: object, table: enums.EnumTable, path: str, ctx: Ctx) -> str | None:
    """Canonical enum spelling, or None (caller decides whether that drops or rejects)."""
    if value.__class__ is str and value in table.values:  # the common, clean case: no further work
        return value
    if not isinstance(value, str):
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        value = str(value)
    canonical, how = table.resolve(value)
    if how == "case":
        ctx.fix(path, "enum_case", f"{value!r} normalised to {canonical!r}")
    elif how == "synonym" and canonical is not None:
        ctx.fix(path, "enum_synonym", f"{value!r} mapped to {canonical!r}")
    return canonical


def read_enum_list(
    value: object, table: enums.EnumTable, path: str, ctx: Ctx, code: str = "unknown_enum"
) -> list[str] | None:
    """Enum list: unknown values dropped (as IZIVIA's compatibility enhancer does), duplicates removed."""
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
        ctx.fix(path, "type_coerced", "single value wrapped in a list")
    if not isinstance(value, list):
        ctx.drop(path, "invalid_type", f"expected a list, got {type(value).__name__}")
        return None
    out: list[str] = []
    for i, item in enumerate(value):
        canonical = read_enum(item, table, f"{path}[{i}]", ctx)
        if canonical is None:
            ctx.drop(f"{path}[{i}]", code, f"unknown value {item!r} dropped")
        elif canonical not in out:
            out.append(canonical)
    return out


_INT_TEXT = re.compile(r"[+-]?\d+")
_MAX_SAFE_INT = 2**53


def read_number(value: object, path: str, ctx: Ctx) -> int | float | None:
    """A JSON number, returned exactly as decoded: money stays Decimal(str(x))-safe, no float arithmetic.

    Numeric strings are converted only when float's shortest repr round-trips them (<= 15 significant digits),
    so Decimal(str(result)) == Decimal(original text). Integers beyond 2**53 (not portable JSON, and out of
    orjson's 64-bit range) and NaN/Infinity are refused. Anything refused is None (the caller reports).
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value if -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT else None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        s = value.strip()
        if len(s) > 40:
            return None
        try:
            d = Decimal(s)
        except InvalidOperation:
            return None
        if not d.is_finite():
            return None
        if _INT_TEXT.fullmatch(s):
            result: int | float = int(s)
            if not -_MAX_SAFE_INT <= result <= _MAX_SAFE_INT:
                return None
        else:
            if len(d.as_tuple().digits) > 15:
                return None
            result = float(s)
        ctx.fix(path, "type_coerced", f"numeric string {value!r} read as number")
        return result
    return None


def within(number: float | None, low: float, high: float) -> bool:
    """Is a number read from a partner inside the range a field can plausibly hold (and our columns store)?"""
    return number is not None and low <= number <= high


def read_integer(value: object, path: str, ctx: Ctx) -> int | None:
    """An int; integral floats and numeric strings accepted, other floats rounded (with an issue)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT else None
    n = read_number(value, path, ctx)
    if n is None:
        return None
    if isinstance(n, float):
        if abs(n) > _MAX_SAFE_INT:
            return None
        r = round(n)
        if r != n:
            ctx.fix(path, "rounded", f"{n!r} rounded to integer {r}")
        return r
    return n


_TRUE = {"true", "1", "yes", "y"}
_FALSE = {"false", "0", "no", "n"}


def read_boolean(value: object, path: str, ctx: Ctx) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        ctx.fix(path, "type_coerced", f"{value!r} read as boolean")
        return value.strip().lower() in _TRUE
    if isinstance(value, int) and value in (0, 1):
        ctx.fix(path, "type_coerced", f"{value!r} read as boolean")
        return bool(value)
    return None


def read_price(value: object, path: str, ctx: Ctx) -> dict[str, int | float] | None:
    """OCPI Price {excl_vat, incl_vat?}; a bare number (OCPI 2.1.1 style) is read as excl_vat (issue)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        n = read_number(value, path, ctx)
        if n is None:
            return None
        ctx.fix(path, "price_as_number", "bare number read as Price.excl_vat (2.1.1 prices carry no VAT split)")
        return {"excl_vat": n}
    excl = read_number(value.get("excl_vat"), json_path(path, "excl_vat"), ctx)
    if excl is None:
        return None
    out: dict[str, int | float] = {"excl_vat": excl}
    if value.get("incl_vat") is not None:
        incl = read_number(value["incl_vat"], json_path(path, "incl_vat"), ctx)
        if incl is None:
            ctx.drop(json_path(path, "incl_vat"), "invalid_number", f"incl_vat {value['incl_vat']!r} dropped")
        else:
            out["incl_vat"] = incl
    extra = value.keys() - {"excl_vat", "incl_vat"}
    for key in sorted(extra):
        ctx.once("price", key, json_path(path, key), "unknown_field", f"unknown field '{key}' dropped", fixed=False)
    return out


def read_display_texts(value: object, path: str, ctx: Ctx) -> list[dict[str, str]] | None:
    """DisplayText[] {language string(2), text string(512)}; entries without text are dropped."""
    if value is None:
        return None
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        ctx.drop(path, "invalid_type", "expected a list of DisplayText")
        return None
    out = []
    for i, item in enumerate(value):
        p = f"{path}[{i}]"
        if not isinstance(item, dict):
            ctx.drop(p, "invalid_display_text", "DisplayText is not an object")
            continue
        txt = read_text(item.get("text"), json_path(p, "text"), ctx, 512, multiline=True)
        lang = read_text(item.get("language"), json_path(p, "language"), ctx)
        if not txt:
            ctx.drop(p, "invalid_display_text", "DisplayText without text dropped")
            continue
        if not lang or len(lang) < 2:
            ctx.drop(p, "invalid_display_text", "DisplayText without a language code dropped")
            continue
        if len(lang) > 2 or not lang.islower():
            fixed = lang[:2].lower()
            ctx.fix(json_path(p, "language"), "enum_case", f"language {lang!r} normalised to {fixed!r}")
            lang = fixed
        out.append({"language": lang, "text": txt})
    return out
