"""Building blocks of the OCPI normaliser: issues, rejection, DateTime/number/text coercion, unwrapping."""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from ocpi import enums


@dataclass(frozen=True)
class Issue:
    """One finding: ``fixed`` True = value normalised and kept; False = sub-object/value dropped."""

    path: str
    code: str
    message: str
    fixed: bool


# Vocabulary of ``Issue.code`` (metrics and the data-quality report group by it). F = fixed (kept), D = dropped.
ISSUE_CODES: dict[str, str] = {
    # field names and types
    "renamed_field": "F camelCase / OCPI 2.1.1 name read as its 2.2.1 field",
    "unknown_field": "D field unknown to 2.2.1 dropped (reported once per object kind and name)",
    "type_coerced": "F number/string/boolean given as another JSON type",
    "invalid_type": "D value of the wrong JSON type dropped",
    "rounded": "F non-integral number rounded where an int is due",
    "truncated": "F string longer than its OCPI maximum cut",
    "id_whitespace": "F whitespace around an identifier stripped (case kept)",
    "id_too_long": "D identifier longer than its OCPI maximum dropped (treated as missing)",
    "missing_required": "F required text missing; empty string used",
    # enums
    "enum_case": "F enum/code value with wrong case or surrounding whitespace",
    "enum_synonym": "F vendor spelling mapped to the OCPI enum (e.g. 'GB/T (DC)' -> GBT_DC)",
    "unknown_enum": "D value outside the OCPI enum dropped",
    "unknown_status": "F unusable EVSE status set to UNKNOWN",
    # party and geography
    "missing_country_code": "F country_code taken from the partner's credentials",
    "missing_party_id": "F party_id taken from the partner's credentials",
    "country_code_alpha3": "F alpha-3 country_code converted to alpha-2",
    "country_alpha2": "F alpha-2 country converted to alpha-3",
    "country_name": "F country name (e.g. 'Polska') converted to alpha-3",
    "country_from_country_code": "F unusable country taken from country_code",
    "invalid_country": "D unusable country dropped (CDR location / PATCH)",
    "coordinates_format": "F coordinates re-rendered as OCPI strings (numbers, >7 decimals, ...)",
    "coordinates_from_evse": "F location latitude == longitude; an EVSE position used",
    "invalid_coordinates": "D unusable coordinates of an EVSE / related location dropped",
    "missing_time_zone": "F time_zone derived from the coordinates",
    "invalid_time_zone": "F unknown time_zone replaced from the coordinates",
    "time_zone_format": "F misspelled IANA zone repaired ('Asia/Kuala Lumpur')",
    # time
    "missing_last_updated": "F last_updated taken from parent/children or the receive time",
    "datetime_offset": "F DateTime with a UTC offset converted to 'Z'",
    "datetime_format": "F date-only or epoch DateTime read as UTC",
    "time_format": "F hour given as 'H:MM'/'HH:MM:SS' rendered as HH:MM",
    "date_format": "F restriction date given with a time reduced to YYYY-MM-DD",
    "invalid_regular_hours": "D unreadable regular_hours entry dropped",
    "invalid_period": "D unreadable exceptional opening/closing dropped",
    "invalid_status_schedule": "D unreadable status_schedule entry dropped",
    # connectors and EVSEs
    "power_in_kw": "F max_electric_power < 1000 read as kW",
    "derived_power": "F max_electric_power derived from voltage x amperage x phases",
    "derived_voltage": "F max_voltage derived from power / amperage",
    "derived_amperage": "F max_amperage derived from power / voltage",
    "unknown_voltage": "F max_voltage missing or <= 0; 0 (= unknown) used",
    "unknown_amperage": "F max_amperage missing or <= 0; 0 (= unknown) used",
    "invalid_power": "D max_electric_power <= 0 or unreadable dropped",
    "implausible_value": "D voltage/amperage beyond any charger dropped",
    "inferred_power_type": "F power_type missing/unknown; inferred from the standard",
    "inferred_format": "F format missing/unknown; inferred from the standard",
    "unknown_connector_standard": "D connector of unknown standard dropped",
    "missing_connector_id": "D connector without id dropped",
    "invalid_connector": "D connector that is not an object dropped",
    "duplicate_connector_id": "D earlier connector with a repeated id dropped",
    "evse_without_connectors": "F EVSE kept without connectors (not bookable)",
    "invalid_evse_id": "D evse_id longer than 48 characters dropped",
    "dropped_evse": "D EVSE without uid (or not an object) dropped",
    "duplicate_evse_uid": "D earlier EVSE with a repeated uid dropped",
    "missing_publish": "F publish missing (OCPI 2.1.1); true used",
    "invalid_publish_allowed_to": "D publish_allowed_to ignored because publish is true",
    "invalid_publish_token": "D unreadable publish_allowed_to entry dropped",
    "invalid_image": "D image without url/type dropped",
    "image_type": "F image type taken from a MIME type or the url extension",
    "invalid_business_details": "D operator/suboperator/owner without name dropped",
    "invalid_display_text": "D DisplayText without text or language dropped",
    "invalid_energy_mix": "D unreadable energy mix (entry) dropped",
    # money, sessions, CDRs
    "price_as_number": "F bare number read as Price.excl_vat",
    "invalid_number": "D unreadable optional number (e.g. incl_vat) dropped",
    "missing_step_size": "F step_size missing; 1 used",
    "step_size_zero": "F step_size 0; 1 used",
    "empty_tariff_element": "D tariff element without price components dropped",
    "dropped_tariff": "D unusable tariff embedded in a CDR dropped",
    "missing_kwh": "F session kwh missing; 0 used",
    "missing_token_party": "F cdr_token without country_code/party_id kept",
    "missing_contract_id": "F cdr_token contract_id missing; uid used",
    "invalid_charging_period": "D unreadable charging period dropped",
    "invalid_dimension": "D unreadable/unknown charging period dimension dropped",
    "missing_charging_periods": "F CDR kept without charging periods",
    "missing_evse_id": "D CDR location without evse_id",
    "missing_credit_reference": "F credit CDR kept without credit_reference_id",
}


# The public normalize_* functions: (raw, **options) -> (strictly 2.2.1-shaped dict, issues), or Rejected.
Normalizer = Callable[..., tuple[dict[str, Any], list[Issue]]]


class Rejected(ValueError):
    """The whole object cannot be used (``path`` names the offending field, ``reason`` says why)."""

    def __init__(self, path: str, reason: str, *, code: str = "rejected", issues: list[Issue] | None = None) -> None:
        super().__init__(f"{path}: {reason}" if path else reason)
        self.path = path
        self.reason = reason
        self.code = code
        self.issues: list[Issue] = list(issues or [])


def join(prefix: str, name: str) -> str:
    if not prefix:
        return name
    if name.startswith("["):
        return prefix + name
    return f"{prefix}.{name}"


class Ctx:
    """Collects the issues of one top-level normalisation call."""

    __slots__ = ("_once_log", "_reported", "issues")

    def __init__(self) -> None:
        self.issues: list[Issue] = []
        self._reported: set[tuple[str, str, str]] = set()
        self._once_log: list[tuple[int, tuple[str, str, str]]] = []

    def mark(self) -> int:
        return len(self.issues)

    def rollback(self, mark: int) -> None:
        """Forget the issues found inside a sub-object that is then dropped (its drop issue replaces them)."""
        del self.issues[mark:]
        while self._once_log and self._once_log[-1][0] >= mark:
            self._reported.discard(self._once_log.pop()[1])

    def fix(self, path: str, code: str, message: str) -> None:
        self.issues.append(Issue(path, code, message, True))

    def drop(self, path: str, code: str, message: str) -> None:
        self.issues.append(Issue(path, code, message, False))

    def once(self, kind: str, field: str, path: str, code: str, message: str, *, fixed: bool) -> None:
        """Report a field-name problem once per object kind ("connector") and name, not per occurrence."""
        key = (kind, field, code)
        if key not in self._reported:
            self._reported.add(key)
            self._once_log.append((len(self.issues), key))
            self.issues.append(Issue(path, code, message, fixed))

    def reject(self, path: str, reason: str, code: str = "rejected") -> Rejected:
        return Rejected(path, reason, code=code, issues=self.issues)


def collect(build: Callable[[Ctx], dict[str, Any]]) -> tuple[dict[str, Any], list[Issue]]:
    """One top-level normalisation with a fresh Ctx: (result, issues), or Rejected carrying the issues
    found before the rejection."""
    ctx = Ctx()
    try:
        return build(ctx), ctx.issues
    except Rejected as exc:
        raise ctx.reject(exc.path, exc.reason, exc.code) from None


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

    Returns ``raw`` itself when every key is already known, a cleaned copy otherwise. Strict out: no unknown
    field survives, but each name is reported once per object kind, so a 500-connector feed stays readable.
    ``kind`` must always come with the same ``known``/``aliases`` (it keys the cached renaming plan).
    """
    extra = raw.keys() - known
    if not extra:
        return raw
    plan_key = (kind, frozenset(extra))
    plan = _PLANS.get(plan_key)
    if plan is None:
        # sorted: the issue list must not depend on the key order of the partner's JSON
        targets = ((k, (aliases or {}).get(k) or snake_case(k)) for k in sorted(extra))
        plan = tuple((k, t if t in known else None) for k, t in targets)
        if len(_PLANS) < 4096:  # bounded: the key sets come from partners
            _PLANS[plan_key] = plan
    out = {k: v for k, v in raw.items() if k in known}
    reported = ctx._reported
    for key, target in plan:
        value = raw[key]
        if target is not None and target not in out:
            out[target] = value
            if (kind, key, "renamed_field") not in reported:
                message = f"'{key}' read as 2.2.1 field '{target}'"
                ctx.once(kind, key, join(prefix, key), "renamed_field", message, fixed=True)
        elif value is not None and (kind, key, "unknown_field") not in reported:
            message = f"unknown field '{key}' dropped"
            ctx.once(kind, key, join(prefix, key), "unknown_field", message, fixed=False)
    return out


# --- DateTime (types.asciidoc §16.2: RFC 3339, UTC, "Z" or no designator) -----------------------------------

_CANONICAL_DT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z?")


def _utcnow() -> datetime:
    return datetime.now(UTC)


def format_ocpi_datetime(dt: datetime) -> str:
    """Strict out: "2026-11-25T10:00:00Z", or "...:00.123Z" when the milliseconds are non-zero.

    Sub-millisecond digits are truncated (never rounded into the future); string(25) has no room for more.
    A naive datetime is taken as UTC, like a received DateTime without designator.
    """
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC)
    ms = dt.microsecond // 1000
    head = f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}"
    return f"{head}.{ms:03d}Z" if ms else f"{head}Z"


@functools.lru_cache(maxsize=16384)
def _parse_dt_text(text: str) -> tuple[datetime, str, str | None]:
    """(aware UTC datetime, canonical string, issue code or None); raises ValueError on garbage."""
    s = text.strip()
    if _CANONICAL_DT.fullmatch(s):
        # No designator = UTC (types.asciidoc: "absence of the timezone designator implies a UTC timestamp").
        dt = datetime.fromisoformat(s).replace(tzinfo=UTC)
        return dt, format_ocpi_datetime(dt), None
    if len(s) == 10 and s[4:5] == "-":
        dt = datetime.combine(date.fromisoformat(s), time(), UTC)
        return dt, format_ocpi_datetime(dt), "datetime_format"
    # Leaves: "2025-03-12 10:54:38" (space), 7+ fraction digits, offsets "+00:00"/"+03:00", lower-case "z".
    s2 = s.replace(" ", "T", 1) if len(s) > 10 and s[10] == " " else s
    if s2.endswith("z"):
        s2 = s2[:-1] + "Z"
    frac = re.search(r"\.(\d{7,})", s2)
    if frac:
        s2 = s2[: frac.start(1)] + frac.group(1)[:6] + s2[frac.end(1) :]
    dt = datetime.fromisoformat(s2)
    code = None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    elif s2.endswith("Z"):
        dt = dt.astimezone(UTC)
    else:
        # "+00:00 is not the same as UTC" (types.asciidoc): any explicit offset is a deviation, even zero.
        code = "datetime_offset"
        dt = dt.astimezone(UTC)
    return dt, format_ocpi_datetime(dt), code


def parse_dt(value: object, path: str) -> tuple[datetime, str, str | None]:
    """Lenient DateTime read; returns (datetime, canonical text, issue code or None), raises Rejected."""
    if isinstance(value, str):
        try:
            return _parse_dt_text(value)
        except (ValueError, OverflowError):
            raise Rejected(path, f"not a DateTime: {value[:40]!r}", code="invalid_datetime") from None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0:
        # Epoch numbers (seconds, or milliseconds when implausibly large) from non-OCPI back ends.
        seconds = value / 1000 if value > 1e11 else value
        try:
            dt = datetime.fromtimestamp(seconds, UTC)
        except (ValueError, OverflowError, OSError):
            raise Rejected(path, f"not a DateTime: {value!r}", code="invalid_datetime") from None
        return dt, format_ocpi_datetime(dt), "datetime_format"
    if isinstance(value, datetime):
        dt = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return dt, format_ocpi_datetime(dt), None
    raise Rejected(path, f"not a DateTime: {value!r}", code="invalid_datetime")


_DT_MESSAGES = {
    "datetime_offset": "DateTime with a UTC offset converted to UTC 'Z'",
    "datetime_format": "non-RFC 3339 DateTime (date only or epoch number) read as UTC",
}


def parse_ocpi_datetime(value: object, path: str, *, issues: list[Issue] | None = None) -> datetime:
    """Aware UTC datetime from an OCPI DateTime; offsets are converted (and reported into ``issues``)."""
    dt, _text, code = parse_dt(value, path)
    if code is not None and issues is not None:
        issues.append(Issue(path, code, _DT_MESSAGES[code], True))
    return dt


def dt_field(value: object, path: str, ctx: Ctx) -> tuple[datetime, str]:
    dt, text, code = parse_dt(value, path)
    if code is not None:
        ctx.fix(path, code, _DT_MESSAGES[code])
    return dt, text


def object_last_updated(
    raw: dict[str, Any], prefix: str, ctx: Ctx, fallback: datetime | None, *, partial: bool
) -> tuple[datetime, str] | None:
    """``last_updated`` of a full object, or of a PATCH body (``partial``: required, garbage raises).

    Decision: a full object is never rejected for its ``last_updated`` (the official tariff PUT example has
    none). The stamp then comes from ``fallback`` (parent/children: mod_locations keeps the newest child
    stamp on the parent) or the receive time, with a ``missing_last_updated`` issue. Only PATCHes are
    rejected, because there the stamp orders partial updates (ocpi/ocpi#355 -> OCPI 2001). Returns None for
    a PATCH without it.
    """
    path = join(prefix, "last_updated")
    value = raw.get("last_updated")
    if value is not None:
        try:
            return dt_field(value, path, ctx)
        except Rejected as exc:
            if partial:
                raise ctx.reject(path, exc.reason, exc.code) from None
            reason = exc.reason
    elif partial:
        return None
    else:
        reason = "missing"
    dt = fallback or _utcnow()
    source = "taken from its parent/children" if fallback else "set to the receive time"
    ctx.fix(path, "missing_last_updated", f"last_updated {reason}; {source}")
    return dt, format_ocpi_datetime(dt)


# --- strings, numbers, booleans -----------------------------------------------------------------------------


def text(value: object, path: str, ctx: Ctx, max_len: int | None = None) -> str | None:
    """Free text (string): stripped; numbers accepted; over-long values truncated with an issue."""
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
    if max_len is not None and len(s) > max_len:
        ctx.fix(path, "truncated", f"{len(s)} characters truncated to {max_len}")
        s = s[:max_len].rstrip()
    return s


def identifier(value: object, path: str, ctx: Ctx, max_len: int = 36) -> str | None:
    """CiString ids: stripped, but stored in the case received (compared case-insensitively elsewhere).

    An id longer than its OCPI maximum (36; 39 for CDR ids, 48 for evse_id) is unusable — cutting it could
    merge two objects — so it is dropped and the caller treats it as missing."""
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
    return s or None


def enum_value(value: object, table: enums.EnumTable, path: str, ctx: Ctx) -> str | None:
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


def enum_list(
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
        canonical = enum_value(item, table, f"{path}[{i}]", ctx)
        if canonical is None:
            ctx.drop(f"{path}[{i}]", code, f"unknown value {item!r} dropped")
        elif canonical not in out:
            out.append(canonical)
    return out


_INT_TEXT = re.compile(r"[+-]?\d+")
_MAX_SAFE_INT = 2**53


def number(value: object, path: str, ctx: Ctx) -> int | float | None:
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


def integer(value: object, path: str, ctx: Ctx) -> int | None:
    """An int; integral floats and numeric strings accepted, other floats rounded (with an issue)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT else None
    n = number(value, path, ctx)
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


def boolean(value: object, path: str, ctx: Ctx) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        ctx.fix(path, "type_coerced", f"{value!r} read as boolean")
        return value.strip().lower() in _TRUE
    if isinstance(value, int) and value in (0, 1):
        ctx.fix(path, "type_coerced", f"{value!r} read as boolean")
        return bool(value)
    return None


def price(value: object, path: str, ctx: Ctx) -> dict[str, int | float] | None:
    """OCPI Price {excl_vat, incl_vat?}; a bare number (OCPI 2.1.1 style) is read as excl_vat (issue)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        n = number(value, path, ctx)
        if n is None:
            return None
        ctx.fix(path, "price_as_number", "bare number read as Price.excl_vat (2.1.1 prices carry no VAT split)")
        return {"excl_vat": n}
    excl = number(value.get("excl_vat"), join(path, "excl_vat"), ctx)
    if excl is None:
        return None
    out: dict[str, int | float] = {"excl_vat": excl}
    if value.get("incl_vat") is not None:
        incl = number(value["incl_vat"], join(path, "incl_vat"), ctx)
        if incl is None:
            ctx.drop(join(path, "incl_vat"), "invalid_number", f"incl_vat {value['incl_vat']!r} dropped")
        else:
            out["incl_vat"] = incl
    extra = value.keys() - {"excl_vat", "incl_vat"}
    for key in sorted(extra):
        ctx.once("price", key, join(path, key), "unknown_field", f"unknown field '{key}' dropped", fixed=False)
    return out


def display_texts(value: object, path: str, ctx: Ctx) -> list[dict[str, str]] | None:
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
        txt = text(item.get("text"), join(p, "text"), ctx, 512)
        lang = text(item.get("language"), join(p, "language"), ctx)
        if not txt:
            ctx.drop(p, "invalid_display_text", "DisplayText without text dropped")
            continue
        if not lang or len(lang) < 2:
            ctx.drop(p, "invalid_display_text", "DisplayText without a language code dropped")
            continue
        if len(lang) > 2 or not lang.islower():
            fixed = lang[:2].lower()
            ctx.fix(join(p, "language"), "enum_case", f"language {lang!r} normalised to {fixed!r}")
            lang = fixed
        out.append({"language": lang, "text": txt})
    return out


# --- country / currency -------------------------------------------------------------------------------------


@functools.cache
def _country_tables() -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """(alpha-3 -> alpha-2, alpha-2 -> alpha-3, casefolded name -> alpha-3)."""
    import pycountry  # imported lazily: only needed when a partner sends something other than alpha-3

    alpha3 = {c.alpha_3: c.alpha_2 for c in pycountry.countries}
    alpha2 = {c.alpha_2: c.alpha_3 for c in pycountry.countries}
    names: dict[str, str] = {}
    for c in pycountry.countries:
        for attr in ("name", "official_name", "common_name"):
            n = getattr(c, attr, None)
            if n:
                names[n.casefold()] = c.alpha_3
    for n, a3 in enums.COUNTRY_NAME_SYNONYMS.items():
        names[n.casefold()] = a3
    return alpha3, alpha2, names


@functools.lru_cache(maxsize=1024)
def country_alpha3(value: str) -> tuple[str | None, str | None]:
    """(ISO 3166-1 alpha-3 or None, issue code or None) for an alpha-3, alpha-2 or country name."""
    s = value.strip()
    alpha3, alpha2, names = _country_tables()
    up = s.upper()
    if s in alpha3:
        return s, None
    if up in alpha3:
        return up, "enum_case"
    if len(s) == 2 and up in alpha2:
        return alpha2[up], "country_alpha2"
    hit = names.get(s.casefold())
    if hit:
        return hit, "country_name"
    return None, None


def country_alpha2(value: str) -> str | None:
    """ISO alpha-2 for an alpha-2 or alpha-3 code (country_code is alpha-2; "gbr" is a real mistake)."""
    s = value.strip().upper()
    alpha3, alpha2, _names = _country_tables()
    if len(s) == 2 and s in alpha2:
        return s
    return alpha3.get(s)


@functools.cache
def _currencies() -> frozenset[str]:
    import pycountry

    return frozenset(c.alpha_3 for c in pycountry.currencies)


def currency(value: object, path: str, ctx: Ctx) -> str | None:
    """ISO 4217 alpha-3, upper-case; symbols like "€"/"₹" mapped; unknown -> None."""
    if not isinstance(value, str):
        return None
    s = value.strip().upper()
    s = enums.CURRENCY_SYNONYMS.get(s, s)
    if s not in _currencies():
        return None
    if s != value:
        ctx.fix(path, "enum_case", f"currency {value!r} normalised to {s!r}")
    return s


def party(raw: dict[str, Any], out: dict[str, Any], prefix: str, ctx: Ctx, cc: str | None, pid: str | None) -> None:
    """country_code / party_id: upper-cased codes; when missing, taken from the partner's credentials roles.

    Decision: these are code values (ISO 3166 alpha-2 + party code), not object ids, so unlike ids they
    are upper-cased (BitzArt OCPI.Net#19: lower-case country codes get rejected downstream).
    """
    path = join(prefix, "country_code")
    value = raw.get("country_code")
    code = value.strip() if isinstance(value, str) else None
    if code:
        a2 = country_alpha2(code)
        if a2 is None:
            if len(code) != 2 or not code.isalpha():
                raise ctx.reject(path, f"country_code {value!r} is not an ISO 3166 country", "invalid_country_code")
            a2 = code.upper()
        if a2 != value:
            # Tariff lint vectors (ocpi-tariffs "misspelled_field") send alpha-3 "gbr" where alpha-2 is due.
            code = "country_code_alpha3" if len(code) == 3 else "enum_case"
            ctx.fix(path, code, f"country_code {value!r} normalised to {a2!r}")
        out["country_code"] = a2
    elif cc:
        out["country_code"] = cc.strip().upper()
        ctx.fix(path, "missing_country_code", "country_code missing; taken from the partner's credentials")
    else:
        raise ctx.reject(path, "country_code missing and no partner country_code known", "missing_country_code")

    path = join(prefix, "party_id")
    value = raw.get("party_id")
    p = value.strip() if isinstance(value, str) else None
    if p:
        if p.upper() != value:
            ctx.fix(path, "enum_case", f"party_id {value!r} normalised to {p.upper()!r}")
        out["party_id"] = p.upper()
    elif pid:
        out["party_id"] = pid.strip().upper()
        ctx.fix(path, "missing_party_id", "party_id missing; taken from the partner's credentials")
    else:
        raise ctx.reject(path, "party_id missing and no partner party_id known", "missing_party_id")


# --- payload unwrapping -------------------------------------------------------------------------------------


def _decode(payload: object) -> object:
    if isinstance(payload, (bytes, bytearray, memoryview, str)):
        try:
            return orjson.loads(
                payload.lstrip("\ufeff") if isinstance(payload, str) else bytes(payload).lstrip(b"\xef\xbb\xbf")
            )
        except orjson.JSONDecodeError as exc:
            raise Rejected("", f"payload is not JSON: {exc}", code="invalid_json") from None
    return payload


def _envelope_data(payload: dict[str, Any]) -> tuple[bool, object]:
    """(is_envelope, data): an OCPI response envelope has 'data' and/or status_code/timestamp."""
    if "data" in payload or ("status_code" in payload and "timestamp" in payload):
        status = payload.get("status_code")
        if isinstance(status, int) and not 1000 <= status < 2000 and payload.get("data") in (None, [], {}):
            message = payload.get("status_message") or ""
            raise Rejected("status_code", f"partner answered OCPI {status} {message}".strip(), code="ocpi_error")
        return True, payload.get("data")
    return False, payload


def unwrap_list_payload(payload: object) -> list[dict]:
    """Objects of a list response: envelope {data:[...]}, bare list, single object, nested envelopes."""
    data = _decode(payload)
    for _ in range(3):  # a hub may wrap an envelope in another one
        if isinstance(data, dict):
            is_env, inner = _envelope_data(data)
            if not is_env:
                return [data]
            data = inner
        elif isinstance(data, list) and len(data) == 1 and isinstance(data[0], (dict, list)):
            first = data[0]
            if isinstance(first, list) or ("data" in first and ("status_code" in first or "timestamp" in first)):
                data = first
            else:
                return [first]
        else:
            break
    if data is None:
        return []
    if isinstance(data, dict):
        return [data]
    if not isinstance(data, list):
        raise Rejected("data", f"expected a list of objects, got {type(data).__name__}", code="invalid_payload")
    # Non-object entries (nulls, strings) carry nothing usable; the caller counts objects, not entries.
    return [item for item in data if isinstance(item, dict)]


def unwrap_object_payload(payload: object) -> dict:
    """The single object of a response/request: envelope, the object itself, or it wrapped in a list."""
    data = _decode(payload)
    for _ in range(3):
        if isinstance(data, list):
            objects = [item for item in data if isinstance(item, (dict, list))]
            if len(objects) != 1:
                raise Rejected("", f"expected one object, got a list of {len(data)}", code="invalid_payload")
            data = objects[0]
            continue
        if isinstance(data, dict):
            is_env, inner = _envelope_data(data)
            if not is_env:
                return data
            data = inner
            continue
        break
    if isinstance(data, dict):
        return data
    raise Rejected("data", f"expected an object, got {type(data).__name__}", code="invalid_payload")
