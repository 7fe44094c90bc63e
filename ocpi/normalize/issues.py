"""What the normaliser found in one object (``Issue``, ``Rejected``) and the context that collects it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


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
    "object_for_list": "F a single object where OCPI has a list, read as a list of one",
    "rounded": "F number rounded: a non-integral one where an int is due, an amount past the 4 decimals we keep",
    "truncated": "F string longer than its OCPI maximum cut",
    "id_whitespace": "F whitespace around an identifier stripped (case kept)",
    "id_too_long": (
        "D identifier longer than its OCPI maximum dropped (treated as missing); "
        "a non-credit CDR id of 37-39 characters is kept and reported"
    ),
    "invalid_identifier": "D identifier with characters outside printable ASCII dropped (treated as missing)",
    "control_characters": (
        "F control characters (NUL, escape, ...), bidi overrides/isolates and zero-width spaces removed from text; "
        "tabs and line breaks in a one-line field made spaces"
    ),
    "missing_required": "F required text missing; empty string used",
    "null_string": (
        "D text 'null' or 'undefined' (any case) read as JSON null: an optional field absent, a required one missing"
    ),
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
    "coordinates_at_sea": "D location coordinates in open sea (0,-1): the location refused, a PATCH's dropped",
    "missing_time_zone": "F time_zone derived from the coordinates",
    "invalid_time_zone": "F unknown time_zone replaced from the coordinates",
    "time_zone_elsewhere": "F time_zone whose clock is not the one at the coordinates replaced by the zone there",
    "time_zone_format": "F misspelled IANA zone repaired ('Asia/Kuala Lumpur')",
    # time
    "missing_last_updated": "F last_updated taken from parent/children or the receive time",
    "datetime_offset": "F DateTime with a UTC offset converted to 'Z'",
    "datetime_format": "F date-only or epoch DateTime read as UTC",
    "time_format": "F hour given as 'H:MM'/'HH:MM:SS' rendered as HH:MM",
    "date_format": "F restriction date given with a time reduced to YYYY-MM-DD",
    "invalid_regular_hours": "D unreadable regular_hours entry dropped",
    "weekday_0_sunday": "F regular_hours weekday 0 read as 7 (Sunday) in a list without 7 (ITCharge counts 0-6)",
    "invalid_period": "D unreadable exceptional opening/closing dropped",
    "invalid_status_schedule": "D unreadable status_schedule entry dropped",
    # connectors and EVSEs
    "power_in_kw": "F max_electric_power < 1000 read as kW",
    "power_as_voltage": "F a standard AC kW figure (3.7-43) sent as max_voltage without amperage read as power",
    "derived_power": "F max_electric_power derived from voltage x amperage x phases",
    "derived_voltage": "F max_voltage derived from power / amperage",
    "derived_amperage": "F max_amperage derived from power / voltage",
    "unknown_voltage": "F max_voltage missing or <= 0; 0 (= unknown) used",
    "unknown_amperage": "F max_amperage missing or <= 0; 0 (= unknown) used",
    "invalid_power": "D max_electric_power <= 0 or unreadable dropped",
    "inferred_power_type": "F power_type missing/unknown; inferred from the standard",
    "inferred_format": "F format missing/unknown; inferred from the standard",
    "unknown_connector_standard": "D connector of unknown standard dropped",
    "missing_connector_id": "D connector without id dropped",
    "invalid_connector": "D connector that is not an object dropped",
    "duplicate_connector_id": "D earlier connector with a repeated id dropped",
    "evse_without_connectors": "F EVSE kept without connectors (not bookable)",
    "invalid_evse_id": "D evse_id longer than 48 characters dropped",
    "dropped_evse": "D EVSE without uid (or not an object) dropped",
    "missing_evse_uid": "D CDR location without evse_uid (the CDR, the bill, is kept)",
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
    "empty_restriction_window": "D tariff element whose restrictions never match (min >= max, end <= start)",
    "dropped_tariff": "D unusable tariff embedded in a CDR dropped",
    "missing_kwh": "F session kwh missing; 0 used",
    "missing_token_party": "F cdr_token without country_code/party_id kept",
    "missing_contract_id": "F cdr_token contract_id missing; uid used",
    "invalid_charging_period": "D unreadable charging period dropped",
    "invalid_dimension": "D unreadable/unknown charging period dimension dropped",
    "missing_charging_periods": "F CDR kept without charging periods",
    "missing_evse_id": "D CDR location without evse_id",
    "missing_credit_reference": "F credit CDR kept without credit_reference_id",
    "incl_vat_below_excl_vat": "F CDR total_cost.incl_vat below excl_vat kept; the audit holds the bill for review",
    "cdr_changed": "D a CDR id posted again with other content: refused, the first kept (send a credit CDR)",
    # plausibility (what no real charge can be: refused, or the value replaced)
    "implausible_datetime": "D DateTime before 2010, after 2100, or (events) in the future",
    "implausible_last_updated": (
        "F placeholder last_updated (before 2010), or one in the future: a child's takes its parent's, a location's "
        "(EVSE's, connector's) the receive time"
    ),
    "implausible_value": (
        "D number outside what the field can hold (voltage beyond any charger or below 100 V, negative energy)"
    ),
    "end_before_start": "D end_date_time before start_date_time",
    "period_outside_session": "D charging period outside the session's own start and end",
    # paging (one finding per pull, object id "pull N")
    "short_list": "D a pull received fewer objects than the partner's X-Total-Count announced",
    "link_elsewhere": "F Link rel=next pointing away from the endpoint ignored; paged by offset/limit",
    "no_link_full_page": (
        "F a page as full as its limit without Link or X-Total-Count; paged on by offset/limit (nothing withdrawn "
        "where that stopped early)"
    ),
    "unlisted_checked": "D after paging on by offset, locations not listed asked for one by one before withdrawal",
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


def json_path(prefix: str, name: str) -> str:
    """The path of field ``name`` inside ``prefix`` as issues name it: "evses[0]" + "uid" -> "evses[0].uid"."""
    if not prefix:
        return name
    if name.startswith("["):
        return prefix + name
    return f"{prefix}.{name}"


class Ctx:
    """Collects the issues of one top-level normalisation call."""

    __slots__ = ("_once_log", "issues", "reported")

    def __init__(self) -> None:
        self.issues: list[Issue] = []
        # (kind, field, code) already reported by once(); canonical_fields reads it to skip building messages.
        self.reported: set[tuple[str, str, str]] = set()
        self._once_log: list[tuple[int, tuple[str, str, str]]] = []

    def mark(self) -> int:
        return len(self.issues)

    def rollback(self, mark: int) -> None:
        """Forget the issues found inside a sub-object that is then dropped (its drop issue replaces them)."""
        del self.issues[mark:]
        while self._once_log and self._once_log[-1][0] >= mark:
            self.reported.discard(self._once_log.pop()[1])

    def fix(self, path: str, code: str, message: str) -> None:
        self.issues.append(Issue(path, code, message, True))

    def drop(self, path: str, code: str, message: str) -> None:
        self.issues.append(Issue(path, code, message, False))

    def once(self, kind: str, field: str, path: str, code: str, message: str, *, fixed: bool) -> None:
        """Report a field-name problem once per object kind ("connector") and name, not per occurrence."""
        key = (kind, field, code)
        if key not in self.reported:
            self.reported.add(key)
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
