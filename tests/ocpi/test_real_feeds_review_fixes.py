"""What the 16 real CPO feeds showed stored wrongly (review of lenient ingest): ITCharge's Sunday as weekday 0, a
time zone contradicting the coordinates, a charger in open sea, a kW figure in the voltage, a location stamped an
hour ahead lost, invisible characters kept. The feeds are read in place (../shared); the rules also on made-up
objects, so they are tested where the feeds are absent."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest

from emsp.models import Connector, Location, Partner
from ocpi.normalize import (
    ISSUE_CODES,
    Issue,
    Rejected,
    normalize_connector,
    normalize_evse,
    normalize_location,
    normalize_location_patch,
    unwrap_list_payload,
)
from ocpi.normalize.parts import zone_from_coordinates
from ocpi.sync import ingest_page
from tests.conftest import shared_dir
from tests.ocpi.test_normalize_locations import connector, evse, location

FEEDS = shared_dir() / "data" / "ocm" / "ocpi-feeds"
needs_feeds = pytest.mark.skipif(not FEEDS.is_dir(), reason=f"real CPO feeds not found at {FEEDS}")


def feed_location(feed: str, location_id: str) -> dict[str, Any]:
    objects = unwrap_list_payload((FEEDS / feed).read_bytes())
    return next(o for o in objects if str(o.get("id")) == location_id)


def codes(issues: list[Issue]) -> set[str]:
    return {i.code for i in issues}


def hours(out: dict[str, Any]) -> dict[int, tuple[str, str]]:
    return {h["weekday"]: (h["period_begin"], h["period_end"]) for h in out["opening_times"]["regular_hours"]}


def week(*days: int) -> dict[str, Any]:
    regular = [{"weekday": d, "period_begin": "08:00", "period_end": f"{20 + (d % 3)}:00"} for d in days]
    return {"twentyfourseven": False, "regular_hours": regular}


def test_the_new_finding_codes_are_in_the_vocabulary() -> None:
    new = {"weekday_0_sunday", "time_zone_elsewhere", "coordinates_at_sea", "power_as_voltage"}
    assert new <= ISSUE_CODES.keys()


# --- 1. weekday 0 = Sunday ---------------------------------------------------------------------------------


def test_weekday_0_in_a_list_without_7_is_sunday() -> None:
    out, issues = normalize_location(location(opening_times=week(0, 1, 2, 3, 4, 5, 6)))
    assert hours(out) == {7: ("08:00", "20:00"), **{d: ("08:00", f"{20 + d % 3}:00") for d in range(1, 7)}}
    assert "weekday_0_sunday" in codes(issues) and "invalid_regular_hours" not in codes(issues)


def test_weekday_0_beside_a_7_is_still_dropped() -> None:
    out, issues = normalize_location(location(opening_times=week(0, 1, 7)))
    assert sorted(hours(out)) == [1, 7] and hours(out)[7] == ("08:00", "21:00")  # 7's own hours, not 0's 20:00
    assert "invalid_regular_hours" in codes(issues) and "weekday_0_sunday" not in codes(issues)


@needs_feeds
def test_an_itcharge_site_is_open_on_sunday() -> None:
    # ITCharge: 0 and 6 share the weekend hours 08:00-22:00; the site had shown "Sun closed".
    raw = feed_location("ocpi_2_2_1_locations-itcharge.json", "2ff2f007-4dfb-431e-a83f-8d1cfe92b6c1")
    out, _ = normalize_location(raw)
    assert hours(out)[7] == hours(out)[6] == ("08:00", "22:00")


# --- 2. a time zone contradicting the coordinates ------------------------------------------------------------


def offsets(zone: str) -> tuple[timedelta | None, ...]:
    year = datetime.now(UTC).year
    return tuple(datetime(year, m, 15, 12, tzinfo=UTC).astimezone(ZoneInfo(zone)).utcoffset() for m in (1, 7))


@needs_feeds
@pytest.mark.parametrize(
    ("feed", "location_id", "zone"),
    [
        # sent Europe/Bucharest (Lima), Etc/GMT+5 = UTC-5 (Nizhnevartovsk), America/Cambridge_Bay (Toronto),
        # Asia/Novosibirsk (Nizhny Novgorod)
        ("ocpi_locations-voltrelli.json", "2e1ced38-5c97-4d17-950c-22a72da73e8d", "America/Lima"),
        ("ocpi_2_2_1_locations-itcharge.json", "f5babeb2-f658-4957-b837-c5ca8762fbf0", "Asia/Yekaterinburg"),
        ("ocpi_2_2_1_locations-greems.json", "1decb4c9-c197-4289-909e-0ac8de1d0852", "America/Toronto"),
        ("ocpi_2_2_1_locations-punkt.json", "52501", "Europe/Moscow"),
    ],
)
def test_a_real_time_zone_contradicting_the_coordinates_is_replaced(feed: str, location_id: str, zone: str) -> None:
    out, issues = normalize_location(feed_location(feed, location_id), country_code="ZZ", party_id="XXX")
    assert out["time_zone"] == zone
    assert "time_zone_elsewhere" in codes(issues)


def test_a_sent_zone_of_another_clock_is_replaced_by_the_zone_there() -> None:
    # Yekaterinburg (UTC+5) sent as Europe/Moscow (UTC+3), a CPO's one zone for all its sites.
    raw = location(coordinates={"latitude": "56.838011", "longitude": "60.597474"}, time_zone="Europe/Moscow")
    out, issues = normalize_location(raw)
    assert out["time_zone"] == "Asia/Yekaterinburg"
    assert next(i for i in issues if i.code == "time_zone_elsewhere").path == "time_zone"
    assert offsets(out["time_zone"]) != offsets("Europe/Moscow")


@pytest.mark.parametrize(
    ("zone", "lat", "lon"),
    [
        ("Europe/Amsterdam", "52.090737", "5.121420"),  # the zone there
        ("Europe/Paris", "52.090737", "5.121420"),  # another name, the same clock all year: kept, no churn
        ("Europe/Kiev", "50.450100", "30.523400"),  # the old name of Europe/Kyiv
        ("Etc/GMT-3", "55.755826", "37.617300"),  # Moscow's clock, POSIX-signed the right way round
    ],
)
def test_a_sent_zone_with_the_clock_of_the_coordinates_is_kept_as_named(zone: str, lat: str, lon: str) -> None:
    out, issues = normalize_location(location(coordinates={"latitude": lat, "longitude": lon}, time_zone=zone))
    assert out["time_zone"] == zone
    assert "time_zone_elsewhere" not in codes(issues)


def test_a_zone_differing_only_in_summer_is_replaced() -> None:
    # Reykjavik keeps UTC all year; Europe/London is UTC+1 in summer.
    raw = location(coordinates={"latitude": "64.146582", "longitude": "-21.942635"}, time_zone="Europe/London")
    assert normalize_location(raw)[0]["time_zone"] == "Atlantic/Reykjavik"


def test_a_patch_with_coordinates_and_a_zone_of_another_clock_is_corrected() -> None:
    body = {
        "coordinates": {"latitude": "56.838011", "longitude": "60.597474"},
        "time_zone": "Europe/Moscow",
        "last_updated": "2025-06-21T09:22:28Z",
    }
    out, issues = normalize_location_patch(body, "location")
    assert out["time_zone"] == "Asia/Yekaterinburg" and "time_zone_elsewhere" in codes(issues)


@pytest.mark.django_db
def test_a_patch_of_the_zone_alone_is_read_against_the_stored_coordinates(client_for: Any) -> None:
    """A re-review: the rule held for a PUT and a PATCH with coordinates, not for a PATCH of the zone alone."""
    cpo = client_for("BE", "BEC")
    site = {**location(), "id": "LOC-TZ", "country_code": "BE", "party_id": "BEC", "time_zone": "Europe/Brussels"}
    site["coordinates"] = {"latitude": "50.850346", "longitude": "4.351721"}  # Brussels
    assert cpo.put("/ocpi/emsp/2.2.1/locations/BE/BEC/LOC-TZ", site).json()["status_code"] == 1000

    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    answer = cpo.patch("/ocpi/emsp/2.2.1/locations/BE/BEC/LOC-TZ", {"time_zone": "America/Lima", "last_updated": stamp})

    assert answer.json()["status_code"] == 1000
    assert Location.objects.get(location_id="LOC-TZ").time_zone == "Europe/Brussels"
    kept = cpo.patch("/ocpi/emsp/2.2.1/locations/BE/BEC/LOC-TZ", {"time_zone": "Europe/Paris", "last_updated": stamp})
    assert kept.json()["status_code"] == 1000
    assert Location.objects.get(location_id="LOC-TZ").time_zone == "Europe/Paris"  # the same clock: kept as named


# --- 3. coordinates in open sea -------------------------------------------------------------------------------


@pytest.mark.parametrize(("lat", "lon"), [("0", "-1"), ("1", "1"), ("0", "-2"), ("45.000000", "-30.000000")])
def test_a_location_in_open_sea_is_rejected(lat: str, lon: str) -> None:
    with pytest.raises(Rejected) as exc:
        normalize_location(location(coordinates={"latitude": lat, "longitude": lon}))
    assert (exc.value.code, exc.value.path) == ("coordinates_at_sea", "coordinates")
    assert "open sea" in exc.value.reason


def test_a_patch_moving_a_location_into_open_sea_loses_only_its_coordinates() -> None:
    body = {
        "coordinates": {"latitude": "0", "longitude": "-1"},
        "name": "Moved",
        "last_updated": "2025-06-21T09:22:28Z",
    }
    out, issues = normalize_location_patch(body, "location")
    assert "coordinates" not in out and out["name"] == "Moved"
    assert "coordinates_at_sea" in codes(issues)


@pytest.mark.django_db
@needs_feeds
@pytest.mark.parametrize(
    ("feed", "location_id"),
    [
        ("ocpi_2_2_1_locations-itcharge.json", "b6b4c5bd-8473-476b-a6a8-0712ba429453"),  # 0, -1
        ("ocpi_2_2_1_locations-punkt.json", "52593"),  # 1, 1 (Dzerzhinsk)
    ],
)
def test_a_real_location_in_open_sea_is_not_stored(feed: str, location_id: str) -> None:
    partner = Partner.objects.create(name="RU", country_code="RU", party_id="ITC")
    raw = {**feed_location(feed, location_id), "country_code": "RU", "party_id": "ITC"}
    counts = ingest_page(partner, "locations", [raw])
    assert counts.rejected == 1
    assert not Location.objects.filter(location_id=location_id).exists()


@needs_feeds
@pytest.mark.parametrize(
    ("feed", "location_id"),
    [
        ("ocpi_2_1_1_locations-fastned.json", "50003"),  # Sunderland, by the North Sea
        ("ocpi_locations-voltrelli.json", "9331553d-1025-46c6-bdd2-72cbded0fa37"),  # Porto Montenegro marina
        ("ocpi_2_2_1_locations-punkt.json", "23003"),  # Sochi, the Black Sea shore
        ("ocpi_2_2_locations_powergo.json", "11756"),  # Katwijk aan Zee
        ("ocpi_2_2_1_locations-ezvolt.json", "21f9a3d0-8765-4778-b642-c25636a3fbe3"),  # Búzios, a beach
    ],
)
def test_real_coastal_sites_are_kept(feed: str, location_id: str) -> None:
    out, issues = normalize_location(feed_location(feed, location_id), country_code="ZZ", party_id="XXX")
    assert out["coordinates"] and "coordinates_at_sea" not in codes(issues)


# --- 4. a kW figure sent as the voltage -----------------------------------------------------------------------


def one_connector(**fields: Any) -> tuple[dict[str, Any], set[str]]:
    out, issues = normalize_connector(connector(**fields))
    return out, codes(issues)


def test_a_standard_ac_kw_figure_as_voltage_without_amperage_is_the_power() -> None:
    out, found = one_connector(max_voltage=22, max_amperage=0, max_electric_power=None)
    assert (out["max_voltage"], out["max_amperage"], out["max_electric_power"]) == (0, 0, 22000)
    assert "power_as_voltage" in found


def test_a_fractional_kw_figure_as_voltage_keeps_its_fraction() -> None:
    out, _ = one_connector(max_voltage=7.4, max_amperage=0, max_electric_power=None, power_type="AC_1_PHASE")
    assert (out["max_voltage"], out["max_electric_power"]) == (0, 7400)


@pytest.mark.parametrize(
    "fields",
    [
        {"max_voltage": 22, "max_amperage": 0},  # a power beside it: the voltage is dropped only
        {"max_voltage": 60, "max_amperage": 0, "max_electric_power": None},  # no standard AC power
        {"max_voltage": 50, "max_amperage": 0, "max_electric_power": None, "power_type": "DC", "standard": "GBT_DC"},
        {"max_voltage": 32, "max_amperage": 32, "max_electric_power": None},  # Evio: amperage beside it
    ],
)
def test_a_voltage_below_100_is_stored_as_unknown(fields: dict[str, Any]) -> None:
    out, found = one_connector(**fields)
    assert out["max_voltage"] == 0
    assert "implausible_value" in found and "power_as_voltage" not in found
    assert out.get("max_electric_power") in (None, 22000)


def test_a_derived_voltage_below_100_is_not_stored() -> None:
    # Punkt: 22 kW at 100 A three-phase gives 73 V.
    out, found = one_connector(max_voltage=None, max_amperage=100, max_electric_power=22000)
    assert out["max_voltage"] == 0 and "implausible_value" in found and "derived_voltage" not in found


def test_a_patch_voltage_below_100_is_dropped_not_read_as_power() -> None:
    out, issues = normalize_location_patch({"max_voltage": 22, "last_updated": "2025-06-21T09:22:28Z"}, "connector")
    assert out["max_voltage"] == 0 and "max_electric_power" not in out
    assert "implausible_value" in codes(issues)


@pytest.mark.django_db
@needs_feeds
def test_toger_22_sent_as_voltage_is_stored_as_22_kw() -> None:
    partner = Partner.objects.create(name="Toger", country_code="TR", party_id="TGR")
    ingest_page(partner, "locations", [feed_location("ocpi_2_2_1_locations-toger.json", "75")])
    stored = Connector.objects.filter(evse__location__location_id="75").values_list("max_voltage", "max_electric_power")
    assert stored and set(stored) == {(0, 22000)}


# --- 5. a location stamped in the future ---------------------------------------------------------------------


def stamp(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize("sent", ["+1h", "9999-12-31T23:59:59Z"])
def test_a_location_stamped_in_the_future_is_kept_stamped_with_the_receive_time(sent: str) -> None:
    raw = location(last_updated=stamp(timedelta(hours=1)) if sent == "+1h" else sent)
    before = datetime.now(UTC).replace(microsecond=0)
    out, issues = normalize_location(raw)
    got = datetime.fromisoformat(out["last_updated"].replace("Z", "+00:00"))
    assert before <= got <= datetime.now(UTC)
    assert [(i.path, i.code, i.fixed) for i in issues] == [("last_updated", "implausible_last_updated", True)]
    assert out["evses"][0]["last_updated"] == "2025-06-21T09:22:28Z"  # the children keep their own stamps


def test_an_evse_or_connector_put_stamped_in_the_future_is_kept_too() -> None:
    ahead = stamp(timedelta(hours=1))
    out, issues = normalize_evse(evse(last_updated=ahead))
    assert out["last_updated"] < ahead and "implausible_last_updated" in codes(issues)
    out, issues = normalize_connector(connector(last_updated=ahead))
    assert out["last_updated"] < ahead and "implausible_last_updated" in codes(issues)


def test_a_patch_stamped_in_the_future_is_still_refused() -> None:
    with pytest.raises(Rejected) as exc:
        normalize_location_patch({"name": "x", "last_updated": "9999-01-01T00:00:00Z"}, "location")
    assert exc.value.path == "last_updated" and "future" in exc.value.reason


@pytest.mark.django_db
@needs_feeds
def test_a_real_location_stamped_an_hour_ahead_is_stored_and_not_frozen() -> None:
    partner = Partner.objects.create(name="EZV", country_code="BR", party_id="EZV")
    raw = orjson.loads(orjson.dumps(unwrap_list_payload((FEEDS / "ocpi_2_2_1_locations-ezvolt.json").read_bytes())[0]))
    raw["last_updated"] = stamp(timedelta(hours=1))  # a CPO clock ahead, or local time sent as UTC
    assert ingest_page(partner, "locations", [raw]).rejected == 0
    stored = Location.objects.get(location_id=raw["id"])
    assert stored.last_updated <= datetime.now(UTC)
    # The next, correctly stamped update (a minute on, within the allowed skew) is applied: nothing froze.
    later = {**copy.deepcopy(raw), "name": "Renamed", "last_updated": stamp(timedelta(minutes=1))}
    assert ingest_page(partner, "locations", [later]).rejected == 0
    assert Location.objects.get(location_id=raw["id"]).name == "Renamed"


# --- 6. control and invisible characters ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("Anderra İş Merkezi No:61 İçkapı No:1\tSiirt", "Anderra İş Merkezi No:61 İçkapı No:1 Siirt"),  # Otopriz
        ("Straat 1\r\n  Utrecht", "Straat 1 Utrecht"),
        ("\u200bул. Бажова, 91", "ул. Бажова, 91"),  # Punkt
        ("Иркутская область\u200b, Иркутский район", "Иркутская область, Иркутский район"),  # ITCharge
        ("Station \u202eexe.lanimret", "Station exe.lanimret"),
        ("\u2066Plaza\u2069 \ufeff1", "Plaza 1"),
        ("می\u200cخواهم", "می\u200cخواهم"),  # ZWNJ is Persian spelling
        ("👩\u200d🔧", "👩\u200d🔧"),  # ZWJ makes one emoji
    ],
)
def test_one_line_text_loses_tabs_breaks_and_invisible_characters(sent: str, kept: str) -> None:
    out, issues = normalize_location(location(address=sent, name=sent))
    assert (out["address"], out["name"]) == (kept, kept)
    assert ("control_characters" in codes(issues)) == (sent != kept)


def test_a_name_of_only_zero_width_spaces_is_an_empty_name() -> None:
    out, _ = normalize_location(location(name="\u200b\u200b", city="\ufeff"))
    assert (out["name"], out["city"]) == ("", "")
    out, _ = normalize_location(location(operator={"name": "\u200b"}))
    assert "operator" not in out  # as a BusinessDetails without a name


def test_multi_line_text_keeps_its_line_breaks() -> None:
    # Greems' Hebrew directions put a Waze link on a line of its own.
    text = "בוויז:\nhttps://waze.com/ul/hsv8wrst5r\u202e"
    out, _ = normalize_location(location(directions=[{"language": "he", "text": text}]))
    assert out["directions"][0]["text"] == "בוויז:\nhttps://waze.com/ul/hsv8wrst5r"


def test_the_zone_at_a_position_is_looked_up_once() -> None:
    zone_from_coordinates.cache_clear()
    for _ in range(3):
        normalize_location(location())
    assert zone_from_coordinates.cache_info().misses == 1
