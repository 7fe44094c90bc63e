"""Normalisation of OCPI 2.2.1 Sessions (mod_sessions §9.3) and CDRs (mod_cdrs §10.3): the billing inputs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from billing.money import MAX_AMOUNT, stored_amount
from billing.pricing.calculate import MAX_PERIODS
from emsp.datetimes import parse_text
from emsp.time_zones import iana_zone
from ocpi import enums
from ocpi.normalize.countries import country_alpha2, country_alpha3, read_currency, read_party
from ocpi.normalize.datetimes import Unstamped, read_datetime, read_last_updated
from ocpi.normalize.issues import Ctx, Issue, Rejected, collect, json_path
from ocpi.normalize.parts import geo
from ocpi.normalize.tariffs import tariff
from ocpi.normalize.taxes import read_tax_amounts
from ocpi.normalize.values import (
    PLACE_ID_MAX,
    as_list,
    canonical_fields,
    read_boolean,
    read_enum,
    read_identifier,
    read_number,
    read_price,
    read_text,
    within,
)

SESSION_FIELDS = frozenset(
    [
        "country_code",
        "party_id",
        "id",
        "start_date_time",
        "end_date_time",
        "kwh",
        "cdr_token",
        "auth_method",
        "authorization_reference",
        "location_id",
        "evse_uid",
        "connector_id",
        "meter_id",
        "currency",
        "charging_periods",
        "total_cost",
        "status",
        "last_updated",
    ]
)
CDR_FIELDS = frozenset(
    [
        "country_code",
        "party_id",
        "id",
        "start_date_time",
        "end_date_time",
        "session_id",
        "cdr_token",
        "auth_method",
        "authorization_reference",
        "cdr_location",
        "meter_id",
        "currency",
        "tariffs",
        "charging_periods",
        "signed_data",
        "total_cost",
        "total_fixed_cost",
        "total_energy",
        "total_energy_cost",
        "total_time",
        "total_time_cost",
        "total_parking_time",
        "total_parking_cost",
        "total_reservation_cost",
        "remark",
        "invoice_reference_id",
        "credit",
        "credit_reference_id",
        "home_charging_compensation",
        "last_updated",
    ]
)
CDR_TOKEN_FIELDS = frozenset({"country_code", "party_id", "uid", "type", "contract_id"})
# Where ocpi/versions/v230.py leaves the value of 2.3.0's open TokenType that 2.2.1 has no value for (its `type`
# is then OTHER): read here to report it, never stored. A 2.2.1 type outside the enum is still refused.
OPEN_TYPE_FIELD = "_open_token_type"
CDR_LOCATION_FIELDS = frozenset(
    [
        "id",
        "name",
        "address",
        "city",
        "postal_code",
        "state",
        "country",
        "coordinates",
        "evse_uid",
        "evse_id",
        "connector_id",
        "connector_standard",
        "connector_format",
        "connector_power_type",
        # Not in 2.2.1 (ocpi/ocpi#517); a 2.1.1 CDR's Location has it (ocpi/versions/cdrs.py), and our tariff
        # restrictions are in local time.
        "time_zone",
    ]
)
PERIOD_FIELDS = frozenset({"start_date_time", "dimensions", "tariff_id"})
SIGNED_DATA_FIELDS = frozenset({"encoding_method", "encoding_method_version", "public_key", "signed_values", "url"})

# What one charge can plausibly be (and our columns hold): amounts in the currency's units (MAX_AMOUNT, kept with
# the money rules in billing/money.py, where the price checks read it too), energy in kWh, times in hours. A CDR
# spans at most MAX_SPAN: it bounds the work of repricing it (billing/pricing).
MAX_KWH = 10**5
MAX_HOURS = 24 * 31
MAX_SPAN = timedelta(days=31)
# Periods may start before the recorded start: some back ends align them to the hour (a real CDR in the
# pricing vectors, codeberg issue 228, starts its first period 20 minutes early).
PERIOD_TOLERANCE = timedelta(hours=1)
# A price's incl_vat may fall this much below its excl_vat: one rounded to cents, the other to 4 decimals.
VAT_ROUNDING = 0.01
# mod_sessions §"Session": RESERVATION is the enum value; the module's own prose says "status = RESERVED"
# (../shared/docs/ocpi-notes.md §5), and a CPO that wrote what it read had its reservation sessions refused.
_SESSION_STATUS = enums.EnumTable(enums.SESSION_STATUSES, {**enums.SESSION_STATUS_SYNONYMS, "RESERVED": "RESERVATION"})
_CDR_PRICES = (
    "total_fixed_cost",
    "total_energy_cost",
    "total_time_cost",
    "total_parking_cost",
    "total_reservation_cost",
)


def _required_id(raw: dict[str, Any], key: str, prefix: str, ctx: Ctx, out: dict[str, Any], max_len: int = 36) -> None:
    value = read_identifier(raw.get(key), json_path(prefix, key), ctx, max_len)
    if not value:
        raise Rejected(json_path(prefix, key), f"{key} missing", code=f"missing_{key}")
    out[key] = value


def _cdr_token(raw: object, path: str, ctx: Ctx) -> dict[str, Any]:
    """CdrToken: uid/type identify our customer, so they are required; contract_id falls back to uid."""
    if not isinstance(raw, dict):
        raise Rejected(path, "cdr_token missing", code="missing_cdr_token")
    sent_type = raw.get(OPEN_TYPE_FIELD)
    if sent_type is not None:
        raw = {k: v for k, v in raw.items() if k != OPEN_TYPE_FIELD}
        # The value is gone (2.2.1 has no field for it), the token kept as OTHER: the partner is told.
        message = f"OCPI 2.3.0 TokenType {str(sent_type)[:40]!r} has no 2.2.1 value: read as OTHER"
        ctx.drop(json_path(path, "type"), "unknown_enum", message)
    raw = canonical_fields(raw, CDR_TOKEN_FIELDS, "cdr_token", path, ctx)
    out: dict[str, Any] = {}
    _token_party(raw, path, ctx, out)
    if len(out) < 2:
        # Required in 2.2.1, yet the tag-2.2.1 examples omit them (added in [d2]): kept without, reported.
        ctx.fix(path, "missing_token_party", "cdr_token without country_code/party_id (our own party)")
    _required_id(raw, "uid", path, ctx, out)
    ttype = read_enum(raw.get("type"), enums.TOKEN_TYPE, json_path(path, "type"), ctx)
    if ttype is None:
        raise Rejected(json_path(path, "type"), f"token type {raw.get('type')!r} unknown", code="invalid_token_type")
    out["type"] = ttype
    contract = read_identifier(raw.get("contract_id"), json_path(path, "contract_id"), ctx)
    if not contract:
        contract = out["uid"]
        ctx.fix(json_path(path, "contract_id"), "missing_contract_id", "contract_id missing; uid used")
    out["contract_id"] = contract
    return out


def _token_party(raw: dict[str, Any], path: str, ctx: Ctx, out: dict[str, Any]) -> None:
    """CdrToken country_code/party_id: the eMSP that owns the token, which decides whether we bill one of our
    drivers for it (emsp/services/sessions.py token_is_ours). Read as the object's own party is (read_party):
    case and an alpha-3 country are normalised; a value that is no party ("1E+308", "ÉÉÉ") is Rejected: kept,
    it would be stored as it came, and dropped, the token would count as ours."""
    country = raw.get("country_code")
    code = country.strip() if isinstance(country, str) else None
    if code:
        a2 = country_alpha2(code) or (code.upper() if len(code) == 2 and code.isascii() and code.isalpha() else None)
        if a2 is None:
            where = json_path(path, "country_code")
            raise Rejected(
                where, f"country_code {country[:20]!r} is not an ISO 3166 country", code="invalid_token_party"
            )
        if a2 != country:
            ctx.fix(json_path(path, "country_code"), "enum_case", f"country_code {country!r} normalised to {a2!r}")
        out["country_code"] = a2
    elif country is not None and not isinstance(country, str):
        raise Rejected(
            json_path(path, "country_code"),
            f"country_code {country!r:.20} is not a country",
            code="invalid_token_party",
        )
    party = raw.get("party_id")
    pid = party.strip() if isinstance(party, str) else None
    if pid:
        if not (len(pid) <= 3 and pid.isascii() and pid.isalnum()):
            where = json_path(path, "party_id")
            raise Rejected(where, f"party_id {party[:20]!r} is not a CiString(3) party id", code="invalid_token_party")
        if pid.upper() != party:
            ctx.fix(json_path(path, "party_id"), "enum_case", f"party_id {party!r} normalised to {pid.upper()!r}")
        out["party_id"] = pid.upper()
    elif party is not None and not isinstance(party, str):
        raise Rejected(
            json_path(path, "party_id"), f"party_id {party!r:.20} is not a party id", code="invalid_token_party"
        )


def _auth_method(raw: dict[str, Any], out: dict[str, Any], ctx: Ctx) -> None:
    method = read_enum(raw.get("auth_method"), enums.AUTH_METHOD, "auth_method", ctx)
    if method is None:
        raise Rejected("auth_method", f"auth_method {raw.get('auth_method')!r} unknown", code="invalid_auth_method")
    out["auth_method"] = method


def _charging_periods(raw: object, path: str, ctx: Ctx) -> list[dict[str, Any]]:
    """ChargingPeriods: unreadable periods/dimensions are dropped (the totals stay authoritative)."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        ctx.drop(path, "invalid_type", "charging_periods is not a list")
        return []
    out = []
    for i, period in enumerate(raw):
        p = f"{path}[{i}]"
        if not isinstance(period, dict):
            ctx.drop(p, "invalid_charging_period", "charging period is not an object")
            continue
        period = canonical_fields(period, PERIOD_FIELDS, "charging_period", p, ctx)
        try:
            start = read_datetime(period.get("start_date_time"), json_path(p, "start_date_time"), ctx, event=True)[1]
        except Rejected as exc:
            ctx.drop(p, "invalid_charging_period", f"charging period dropped: {exc.reason}")
            continue
        dims = []
        for j, dim in enumerate(as_list(period.get("dimensions"))):
            dp = f"{p}.dimensions[{j}]"
            dtype = (
                read_enum(dim.get("type"), enums.CDR_DIMENSION_TYPE, json_path(dp, "type"), ctx)
                if isinstance(dim, dict)
                else None
            )
            volume = read_number(dim.get("volume"), json_path(dp, "volume"), ctx) if isinstance(dim, dict) else None
            if volume is not None and not within(volume, 0, MAX_AMOUNT):
                ctx.drop(dp, "implausible_value", f"dimension volume {volume!r} is negative or absurd")
                continue
            if dtype is None or volume is None:
                ctx.drop(dp, "invalid_dimension", f"dimension {dim!r:.60} dropped")
                continue
            dims.append({"type": dtype, "volume": volume})
        if not dims:
            ctx.drop(p, "invalid_charging_period", "charging period without usable dimensions dropped")
            continue
        entry: dict[str, Any] = {"start_date_time": start, "dimensions": dims}
        tid = read_identifier(period.get("tariff_id"), json_path(p, "tariff_id"), ctx)
        if tid:
            entry["tariff_id"] = tid
        out.append(entry)
    return out


def _quantity(raw: dict[str, Any], key: str, prefix: str, ctx: Ctx, high: float) -> int | float | None:
    """A non-negative quantity (energy, hours) up to `high`; anything else is Rejected."""
    if raw.get(key) is None:
        return None
    n = read_number(raw[key], json_path(prefix, key), ctx)
    if n is None:
        raise Rejected(json_path(prefix, key), f"{key} {raw[key]!r} is not a number", code="invalid_number")
    if not within(n, 0, high):
        raise Rejected(json_path(prefix, key), f"{key} {n!r} is negative or beyond {high}", code="implausible_value")
    return n


def _amount(
    raw: dict[str, Any], key: str, ctx: Ctx, *, credit: bool = False, bill: bool = False
) -> dict[str, Any] | None:
    """A Price that can be true: not negative (a credit CDR's are not positive), not absurd, its amount with VAT
    not below the one without (`bill`: a CDR's total_cost, kept with a finding; any other is dropped)."""
    if raw.get(key) is None:
        return None
    given = raw[key]
    taxes = given.get("taxes") if isinstance(given, dict) else None
    if taxes is not None:
        given = {k: v for k, v in given.items() if k != "taxes"}  # 2.3.0 TaxAmount[], kept (normalize/taxes.py)
    price: dict[str, Any] | None = read_price(given, key, ctx)
    if price is None:
        raise Rejected(key, f"{key} {raw[key]!r} is not a Price", code="invalid_price")
    # mod_cdrs: a credit CDR carries negative amounts (partners negate only some of them); no other may.
    low = -MAX_AMOUNT if credit else 0
    for part, value in price.items():
        # The bound holds for the amount as given and as stored (rounded to the columns' 4 decimals; rounded
        # only once within it: 1e24 has more digits than a Decimal's context rounds).
        if not within(value, low, MAX_AMOUNT) or not within(stored := stored_amount(value), low, MAX_AMOUNT):
            raise Rejected(
                json_path(key, part), f"{key}.{part} {value!r} is negative or absurd", code="implausible_value"
            )
        if bill and stored != Decimal(str(value)):
            # The bill's columns keep 4 decimals (what the driver pays is rounded to the currency anyway): stored
            # rounded, said so, and kept as given in the CDR's data (lenient in). The column had rounded it
            # silently (0.00001 stored 0.0000).
            ctx.fix(
                json_path(key, part), "rounded", f"{key}.{part} {value!r} has more than 4 decimals: stored as {stored}"
            )
    if not credit and price.get("incl_vat") is not None and price["incl_vat"] < price["excl_vat"] - VAT_ROUNDING:
        # No tax makes a price smaller: one of the two is wrong, and the driver pays incl_vat. A CDR's total is
        # its bill and the CPO's claim, which refusing would lose (ocpi-notes "CDR intake": flag differences
        # instead of rejecting). So it is kept with a finding and the audit holds it for review
        # (billing/services/audit.py HELD "incl_vat_below_excl_vat": no driver is billed until staff look).
        # A sub-total or a session's running total only explains, and goes.
        message = f"{key}.incl_vat {price['incl_vat']!r} is below excl_vat {price['excl_vat']!r}"
        if not bill:
            ctx.drop(key, "implausible_value", f"{message}; {key} dropped")
            return None
        ctx.fix(json_path(key, "incl_vat"), "incl_vat_below_excl_vat", f"{message}; kept, held for review")
    if taxes is not None:
        price["taxes"] = read_tax_amounts(taxes, json_path(key, "taxes"), ctx)
    return price


def _credit_total(cost: dict[str, Any]) -> None:
    """mod_cdrs "Credit CDRs": "Only the values in the total_cost field SHALL contain the negative amounts of the
    original CDR". A credit CDR whose total_cost is positive (its amounts not negated) is refused: stored, it was
    audited a credit, refunded the driver a positive "refund" and was added to the CPO's statement as billed (its
    sub-totals, which the spec leaves as the original's, may be of either sign)."""
    for part in ("excl_vat", "incl_vat"):
        value = cost.get(part)
        if value is not None and value > 0:
            raise Rejected(
                json_path("total_cost", part),
                f"a credit CDR's total_cost holds the negative amounts of the CDR it credits (mod_cdrs); "
                f"total_cost.{part} {value!r} is positive",
                code="implausible_value",
            )


def _timed(out: dict[str, Any], ctx: Ctx, *, cdr: bool) -> None:
    """Start before end; a CDR within MAX_SPAN; charging periods inside the object's own start and end (a
    CDR's are its bill: one outside is Rejected; a session's are progress: dropped, reported)."""
    start = parse_text(out["start_date_time"])[0] if out.get("start_date_time") else None
    end = parse_text(out["end_date_time"])[0] if out.get("end_date_time") else None
    if start is not None and end is not None:
        if end < start:
            raise Rejected("end_date_time", "end_date_time is before start_date_time", code="end_before_start")
        if cdr and end - start > MAX_SPAN:
            raise Rejected("end_date_time", f"a charge longer than {MAX_SPAN.days} days", code="implausible_value")
    if start is None or not out.get("charging_periods"):
        return
    latest = (end or datetime.now(UTC)) + PERIOD_TOLERANCE
    kept = []
    for i, period in enumerate(out["charging_periods"]):
        moment = parse_text(period["start_date_time"])[0]
        if start - PERIOD_TOLERANCE <= moment <= latest:
            kept.append(period)
            continue
        path = f"charging_periods[{i}].start_date_time"
        if cdr:
            raise Rejected(path, "charging period outside the CDR's start and end", code="period_outside_session")
        ctx.drop(path, "period_outside_session", "charging period outside the session's start and end dropped")
    out["charging_periods"] = kept


def _latest_moment(out: dict[str, Any]) -> datetime | None:
    """A Session without last_updated: the latest moment it tells of (its start, end, or a period's start; not
    past now), a stamp the CPO's own is never before. Our receive time was one, and a CPO whose clock is a few
    seconds behind ours then saw every PATCH of the session ignored as older."""
    moments = [out.get("start_date_time"), out.get("end_date_time")]
    moments += [p["start_date_time"] for p in out.get("charging_periods") or []]
    known = [parse_text(m)[0] for m in moments if m]
    return min(max(known), datetime.now(UTC)) if known else None


def _session(
    raw: dict[str, Any], ctx: Ctx, cc: str | None, pid: str | None, *, partial: bool, stamped: bool = True
) -> dict[str, Any]:
    raw = canonical_fields(raw, SESSION_FIELDS, "session", "", ctx)
    get = raw.get
    out: dict[str, Any] = {}

    def present(key: str) -> bool:
        return not partial or get(key) is not None

    if not partial:
        read_party(raw, out, "", ctx, cc, pid)
        _required_id(raw, "id", "", ctx, out)
    else:
        for key in ("country_code", "party_id", "id"):
            s = read_identifier(get(key), key, ctx)
            if s and key == "country_code":
                # As a PUT reads it (read_party), and the location PATCH: an alpha-3 "IND" is "IN", as the URL says.
                out[key] = country_alpha2(s) or s.upper()
            elif s:
                out[key] = s.upper() if key != "id" else s
    if present("start_date_time"):
        out["start_date_time"] = read_datetime(get("start_date_time"), "start_date_time", ctx, event=True)[1]
    if get("end_date_time") is not None:
        out["end_date_time"] = read_datetime(get("end_date_time"), "end_date_time", ctx, event=True)[1]
    if present("kwh"):
        kwh = _quantity(raw, "kwh", "", ctx, MAX_KWH)
        if kwh is None:
            # A live progress figure, not the bill (the CDR is): 0 until the CPO tells us more.
            kwh = 0
            ctx.fix("kwh", "missing_kwh", "kwh missing; set to 0")
        out["kwh"] = kwh
    if present("cdr_token"):
        out["cdr_token"] = _cdr_token(get("cdr_token"), "cdr_token", ctx)
    if present("auth_method"):
        _auth_method(raw, out, ctx)
    ref = read_text(get("authorization_reference"), "authorization_reference", ctx, 36)
    if ref:
        out["authorization_reference"] = ref
    for key in ("location_id", "evse_uid", "connector_id"):
        if present(key):
            _required_id(raw, key, "", ctx, out, 36 if key == "connector_id" else PLACE_ID_MAX)
    meter = read_text(get("meter_id"), "meter_id", ctx, 255)
    if meter:
        out["meter_id"] = meter
    if present("currency"):
        cur = read_currency(get("currency"), "currency", ctx)
        if cur is None:
            raise Rejected("currency", f"currency {get('currency')!r} is not ISO 4217", code="invalid_currency")
        out["currency"] = cur
    periods = get("charging_periods")
    if isinstance(periods, list) and len(periods) > MAX_PERIODS:
        # Refused before any is read (the work of one body stays bounded): a session holds at most what the
        # pricing engine estimates (billing/pricing MAX_PERIODS; emsp/services/sessions.py keeps the same bound
        # on the periods its PATCHes add up to).
        raise Rejected(
            "charging_periods", f"{len(periods)} charging periods; at most {MAX_PERIODS}", code="too_many_periods"
        )
    if periods is not None:
        out["charging_periods"] = _charging_periods(periods, "charging_periods", ctx)
    cost = _amount(raw, "total_cost", ctx)
    if cost is not None:
        out["total_cost"] = cost
    _timed(out, ctx, cdr=False)
    if present("status"):
        status = read_enum(get("status"), _SESSION_STATUS, "status", ctx)
        if status is None:
            raise Rejected("status", f"status {get('status')!r} unknown", code="invalid_status")
        out["status"] = status
    lu = read_last_updated(
        raw, "", ctx, None if partial else _latest_moment(out), partial=partial, fallback_source="its latest moment"
    )
    if lu is not None:
        out["last_updated"] = lu[1]
    elif stamped:
        raise Rejected("last_updated", "PATCH without last_updated", code="missing_last_updated")
    return out


def _cdr_location(raw: object, path: str, ctx: Ctx) -> dict[str, Any]:
    """CdrLocation (no time_zone in 2.2.1: ocpi/ocpi#517). Coordinates are formatted, never swapped:
    the spec's own cdr_example has latitude/longitude swapped and both still lie in range."""
    if not isinstance(raw, dict):
        raise Rejected(path, "cdr_location missing", code="missing_cdr_location")
    raw = canonical_fields(raw, CDR_LOCATION_FIELDS, "cdr_location", path, ctx)
    get = raw.get
    out: dict[str, Any] = {}
    _required_id(raw, "id", path, ctx, out, PLACE_ID_MAX)
    for key, limit in (("name", 255), ("address", 255), ("city", 45), ("postal_code", 10), ("state", 45)):
        s = read_text(get(key), json_path(path, key), ctx, limit)
        if s is not None:
            out[key] = s
        elif key in ("address", "city"):
            out[key] = ""
            ctx.fix(json_path(path, key), "missing_required", f"{key} missing; set to an empty string")
    country = get("country")
    a3, code = country_alpha3(country) if isinstance(country, str) else (None, None)
    if a3 is None:
        # Not fatal for a CDR (billing does not read it), so kept out rather than rejecting the bill.
        ctx.drop(json_path(path, "country"), "invalid_country", f"country {country!r} dropped")
    else:
        if code:
            ctx.fix(json_path(path, "country"), code, f"country {country!r} normalised to {a3!r}")
        out["country"] = a3
    try:
        out["coordinates"] = geo(get("coordinates"), json_path(path, "coordinates"), ctx)[0]
    except Rejected as exc:
        ctx.drop(exc.path, exc.code, f"coordinates dropped: {exc.reason}")
    if raw.get("evse_uid") in (None, ""):
        # The CDR is still the bill: extrawest-ocpi's CdrLocation has no evse_uid at all (docs/interop.md).
        ctx.drop(json_path(path, "evse_uid"), "missing_evse_uid", "cdr_location.evse_uid missing")
    else:
        _required_id(raw, "evse_uid", path, ctx, out, PLACE_ID_MAX)
    evse_id = read_identifier(get("evse_id"), json_path(path, "evse_id"), ctx, max_len=48)
    if evse_id:
        out["evse_id"] = evse_id
    else:
        ctx.drop(json_path(path, "evse_id"), "missing_evse_id", "cdr_location.evse_id missing")
    _required_id(raw, "connector_id", path, ctx, out)
    zone = get("time_zone")
    if zone is not None:
        name = iana_zone(zone) if isinstance(zone, str) else None
        if name is None:
            ctx.drop(json_path(path, "time_zone"), "invalid_time_zone", f"time_zone {zone!r} dropped")
        else:
            out["time_zone"] = name
    for key, table in (
        ("connector_standard", enums.CONNECTOR_TYPE),
        ("connector_format", enums.CONNECTOR_FORMAT),
        ("connector_power_type", enums.POWER_TYPE),
    ):
        value = read_enum(get(key), table, json_path(path, key), ctx)
        if value is None:
            ctx.drop(json_path(path, key), "unknown_enum", f"{key} {get(key)!r} dropped")
        else:
            out[key] = value
    return out


def _signed_data(raw: object, path: str, ctx: Ctx) -> dict[str, Any] | None:
    """SignedData (Eichrecht): passed through field by field, unknown fields dropped; never verified."""
    if not isinstance(raw, dict):
        ctx.drop(path, "invalid_type", "signed_data is not an object")
        return None
    raw = canonical_fields(raw, SIGNED_DATA_FIELDS, "signed_data", path, ctx)
    return {k: v for k, v in raw.items() if v is not None}


def _cdr(raw: dict[str, Any], ctx: Ctx, cc: str | None, pid: str | None) -> dict[str, Any]:
    raw = canonical_fields(raw, CDR_FIELDS, "cdr", "", ctx)
    get = raw.get
    out: dict[str, Any] = {}
    read_party(raw, out, "", ctx, cc, pid)
    _required_id(raw, "id", "", ctx, out, max_len=39)  # mod_cdrs: CiString(39), room for a credit suffix
    for key in ("start_date_time", "end_date_time"):
        if get(key) is None:
            # Required (mod_cdrs): said so, for null and its text ("null", values.canonical_fields) alike.
            raise Rejected(key, f"{key} missing", code="invalid_datetime")
        out[key] = read_datetime(get(key), key, ctx, event=True)[1]
    sid = read_identifier(get("session_id"), "session_id", ctx)
    if sid:
        out["session_id"] = sid
    out["cdr_token"] = _cdr_token(get("cdr_token"), "cdr_token", ctx)
    _auth_method(raw, out, ctx)
    ref = read_text(get("authorization_reference"), "authorization_reference", ctx, 36)
    if ref:
        out["authorization_reference"] = ref
    out["cdr_location"] = _cdr_location(get("cdr_location"), "cdr_location", ctx)
    meter = read_text(get("meter_id"), "meter_id", ctx, 255)
    if meter:
        out["meter_id"] = meter
    cur = read_currency(get("currency"), "currency", ctx)
    if cur is None:
        raise Rejected("currency", f"currency {get('currency')!r} is not ISO 4217", code="invalid_currency")
    out["currency"] = cur
    if get("tariffs") is not None:
        tariffs = []
        for i, t in enumerate(as_list(get("tariffs"))):
            mark = ctx.mark()
            try:
                tariffs.append(tariff(t, f"tariffs[{i}]", ctx, out["country_code"], out["party_id"]))
            except Rejected as exc:
                # The CDR's totals are what the CPO bills; a broken embedded tariff only costs us re-pricing.
                ctx.rollback(mark)
                ctx.drop(f"tariffs[{i}]", "dropped_tariff", f"tariff dropped: {exc.path}: {exc.reason}")
        out["tariffs"] = tariffs
    periods = _charging_periods(get("charging_periods"), "charging_periods", ctx)
    if not periods:
        # mod_cdrs: 1..*. Kept: the totals below are the bill; the periods only explain it.
        ctx.fix("charging_periods", "missing_charging_periods", "CDR without usable charging periods")
    out["charging_periods"] = periods
    if get("signed_data") is not None:
        signed = _signed_data(get("signed_data"), "signed_data", ctx)
        if signed:
            out["signed_data"] = signed
    if get("credit") is not None:
        credit = read_boolean(get("credit"), "credit", ctx)
        if credit is None:
            raise Rejected("credit", f"credit {get('credit')!r} is not a boolean", code="invalid_credit")
        out["credit"] = credit
    if len(out["id"]) > 36 and not out.get("credit"):
        # mod_cdrs: "Normal (non-credit) CDRs SHALL only have an ID with a maximum length of 36". Kept, not
        # refused: the CDR is the bill, a CPO retries a refused one, and 39 characters fit our key whole (no two
        # CDRs merged, unlike the ids read_identifier drops for being longer than we can store).
        ctx.drop("id", "id_too_long", f"non-credit CDR id of {len(out['id'])} characters kept (OCPI maximum 36)")
    cost = _amount(raw, "total_cost", ctx, credit=bool(out.get("credit")), bill=True)
    if cost is None:
        raise Rejected("total_cost", "total_cost missing", code="invalid_price")
    if out.get("credit"):
        _credit_total(cost)
    out["total_cost"] = cost
    for key, high in (("total_energy", MAX_KWH), ("total_time", MAX_HOURS)):
        n = _quantity(raw, key, "", ctx, high)
        if n is None:
            raise Rejected(key, f"{key} missing", code="invalid_number")
        out[key] = n
    for key in _CDR_PRICES:
        p = _amount(raw, key, ctx, credit=bool(out.get("credit")))
        if p is not None:
            out[key] = p
    parking = _quantity(raw, "total_parking_time", "", ctx, MAX_HOURS)
    if parking is not None:
        out["total_parking_time"] = parking
    remark = read_text(get("remark"), "remark", ctx, 255, multiline=True)
    if remark:
        out["remark"] = remark
    inv = read_identifier(get("invoice_reference_id"), "invoice_reference_id", ctx, max_len=39)
    if inv:
        out["invoice_reference_id"] = inv
    ref_id = read_identifier(get("credit_reference_id"), "credit_reference_id", ctx, max_len=39)
    if ref_id:
        out["credit_reference_id"] = ref_id
    elif out.get("credit"):
        # mod_cdrs: "required to be set for a Credit CDR"; kept so the money is not lost, flagged for review.
        ctx.fix("credit_reference_id", "missing_credit_reference", "credit CDR without credit_reference_id")
    if get("home_charging_compensation") is not None:
        hcc = read_boolean(get("home_charging_compensation"), "home_charging_compensation", ctx)
        if hcc is not None:
            out["home_charging_compensation"] = hcc
    _timed(out, ctx, cdr=True)
    lu = read_last_updated(raw, "", ctx, None, partial=False)
    if lu is not None:
        out["last_updated"] = lu[1]
    return out


def _run(fn: Any, raw: object, kind: str, *args: Any, **kwargs: Any) -> tuple[dict, list[Issue]]:
    if not isinstance(raw, dict):
        raise Rejected("", f"{kind} is not an object", code=f"invalid_{kind}")
    return collect(lambda ctx: fn(raw, ctx, *args, **kwargs))


def normalize_session(
    raw: dict, *, country_code: str | None = None, party_id: str | None = None
) -> tuple[dict, list[Issue]]:
    """A full Session (PUT body or GET page entry); raises Rejected when it cannot be attributed or billed."""
    return _run(_session, raw, "session", country_code, party_id, partial=False)


def normalize_session_patch(raw: dict) -> tuple[dict, list[Issue]]:
    """A Session PATCH: only present fields; ``charging_periods`` here are to be appended by the receiver
    (mod_sessions PATCH). ``last_updated`` is required (Rejected, path "last_updated" -> OCPI 2001); only an
    ``Unstamped`` body (OCPI 2.1.1) may come without it, and is returned without it."""
    return _run(_session, raw, "session", None, None, partial=True, stamped=not isinstance(raw, Unstamped))


def normalize_cdr(
    raw: dict, *, country_code: str | None = None, party_id: str | None = None
) -> tuple[dict, list[Issue]]:
    """A CDR (POST body or GET page entry). Rejected without total_cost, total_energy, total_time, token,
    auth_method, cdr_location or currency; credit CDR fields (credit, credit_reference_id) are kept."""
    return _run(_cdr, raw, "cdr", country_code, party_id)
