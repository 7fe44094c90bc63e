"""Tariff, Session and CDR normalisation: lenient on spelling, strict on anything that changes money."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from ocpi.normalize import (
    Issue,
    Rejected,
    normalize_cdr,
    normalize_session,
    normalize_session_patch,
    normalize_tariff,
)


def tariff(*elements: dict[str, Any], **fields: Any) -> dict[str, Any]:
    raw = {
        "country_code": "DE",
        "party_id": "ALL",
        "id": "T1",
        "currency": "EUR",
        "elements": list(elements)
        or [{"price_components": [{"type": "ENERGY", "price": 0.25, "vat": 19.0, "step_size": 1}]}],
        "last_updated": "2025-01-01T00:00:00Z",
        **fields,
    }
    return {k: v for k, v in raw.items() if v is not ...}


def component(**fields: Any) -> dict[str, Any]:
    return {
        k: v for k, v in {"type": "TIME", "price": 2.0, "vat": 10.0, "step_size": 60, **fields}.items() if v is not ...
    }


def cdr_token(**fields: Any) -> dict[str, Any]:
    return {
        "country_code": "IN",
        "party_id": "EMS",
        "uid": "tok-1",
        "type": "APP_USER",
        "contract_id": "IN-EMS-1",
        **fields,
    }


def session(**fields: Any) -> dict[str, Any]:
    raw = {
        "country_code": "BE",
        "party_id": "BEC",
        "id": "S1",
        "start_date_time": "2025-06-29T22:39:09Z",
        "kwh": 1.5,
        "cdr_token": cdr_token(),
        "auth_method": "COMMAND",
        "location_id": "LOC1",
        "evse_uid": "3256",
        "connector_id": "1",
        "currency": "EUR",
        "status": "ACTIVE",
        "last_updated": "2025-06-29T22:40:00Z",
        **fields,
    }
    return {k: v for k, v in raw.items() if v is not ...}


def cdr(**fields: Any) -> dict[str, Any]:
    raw = {
        "country_code": "BE",
        "party_id": "BEC",
        "id": "C1",
        "start_date_time": "2025-06-29T21:39:09Z",
        "end_date_time": "2025-06-29T23:37:32Z",
        "cdr_token": cdr_token(),
        "auth_method": "WHITELIST",
        "cdr_location": {
            "id": "LOC1",
            "address": "F.Rooseveltlaan 3A",
            "city": "Gent",
            "country": "BEL",
            "coordinates": {"latitude": "51.047599", "longitude": "3.729944"},
            "evse_uid": "3256",
            "evse_id": "BE*BEC*E041503003",
            "connector_id": "1",
            "connector_standard": "IEC_62196_T2",
            "connector_format": "SOCKET",
            "connector_power_type": "AC_1_PHASE",
        },
        "currency": "EUR",
        "charging_periods": [
            {"start_date_time": "2025-06-29T21:39:09Z", "dimensions": [{"type": "TIME", "volume": 1.973}]}
        ],
        "total_cost": {"excl_vat": 4.0, "incl_vat": 4.4},
        "total_energy": 15.342,
        "total_time": 1.973,
        "last_updated": "2025-06-29T22:01:13Z",
        **fields,
    }
    return {k: v for k, v in raw.items() if v is not ...}


def codes(issues: list[Issue]) -> set[tuple[str, str]]:
    return {(i.code, i.path) for i in issues}


# --- tariffs ---------------------------------------------------------------------------------------------------


def test_it_maps_camel_case_day_of_week_and_lowercase_days() -> None:
    raw = tariff({"price_components": [component()], "restrictions": {"dayOfWeek": ["monday", "Sat"]}})
    out, issues = normalize_tariff(raw)
    assert out["elements"][0]["restrictions"] == {"day_of_week": ["MONDAY", "SATURDAY"]}
    assert {
        ("renamed_field", "elements[0].restrictions.dayOfWeek"),
        ("enum_case", "elements[0].restrictions.day_of_week[0]"),
        ("enum_synonym", "elements[0].restrictions.day_of_week[1]"),
    } == codes(issues)


def test_it_upper_cases_the_currency() -> None:
    out, issues = normalize_tariff(tariff(currency="eur"))
    assert out["currency"] == "EUR"
    assert codes(issues) == {("enum_case", "currency")}


@pytest.mark.parametrize("currency", [None, "EURO-X", "XYZ", 978])
def test_it_rejects_a_tariff_without_iso_currency(currency: Any) -> None:
    with pytest.raises(Rejected) as exc:
        normalize_tariff(tariff(currency=currency))
    assert exc.value.path == "currency"


def test_it_sets_a_missing_step_size_to_one() -> None:
    out, issues = normalize_tariff(tariff({"price_components": [component(step_size=...)]}))
    assert out["elements"][0]["price_components"][0]["step_size"] == 1
    assert codes(issues) == {("missing_step_size", "elements[0].price_components[0].step_size")}


def test_it_rejects_a_negative_step_size() -> None:
    with pytest.raises(Rejected) as exc:
        normalize_tariff(tariff({"price_components": [component(step_size=-60)]}))
    assert exc.value.path == "elements[0].price_components[0].step_size"


def test_it_rejects_an_unknown_restriction_instead_of_widening_the_element() -> None:
    raw = tariff({"price_components": [component()], "restrictions": {"max_soc": 80}})
    with pytest.raises(Rejected) as exc:
        normalize_tariff(raw)
    assert (exc.value.path, exc.value.code) == ("elements[0].restrictions.max_soc", "unknown_restriction")


def test_it_rejects_an_unreadable_restriction_time() -> None:
    raw = tariff({"price_components": [component()], "restrictions": {"start_time": "25:99"}})
    with pytest.raises(Rejected):
        normalize_tariff(raw)


def test_it_keeps_prices_exactly_as_received() -> None:
    raw = tariff({"price_components": [component(price=0.1, vat=20.99), component(type="ENERGY", price="0.3333")]})
    out, issues = normalize_tariff(raw)
    prices = [(c["price"], c.get("vat")) for c in out["elements"][0]["price_components"]]
    assert [Decimal(str(p)) for p, _vat in prices] == [Decimal("0.1"), Decimal("0.3333")]
    assert Decimal(str(prices[0][1])) == Decimal("20.99")
    assert codes(issues) == {("type_coerced", "elements[0].price_components[1].price")}


def test_it_rejects_a_numeric_price_string_that_a_float_cannot_hold() -> None:
    raw = tariff({"price_components": [component(price="0.12345678901234567")]})
    with pytest.raises(Rejected) as exc:
        normalize_tariff(raw)
    assert exc.value.code == "invalid_price"


def test_it_rejects_a_tariff_without_elements() -> None:
    with pytest.raises(Rejected) as exc:
        normalize_tariff(tariff(elements=[]))
    assert exc.value.path == "elements"


def test_it_takes_tariff_party_from_the_partner_credentials() -> None:
    out, issues = normalize_tariff(tariff(country_code=..., party_id=...), country_code="DE", party_id="all")
    assert (out["country_code"], out["party_id"]) == ("DE", "ALL")
    assert {i.code for i in issues} == {"missing_country_code", "missing_party_id"}


# --- sessions --------------------------------------------------------------------------------------------------


def test_it_accepts_a_clean_session_unchanged() -> None:
    raw = session()
    assert normalize_session(raw) == (raw, [])


def test_it_normalises_session_enums() -> None:
    out, issues = normalize_session(
        session(status="ACTIVE ", auth_method="command", cdr_token=cdr_token(type="app_user"))
    )
    assert (out["status"], out["auth_method"], out["cdr_token"]["type"]) == ("ACTIVE", "COMMAND", "APP_USER")
    assert {i.code for i in issues} == {"enum_case"}


def test_it_keeps_kwh_decimal_safe() -> None:
    out, issues = normalize_session(session(kwh="41.12"))
    assert Decimal(str(out["kwh"])) == Decimal("41.12")
    assert codes(issues) == {("type_coerced", "kwh")}


def test_it_drops_unknown_charging_period_dimensions() -> None:
    periods = [
        {
            "start_date_time": "2025-06-29T22:39:09Z",
            "dimensions": [{"type": "energy", "volume": 1}, {"type": "SOC", "volume": 5}],
        }
    ]
    out, issues = normalize_session(session(charging_periods=periods))
    assert out["charging_periods"][0]["dimensions"] == [{"type": "ENERGY", "volume": 1}]
    assert ("invalid_dimension", "charging_periods[0].dimensions[1]") in codes(issues)


@pytest.mark.parametrize("missing", ["cdr_token", "location_id", "status", "auth_method", "currency"])
def test_it_rejects_a_session_missing_what_attributes_or_bills_it(missing: str) -> None:
    with pytest.raises(Rejected) as exc:
        normalize_session(session(**{missing: ...}))
    assert exc.value.path == missing


def test_it_rejects_a_session_patch_without_last_updated() -> None:
    with pytest.raises(Rejected) as exc:
        normalize_session_patch({"kwh": 2.0})
    assert exc.value.path == "last_updated"


def test_it_normalises_only_the_fields_present_in_a_session_patch() -> None:
    out, issues = normalize_session_patch({"status": "completed", "last_updated": "2025-06-29T23:50:17+00:00"})
    assert out == {"status": "COMPLETED", "last_updated": "2025-06-29T23:50:17Z"}
    assert codes(issues) == {("enum_case", "status"), ("datetime_offset", "last_updated")}


# --- CDRs ------------------------------------------------------------------------------------------------------


def test_it_accepts_a_clean_cdr_unchanged() -> None:
    raw = cdr()
    assert normalize_cdr(raw) == (raw, [])


def test_it_rejects_a_cdr_without_total_cost() -> None:
    with pytest.raises(Rejected) as exc:
        normalize_cdr(cdr(total_cost=...))
    assert exc.value.path == "total_cost"


def test_it_keeps_credit_cdr_fields_and_negative_amounts() -> None:
    raw = cdr(id="C1-C", credit=True, credit_reference_id="C1", total_cost={"excl_vat": -4.0, "incl_vat": -4.4})
    out, issues = normalize_cdr(raw)
    assert (out["credit"], out["credit_reference_id"], out["total_cost"]) == (
        True,
        "C1",
        {"excl_vat": -4.0, "incl_vat": -4.4},
    )
    assert issues == []


def test_it_flags_a_credit_cdr_without_reference() -> None:
    out, issues = normalize_cdr(cdr(credit=True, total_cost={"excl_vat": -4.0, "incl_vat": -4.4}))
    assert out["credit"] is True
    assert codes(issues) == {("missing_credit_reference", "credit_reference_id")}


def test_it_converts_cdr_offsets_to_utc() -> None:
    out, issues = normalize_cdr(cdr(start_date_time="2025-06-29T23:39:09+02:00"))
    assert out["start_date_time"] == "2025-06-29T21:39:09Z"
    assert codes(issues) == {("datetime_offset", "start_date_time")}


def test_it_drops_a_broken_embedded_tariff_but_keeps_the_cdr() -> None:
    out, issues = normalize_cdr(cdr(tariffs=[tariff(currency="???"), tariff(id="T2")]))
    assert [t["id"] for t in out["tariffs"]] == ["T2"]
    assert [(i.path, i.code, i.fixed) for i in issues] == [("tariffs[0]", "dropped_tariff", False)]
