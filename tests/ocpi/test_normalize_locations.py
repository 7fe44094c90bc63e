"""Location/EVSE/Connector normalisation: one test per deviation seen in the real CPO feeds (perf notes §1.3)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from ocpi.normalize import (
    Issue,
    Rejected,
    datetimes,
    normalize_connector,
    normalize_evse,
    normalize_location,
    normalize_location_patch,
)


def connector(**fields: Any) -> dict[str, Any]:
    return {
        "id": "1",
        "standard": "IEC_62196_T2",
        "format": "SOCKET",
        "power_type": "AC_3_PHASE",
        "max_voltage": 230,
        "max_amperage": 32,
        "max_electric_power": 22000,
        "tariff_ids": ["T1"],
        "last_updated": "2025-06-21T09:22:28Z",
        **fields,
    }


def evse(uid: str = "E1", connectors: list[dict[str, Any]] | None = None, **fields: Any) -> dict[str, Any]:
    return {
        "uid": uid,
        "evse_id": f"NL*ABC*E{uid}",
        "status": "AVAILABLE",
        "connectors": [connector()] if connectors is None else connectors,
        "last_updated": "2025-06-21T09:22:28Z",
        **fields,
    }


def location(**fields: Any) -> dict[str, Any]:
    raw = {
        "country_code": "NL",
        "party_id": "ABC",
        "id": "LOC1",
        "publish": True,
        "name": "Station",
        "address": "Straat 1",
        "city": "Utrecht",
        "postal_code": "3511 AA",
        "country": "NLD",
        "coordinates": {"latitude": "52.090737", "longitude": "5.121420"},
        "evses": [evse()],
        "time_zone": "Europe/Amsterdam",
        "last_updated": "2025-06-21T09:22:28Z",
    }
    raw.update(fields)
    return {k: v for k, v in raw.items() if v is not ...}


def codes(issues: list[Issue]) -> set[tuple[str, str]]:
    return {(i.code, i.path) for i in issues}


def test_it_accepts_a_clean_location_unchanged_and_without_issues() -> None:
    raw = location()
    out, issues = normalize_location(copy.deepcopy(raw))
    assert (out, issues) == (raw, [])


def test_it_reads_power_below_1000_as_kilowatts() -> None:
    # ITC: "max_electric_power": 22 on 2,306 connectors.
    out, issues = normalize_location(location(evses=[evse(connectors=[connector(max_electric_power=22)])]))
    assert out["evses"][0]["connectors"][0]["max_electric_power"] == 22000
    assert ("power_in_kw", "evses[0].connectors[0].max_electric_power") in codes(issues)


def test_it_derives_missing_power_from_voltage_amperage_and_phases() -> None:
    conn, issues = normalize_connector(connector(max_electric_power=None, max_voltage=230, max_amperage=16))
    assert conn["max_electric_power"] == 3 * 230 * 16
    assert codes(issues) == {("derived_power", "max_electric_power")}


@pytest.mark.parametrize(
    ("fields", "name", "derived"),
    [
        ({"max_voltage": None, "max_amperage": 1, "max_electric_power": 10_000_000}, "max_voltage", "10000000 V"),
        ({"max_voltage": 100, "max_amperage": None, "max_electric_power": 10_000_000}, "max_amperage", "100000 A"),
    ],
)
def test_a_voltage_or_amperage_derived_beyond_its_bound_is_left_unknown(
    fields: dict[str, Any], name: str, derived: str
) -> None:
    """Each sent figure within its bound (10 MW, 1 A, 100 V) need not give a derived one within its own (2,000 V,
    5,000 A): 10 MV had been stored as the connector's voltage."""
    conn, issues = normalize_connector(connector(power_type="DC", **fields))
    assert conn[name] == 0  # unknown, as for one not sent
    assert ("implausible_value", name) in codes(issues)
    assert any(derived in i.message for i in issues if i.code == "implausible_value")


def test_it_derives_three_phase_power_from_line_to_line_voltage() -> None:
    # EV24/Evio send 400 V (line-to-line) where OCPI wants line-to-neutral: 400 x 32 x sqrt(3) ~ 22 kW, not 38 kW.
    conn, _ = normalize_connector(connector(max_electric_power=None, max_voltage=400, max_amperage=32))
    assert conn["max_electric_power"] == 22170
    assert conn["max_voltage"] == 400


def test_it_sets_unknown_voltage_and_amperage_to_zero_when_only_power_is_known() -> None:
    conn, issues = normalize_connector(connector(max_voltage=None, max_amperage=None, max_electric_power=60))
    assert (conn["max_voltage"], conn["max_amperage"], conn["max_electric_power"]) == (0, 0, 60000)
    assert {"unknown_voltage", "unknown_amperage", "power_in_kw"} <= {i.code for i in issues}


def test_it_upper_cases_lowercase_enums() -> None:
    # PowerGo: "socket"/"cable" and "ac_3_phase"; Zepto: "IEC_60309_2_three_32" is the spec's own mixed case.
    conn, issues = normalize_connector(connector(format="socket", power_type="ac_3_phase"))
    assert (conn["format"], conn["power_type"]) == ("SOCKET", "AC_3_PHASE")
    assert codes(issues) == {("enum_case", "format"), ("enum_case", "power_type")}
    conn, _ = normalize_connector(connector(standard="IEC_60309_2_THREE_32"))
    assert conn["standard"] == "IEC_60309_2_three_32"


def test_it_strips_trailing_space_from_status() -> None:
    out, issues = normalize_evse(evse(status="CHARGING "))
    assert out["status"] == "CHARGING"
    assert codes(issues) == {("enum_case", "status")}


@pytest.mark.parametrize(
    ("country", "expected", "code"),
    [("RU", "RUS", "country_alpha2"), ("Polska", "POL", "country_name"), ("Germany", "DEU", "country_name")],
)
def test_it_maps_alpha2_and_names_to_alpha3(country: str, expected: str, code: str) -> None:
    out, issues = normalize_location(location(country=country))
    assert out["country"] == expected
    assert codes(issues) == {(code, "country")}


def test_it_falls_back_to_country_code_for_a_missing_country() -> None:
    # Evio sends no country at all, only country_code "PT".
    out, issues = normalize_location(location(country=..., country_code="PT", time_zone="Europe/Lisbon"))
    assert out["country"] == "PRT"
    assert ("country_from_country_code", "country") in codes(issues)


def test_it_formats_number_coordinates_as_ocpi_strings() -> None:
    # Evio/Voltrelli send JSON numbers.
    out, issues = normalize_location(location(coordinates={"latitude": 40.579958, "longitude": -8.581911}))
    assert out["coordinates"] == {"latitude": "40.579958", "longitude": "-8.581911"}
    assert ("coordinates_format", "coordinates") in codes(issues)


def test_it_rounds_too_many_decimals_to_six() -> None:
    raw = location(coordinates={"latitude": "49.76997753844849", "longitude": " 20.83132265517432"})
    out, _ = normalize_location(raw)
    assert out["coordinates"] == {"latitude": "49.769978", "longitude": "20.831323"}


@pytest.mark.parametrize(
    "coordinates",
    [
        {"latitude": "", "longitude": ""},
        {"latitude": "0", "longitude": "0"},
        {"latitude": "91.0", "longitude": "5"},
        None,
    ],
)
def test_it_rejects_unusable_coordinates(coordinates: Any) -> None:
    with pytest.raises(Rejected) as exc:
        normalize_location(location(coordinates=coordinates))
    assert exc.value.path == "coordinates"


def test_it_takes_evse_coordinates_when_latitude_repeats_as_longitude() -> None:
    raw = location(
        coordinates={"latitude": 47.746575, "longitude": 47.746575},
        evses=[evse(coordinates={"latitude": 47.746575, "longitude": 26.665509})],
    )
    out, issues = normalize_location(raw)
    assert out["coordinates"] == {"latitude": "47.746575", "longitude": "26.665509"}
    assert ("coordinates_from_evse", "coordinates") in codes(issues)


def test_it_takes_a_missing_party_id_from_the_partner_credentials() -> None:
    out, issues = normalize_location(location(party_id=...), country_code="NL", party_id="ABC")
    assert out["party_id"] == "ABC"
    assert codes(issues) == {("missing_party_id", "party_id")}


def test_it_rejects_a_missing_party_id_when_no_partner_is_known() -> None:
    with pytest.raises(Rejected) as exc:
        normalize_location(location(party_id=None))
    assert exc.value.path == "party_id"


def test_it_keeps_party_id_from_the_object_over_the_partner_credentials() -> None:
    out, issues = normalize_location(location(party_id="xyz"), country_code="NL", party_id="ABC")
    assert out["party_id"] == "XYZ"
    assert codes(issues) == {("enum_case", "party_id")}


def test_it_derives_a_missing_time_zone_from_the_coordinates() -> None:
    out, issues = normalize_location(location(time_zone=...))
    assert out["time_zone"] == "Europe/Amsterdam"
    assert codes(issues) == {("missing_time_zone", "time_zone")}


@pytest.mark.parametrize(
    ("sent", "expected"), [("Asia/Kuala Lumpur", "Asia/Kuala_Lumpur"), ("europe/berlin", "Europe/Berlin")]
)
def test_it_repairs_a_misspelled_time_zone(sent: str, expected: str) -> None:
    # Where the zone's clock is the one at the coordinates (a zone elsewhere is replaced by the one there).
    places = {"Asia/Kuala_Lumpur": ("3.139003", "101.686855"), "Europe/Berlin": ("52.520008", "13.404954")}
    latitude, longitude = places[expected]
    out, issues = normalize_location(
        location(time_zone=sent, coordinates={"latitude": latitude, "longitude": longitude})
    )
    assert out["time_zone"] == expected
    assert codes(issues) == {("time_zone_format", "time_zone")}


def test_it_replaces_an_invalid_time_zone_from_the_coordinates() -> None:
    # Fastned: "Amsterdam", "The Netherlands/Amsterdam", "Germany".
    out, issues = normalize_location(location(time_zone="The Netherlands/Amsterdam"))
    assert out["time_zone"] == "Europe/Amsterdam"
    assert codes(issues) == {("invalid_time_zone", "time_zone")}


def test_it_accepts_an_evse_without_evse_id() -> None:
    raw = evse()
    del raw["evse_id"]
    out, issues = normalize_evse(raw)
    assert "evse_id" not in out and issues == []


def test_it_accepts_a_location_without_evses() -> None:
    out, issues = normalize_location(location(evses=[]))
    assert out["evses"] == [] and issues == []


def test_it_keeps_an_evse_without_connectors_and_reports_it() -> None:
    raw = evse()
    del raw["connectors"]
    out, issues = normalize_evse(raw)
    assert out["connectors"] == []
    assert codes(issues) == {("evse_without_connectors", "connectors")}


def test_it_keeps_the_last_of_duplicate_evse_uids() -> None:
    raw = location(evses=[evse("A", status="AVAILABLE"), evse("B"), evse("a", status="CHARGING")])
    out, issues = normalize_location(raw)
    assert [(e["uid"], e["status"]) for e in out["evses"]] == [("B", "AVAILABLE"), ("a", "CHARGING")]
    assert issues == [Issue("evses[0]", "duplicate_evse_uid", issues[0].message, False)]


def test_it_reads_last_updated_without_designator_as_utc_without_an_issue() -> None:
    # types.asciidoc: "The absence of the timezone designator implies a UTC timestamp" (PowerGo, Sitronics).
    out, issues = normalize_location(location(last_updated="2025-06-21T11:20:39.704679"))
    assert out["last_updated"] == "2025-06-21T11:20:39.704Z"
    assert issues == []


def test_it_converts_last_updated_with_an_offset_to_utc_and_reports_it() -> None:
    out, issues = normalize_location(location(last_updated="2025-06-21T14:20:39+03:00"))
    assert out["last_updated"] == "2025-06-21T11:20:39Z"
    assert codes(issues) == {("datetime_offset", "last_updated")}


def test_it_derives_a_missing_location_last_updated_from_its_newest_evse() -> None:
    # Otopriz: 37 of 500 locations have no last_updated; mod_locations keeps the newest child stamp on the parent.
    raw = location(last_updated=..., evses=[evse("A", last_updated="2025-01-01T00:00:00Z"), evse("B")])
    out, issues = normalize_location(raw)
    assert out["last_updated"] == "2025-06-21T09:22:28Z"
    assert codes(issues) == {("missing_last_updated", "last_updated")}


def test_it_uses_the_receive_time_for_a_full_object_without_any_stamp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datetimes, "_utcnow", lambda: datetime(2026, 11, 25, 10, 0, tzinfo=UTC))
    raw = connector()
    del raw["last_updated"]
    out, issues = normalize_connector(raw)
    assert out["last_updated"] == "2026-11-25T10:00:00Z"
    assert codes(issues) == {("missing_last_updated", "last_updated")}


def test_it_maps_gbt_dc_spelling_to_the_connector_type() -> None:
    # ChargeSini: "GB/T (DC)".
    conn, issues = normalize_connector(connector(standard="GB/T (DC)", power_type="DC"))
    assert conn["standard"] == "GBT_DC"
    assert codes(issues) == {("enum_synonym", "standard")}


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        ("Type2", "IEC_62196_T2"),
        ("Type 2 outlet", "IEC_62196_T2"),
        ("CCS", "IEC_62196_T2_COMBO"),
        ("CCS2", "IEC_62196_T2_COMBO"),
        ("Type 2 Combo", "IEC_62196_T2_COMBO"),
        ("CHAdeMO", "CHADEMO"),
        ("ccs1", "IEC_62196_T1_COMBO"),
    ],
)
def test_it_maps_connector_standard_synonyms(sent: str, expected: str) -> None:
    conn, _ = normalize_connector(connector(standard=sent))
    assert conn["standard"] == expected


def test_it_infers_a_null_power_type_from_the_standard() -> None:
    conn, issues = normalize_connector(connector(standard="IEC_62196_T2_COMBO", power_type=None))
    assert conn["power_type"] == "DC"
    assert codes(issues) == {("inferred_power_type", "power_type")}


def test_it_infers_a_null_format_from_the_standard() -> None:
    # EV24 sends "format": null.
    conn, issues = normalize_connector(connector(format=None))
    assert conn["format"] == "SOCKET"
    assert codes(issues) == {("inferred_format", "format")}


def test_it_keeps_a_connector_without_tariff_ids_without_an_issue() -> None:
    # Voltrelli/PowerGo/ITC: no tariff_ids -> unpriced for Beckn, but a valid connector.
    out, issues = normalize_connector(connector(tariff_ids=None))
    assert "tariff_ids" not in out and issues == []


def test_it_drops_a_connector_of_unknown_standard_and_keeps_the_rest() -> None:
    raw = evse(connectors=[connector(id="1", standard=None), connector(id="2")])
    out, issues = normalize_evse(raw)
    assert [c["id"] for c in out["connectors"]] == ["2"]
    assert issues == [Issue("connectors[0]", "unknown_connector_standard", issues[0].message, False)]


def test_it_reports_an_unknown_field_again_after_dropping_the_connector_that_had_it() -> None:
    conns = [{**connector(id="1", standard="??"), "cp_id": 1}, {**connector(id="2"), "cp_id": 2}]
    _, issues = normalize_evse(evse(connectors=conns))
    assert codes(issues) == {("unknown_connector_standard", "connectors[0]"), ("unknown_field", "connectors[1].cp_id")}


def test_it_drops_an_evse_without_uid_and_keeps_the_rest() -> None:
    out, issues = normalize_location(location(evses=[evse(uid=None), evse("B")]))
    assert [e["uid"] for e in out["evses"]] == ["B"]
    assert [(i.path, i.code, i.fixed) for i in issues] == [("evses[0]", "dropped_evse", False)]


def test_it_strips_ids_but_keeps_their_case() -> None:
    out, issues = normalize_location(location(id=" Loc-a1 ", evses=[evse(uid="eVse-1 ")]))
    assert (out["id"], out["evses"][0]["uid"]) == ("Loc-a1", "eVse-1")
    assert {i.code for i in issues} == {"id_whitespace"}


def test_it_reads_ocpi_211_and_camel_case_field_names() -> None:
    raw = location(postal_code=..., postalCode="1234 AB", type="ON_STREET")
    raw["evses"] = [evse(connectors=[{**connector(max_voltage=..., max_amperage=...), "voltage": 230, "amperage": 16}])]
    raw["evses"][0]["connectors"][0] = {k: v for k, v in raw["evses"][0]["connectors"][0].items() if v is not ...}
    out, issues = normalize_location(raw)
    assert out["postal_code"] == "1234 AB"
    assert out["parking_type"] == "ON_STREET"
    conn = out["evses"][0]["connectors"][0]
    assert (conn["max_voltage"], conn["max_amperage"]) == (230, 16)
    assert {("renamed_field", "postalCode"), ("renamed_field", "type")} <= codes(issues)


def test_it_drops_unknown_fields_reporting_each_name_once() -> None:
    # Punkt puts "cp_id" on every connector: one issue, not one per connector.
    conns = [{**connector(id=str(i)), "cp_id": "121"} for i in range(3)]
    out, issues = normalize_location(location(evses=[evse(connectors=conns)], station_type=None, foo="bar"))
    assert "foo" not in out and all("cp_id" not in c for c in out["evses"][0]["connectors"])
    assert codes(issues) == {("unknown_field", "foo"), ("unknown_field", "evses[0].connectors[0].cp_id")}
    assert not any(i.fixed for i in issues)


def test_it_truncates_over_long_strings() -> None:
    out, issues = normalize_location(location(address="A" * 300, city="C" * 50, postal_code="12345678901"))
    assert (len(out["address"]), len(out["city"]), len(out["postal_code"])) == (255, 45, 10)
    assert {("truncated", "address"), ("truncated", "city"), ("truncated", "postal_code")} == codes(issues)


def test_it_reads_numeric_strings_and_floats_as_int_voltages() -> None:
    # PowerGo: "max_voltage": "230"; Zepto: "amperage": 16.0.
    conn, issues = normalize_connector(connector(max_voltage="230", max_amperage=16.0))
    assert (conn["max_voltage"], conn["max_amperage"]) == (230, 16)
    assert codes(issues) == {("type_coerced", "max_voltage")}


def test_it_drops_invalid_regular_hours_entries() -> None:
    hours = {
        "twentyfourseven": False,
        "regular_hours": [
            {"weekday": 1, "period_begin": "8:00", "period_end": "20:00"},
            {"weekday": 6, "period_begin": "вы:ходной", "period_end": "вы:ходной"},
        ],
    }
    out, issues = normalize_location(location(opening_times=hours))
    assert out["opening_times"]["regular_hours"] == [{"weekday": 1, "period_begin": "08:00", "period_end": "20:00"}]
    assert ("invalid_regular_hours", "opening_times.regular_hours[1]") in codes(issues)


def test_it_rejects_a_location_patch_without_last_updated() -> None:
    with pytest.raises(Rejected) as exc:
        normalize_location_patch({"status": "CHARGING"}, "evse")
    assert exc.value.path == "last_updated"


def test_it_normalises_only_the_fields_present_in_a_patch() -> None:
    out, issues = normalize_location_patch({"status": "charging ", "last_updated": "2019-06-24T12:39:09"}, "evse")
    assert out == {"status": "CHARGING", "last_updated": "2019-06-24T12:39:09Z"}
    assert codes(issues) == {("enum_case", "status")}


def test_it_fixes_kw_power_in_a_connector_patch_without_adding_defaults() -> None:
    out, _ = normalize_location_patch({"max_electric_power": 50, "last_updated": "2019-06-24T12:39:09Z"}, "connector")
    assert out == {"max_electric_power": 50000, "last_updated": "2019-06-24T12:39:09Z"}


def test_it_drops_unusable_fields_from_a_patch_instead_of_rejecting_it() -> None:
    raw = {"coordinates": {"latitude": "x", "longitude": "y"}, "name": "New", "last_updated": "2019-06-24T12:39:09Z"}
    out, issues = normalize_location_patch(raw, "location")
    assert out == {"name": "New", "last_updated": "2019-06-24T12:39:09Z"}
    assert [(i.path, i.fixed) for i in issues] == [("coordinates", False)]


def test_it_refuses_an_unknown_patch_level() -> None:
    with pytest.raises(ValueError, match="level"):
        normalize_location_patch({"last_updated": "2019-06-24T12:39:09Z"}, "tariff")
