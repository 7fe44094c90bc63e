"""What drivers choose a charger by (issue 13, point 5): opening hours, facilities, parking, accessibility,
images, operator, energy mix, directions and help, rendered in core 1.1.0 terms and filterable in search.
Opening hours are checked as pure rules; rendering and every filter through a signed search whose on_search
is validated against the official OpenAPI."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from beckn.catalogue_details import images, is_green, parse_location_filters, renewable_share
from beckn.errors import BecknRequestError
from billing.services import tariff_put
from emsp import opening_hours
from emsp.datetimes import format_datetime
from emsp.models import Partner
from emsp.services.catalogue import locations_store
from tests.beckn.bap import TARIFF
from tests.beckn.test_actions import last, search_message
from tests.factories import ocpi_location

KOLKATA = "Asia/Kolkata"


def hours(value: Any, zone: str = KOLKATA) -> opening_hours.Hours:
    return opening_hours.read_hours(value, zone)


def at(text: str, zone: str = KOLKATA) -> datetime:
    """A local wall-clock time in `zone` as an aware datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone))


# --- opening hours, as pure rules -------------------------------------------------------------------------

# 2026-01-05 is a Monday; 2026-01-09 a Friday.
WEEKDAYS_8_TO_20 = {
    "twentyfourseven": False,
    "regular_hours": [{"weekday": d, "period_begin": "08:00", "period_end": "20:00"} for d in range(1, 6)],
}


def test_it_reads_twentyfourseven_as_always_open() -> None:
    always = hours({"twentyfourseven": True})
    assert opening_hours.is_open(always, at("2026-01-05T03:00")) is True
    assert opening_hours.is_open(always, at("2026-01-10T23:59")) is True
    assert opening_hours.next_change(always, at("2026-01-05T03:00")) is None


def test_it_is_closed_outside_the_regular_hours() -> None:
    weekdays = hours(WEEKDAYS_8_TO_20)
    assert opening_hours.is_open(weekdays, at("2026-01-05T08:00")) is True
    assert opening_hours.is_open(weekdays, at("2026-01-05T19:59")) is True
    assert opening_hours.is_open(weekdays, at("2026-01-05T20:00")) is False
    assert opening_hours.is_open(weekdays, at("2026-01-05T07:59")) is False
    assert opening_hours.is_open(weekdays, at("2026-01-10T12:00")) is False  # Saturday
    assert opening_hours.next_change(weekdays, at("2026-01-05T12:00")) == at("2026-01-05T20:00")
    assert opening_hours.next_change(weekdays, at("2026-01-09T21:00")) == at("2026-01-12T08:00")  # Fri → Mon
    assert opening_hours.week_summary(weekdays).startswith("Mon 08:00-20:00; Tue 08:00-20:00")
    assert opening_hours.week_summary(weekdays).endswith("Sat closed; Sun closed")


def test_it_keeps_a_period_crossing_midnight_open_into_the_next_day() -> None:
    nights = hours(
        {
            "twentyfourseven": False,
            "regular_hours": [
                {"weekday": 5, "period_begin": "22:00", "period_end": "06:00"},  # Friday night
                {"weekday": 7, "period_begin": "20:00", "period_end": "02:00"},  # Sunday night, into Monday
                {"weekday": 3, "period_begin": "18:00", "period_end": "24:00"},  # Wednesday until midnight
            ],
        }
    )
    assert opening_hours.is_open(nights, at("2026-01-09T21:59")) is False
    assert opening_hours.is_open(nights, at("2026-01-09T23:00")) is True
    assert opening_hours.is_open(nights, at("2026-01-10T05:59")) is True  # Saturday morning
    assert opening_hours.is_open(nights, at("2026-01-10T06:00")) is False
    assert opening_hours.is_open(nights, at("2026-01-12T01:30")) is True  # Monday, from Sunday (week wraps)
    assert opening_hours.is_open(nights, at("2026-01-07T23:59")) is True
    assert opening_hours.is_open(nights, at("2026-01-08T00:00")) is False
    assert opening_hours.day_periods(nights, 5) == ["22:00-06:00"]
    assert opening_hours.day_periods(nights, 3) == ["18:00-24:00"]


def test_it_closes_for_an_exceptional_closing_and_opens_for_an_exceptional_opening() -> None:
    closing = {"period_begin": "2026-01-05T00:00:00Z", "period_end": "2026-01-05T06:00:00Z"}
    opening = {"period_begin": "2026-01-10T04:30:00Z", "period_end": "2026-01-10T08:30:00Z"}  # Sat 10:00-14:00 IST
    always = hours({"twentyfourseven": True, "exceptional_closings": [closing]})
    assert opening_hours.is_open(always, datetime(2026, 1, 5, 3, tzinfo=UTC)) is False
    assert opening_hours.is_open(always, datetime(2026, 1, 5, 6, tzinfo=UTC)) is True
    assert opening_hours.next_change(always, datetime(2026, 1, 5, 3, tzinfo=UTC)) == datetime(2026, 1, 5, 6, tzinfo=UTC)
    weekdays = hours({**WEEKDAYS_8_TO_20, "exceptional_openings": [opening], "exceptional_closings": [closing]})
    assert opening_hours.is_open(weekdays, at("2026-01-10T12:00")) is True  # Saturday, opened exceptionally
    assert opening_hours.is_open(weekdays, at("2026-01-10T15:00")) is False
    assert opening_hours.is_open(weekdays, at("2026-01-05T09:00")) is False  # Monday, closed exceptionally
    # A closing overrules an opening at the same time (mod_locations: "Overwriting … exceptional_openings").
    both = hours({"twentyfourseven": False, "exceptional_openings": [closing], "exceptional_closings": [closing]})
    assert opening_hours.is_open(both, datetime(2026, 1, 5, 3, tzinfo=UTC)) is False


def test_the_next_change_on_a_day_the_clocks_jump_at_midnight_is_when_they_jump() -> None:
    """America/Santiago skipped from 00:00 to 01:00 on 2024-09-08 (04:00 UTC): a Saturday period ending at 00:30
    closes at the jump. The change was computed from 00:30 read with the old offset, 04:30 UTC (01:30 local),
    half an hour after the site had closed by `is_open`'s own reckoning."""
    santiago = hours(
        {
            "twentyfourseven": False,
            "regular_hours": [
                {"weekday": 6, "period_begin": "00:00", "period_end": "22:30"},
                {"weekday": 6, "period_begin": "22:00", "period_end": "00:30"},
            ],
        },
        "America/Santiago",
    )
    now = datetime(2024, 9, 7, 8, 30, tzinfo=UTC)
    jump = datetime(2024, 9, 8, 4, 0, tzinfo=UTC)
    assert opening_hours.is_open(santiago, jump - timedelta(seconds=1)) is True
    assert opening_hours.is_open(santiago, jump) is False
    assert opening_hours.next_change(santiago, now) == jump
    # A boundary on an ordinary day is the wall time read with its offset.
    assert opening_hours.next_change(santiago, jump) == datetime(2024, 9, 14, 3, 0, tzinfo=UTC)  # Sat 00:00 -03


@pytest.mark.parametrize(
    ("zone", "weekday", "begin", "end", "moment", "change"),
    [
        # Amsterdam went back from 03:00 to 02:00 on Sunday 2024-10-27 (01:00 UTC): 02:00-02:30 came twice.
        ("Europe/Amsterdam", 6, "22:00", "02:30", datetime(2024, 10, 27, 0, 40, tzinfo=UTC), "2024-10-27T01:00"),
        ("Europe/Amsterdam", 7, "02:30", "05:00", datetime(2024, 10, 27, 0, 40, tzinfo=UTC), "2024-10-27T01:00"),
        ("Europe/Amsterdam", 7, "02:30", "05:00", datetime(2024, 10, 27, 1, 0, tzinfo=UTC), "2024-10-27T01:30"),
        # Santiago went back from 24:00 to 23:00 on Saturday 2024-04-06 (03:00 UTC).
        ("America/Santiago", 6, "20:00", "23:30", datetime(2024, 4, 7, 2, 40, tzinfo=UTC), "2024-04-07T03:00"),
    ],
)
def test_the_next_change_in_an_hour_that_comes_twice(
    zone: str, weekday: int, begin: str, end: str, moment: datetime, change: str
) -> None:
    """The state changes again when the clocks go back and at the second reading of a boundary in the repeated
    hour: both were missed (the next change was reported a week or hours later than `is_open` has it)."""
    period = {"weekday": weekday, "period_begin": begin, "period_end": end}
    week = hours({"twentyfourseven": False, "regular_hours": [period]}, zone)
    expected = datetime.fromisoformat(change).replace(tzinfo=UTC)
    assert opening_hours.is_open(week, expected) != opening_hours.is_open(week, moment)
    assert opening_hours.next_change(week, moment) == expected


def test_it_evaluates_the_hours_in_the_location_time_zone() -> None:
    moment = datetime(2026, 1, 5, 2, 45, tzinfo=UTC)  # Monday 08:15 in Kolkata, 02:45 in UTC, Sunday in New York
    assert opening_hours.is_open(hours(WEEKDAYS_8_TO_20, KOLKATA), moment) is True
    assert opening_hours.is_open(hours(WEEKDAYS_8_TO_20, "UTC"), moment) is False
    assert opening_hours.is_open(hours(WEEKDAYS_8_TO_20, "America/New_York"), moment) is False
    assert hours(WEEKDAYS_8_TO_20, "Asia/Kuala Lumpur").zone.key == "Asia/Kuala_Lumpur"
    assert hours(WEEKDAYS_8_TO_20, "Mars/Olympus_Mons").zone.key == "UTC"  # unusable: UTC, no crash


@pytest.mark.parametrize(
    "value",
    [
        None,
        "24/7",
        [],
        {"twentyfourseven": False},
        {"twentyfourseven": "no", "regular_hours": "08-20"},
        {"regular_hours": [{"weekday": 9, "period_begin": "08:00", "period_end": "20:00"}]},
        {"regular_hours": [{"weekday": 1, "period_begin": "25:00", "period_end": "20:00"}, 7, None]},
        {"twentyfourseven": None, "exceptional_closings": [{"period_begin": "soon"}, "x"]},
    ],
)
def test_it_reads_unusable_hours_as_unknown(value: Any) -> None:
    unknown = hours(value)
    assert opening_hours.is_open(unknown, at("2026-01-05T12:00")) is None
    assert opening_hours.next_change(unknown, at("2026-01-05T12:00")) is None


def test_it_skips_only_the_unusable_entries() -> None:
    mixed = hours(
        {
            "twentyfourseven": "false",
            "regular_hours": [
                {"weekday": "1", "period_begin": "8:00", "period_end": "20:00:00"},
                {"weekday": True, "period_begin": "08:00", "period_end": "20:00"},
                {"weekday": 2, "period_begin": "noon", "period_end": "20:00"},
            ],
        }
    )
    assert opening_hours.is_open(mixed, at("2026-01-05T09:00")) is True
    assert opening_hours.is_open(mixed, at("2026-01-06T13:00")) is False


# --- reading the energy mix, images and the filter vocabulary ----------------------------------------------


def test_it_computes_the_renewable_share_from_the_sources() -> None:
    mix = {
        "is_green_energy": False,
        "energy_sources": [
            {"source": "SOLAR", "percentage": 50},
            {"source": "wind", "percentage": "35.5"},
            {"source": "COAL", "percentage": 14.5},
            {"source": "MOONLIGHT", "percentage": 99},
            {"source": "WATER", "percentage": "lots"},
            "GAS",
        ],
    }
    assert renewable_share(mix) == Decimal("85.5")
    assert not is_green(mix)
    assert renewable_share({"is_green_energy": True}) == 100  # OCPI: "100% from regenerative sources"
    assert is_green({"is_green_energy": "true"})
    assert renewable_share({"is_green_energy": False}) is None
    assert renewable_share(None) is None
    assert renewable_share({"energy_sources": "SOLAR"}) is None


def test_it_renders_only_http_images_with_their_sizes_and_thumbnails() -> None:
    rendered = images(
        [
            {"url": "javascript:alert(1)", "category": "LOCATION"},
            5,
            {"url": "https://cpo.example/logo.png", "category": "OPERATOR", "type": "png"},
            {
                "url": "https://cpo.example/site.jpg",
                "thumbnail": "https://cpo.example/site-t.jpg",
                "category": "LOCATION",
                "width": 800,
                "height": 600,
            },
            {"url": "https://cpo.example/odd.jpg", "width": "wide", "category": "CHARGER"},
            {"url": "http://exa mple/x.jpg"},
        ]
    )
    assert rendered == [
        {"url": "https://cpo.example/site.jpg", "size_type": "custom", "width": "800", "height": "600"},
        {"url": "https://cpo.example/site-t.jpg", "size_type": "xs"},
        {"url": "https://cpo.example/odd.jpg"},
        {"url": "https://cpo.example/logo.png"},
    ]
    assert images("not a list") == []


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ({"open-now": "true"}, {"open_now": True}),
        ({"is-open": "yes"}, {"open_now": True}),
        ({"opening-hours": "open-at-arrival"}, {"open_at_arrival": True}),
        ({"opening-hours": "24/7"}, {"twentyfourseven": True}),
        ({"24x7": "1"}, {"twentyfourseven": True}),
        ({"min-renewable-share": ">= 80 %"}, {"min_renewable_pct": Decimal(80)}),
        ({"renewable": "at least 50"}, {"min_renewable_pct": Decimal(50)}),
        ({"green-energy": "true"}, {"green_only": True}),
        ({"facilities": "wifi, Restaurant"}, {"facilities": [frozenset({"WIFI"}), frozenset({"RESTAURANT"})]}),
        ({"amenities": "food"}, {"facilities": [frozenset({"RESTAURANT", "CAFE"})]}),
        ({"has-wi-fi": "true"}, {"facilities": [frozenset({"WIFI"})]}),
        ({"has-wifi": "false"}, {"facilities": []}),
        ({"parking-type": "garage"}, {"parking_types": frozenset({"PARKING_GARAGE", "UNDERGROUND_GARAGE"})}),
        ({"parking-type": "ON_STREET"}, {"parking_types": frozenset({"ON_STREET"})}),
        ({"wheelchair-accessible": "true"}, {"accessible": True}),
    ],
)
def test_it_reads_a_liberal_filter_vocabulary(tags: dict[str, str], expected: dict[str, Any]) -> None:
    filters = parse_location_filters(tags)
    for name, value in expected.items():
        assert getattr(filters, name) == value


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        ({"open-now": "maybe"}, "true or false"),
        ({"min-renewable-share": "lots"}, "percentage"),
        ({"min-renewable-share": "120%"}, "between 0 and 100"),
        ({"facilities": "restroom"}, "OCPI 2.2.1"),
        ({"has-toilet": "true"}, "OCPI 2.2.1"),
        ({"facilities": "helipad"}, "unknown facility"),
        ({"parking-type": "rooftop"}, "unknown parking type"),
        ({"opening-hours": "sometimes"}, "open-now"),
    ],
)
def test_it_refuses_bad_filter_values_naming_the_tag(tags: dict[str, str], message: str) -> None:
    with pytest.raises(BecknRequestError) as caught:
        parse_location_filters(tags)
    assert caught.value.code == "30000"
    assert caught.value.path == f"message.intent.tags({next(iter(tags))})"
    assert message in caught.value.message


# --- rendering and filters through a signed search ---------------------------------------------------------


def put_location(
    partner: Partner, location_id: str, north_m: float, evse: dict[str, Any] | None = None, **fields: Any
) -> None:
    """An OCPI location `north_m` metres north of the search centre with these fields (and EVSE fields)."""
    location = ocpi_location(
        partner.country_code, partner.party_id, location_id, evses=1, latitude=12.971599 + north_m / 111_000
    )
    location.update(fields)
    location["evses"][0].update(evse or {})  # type: ignore[index]
    locations_store(partner, [location])


def now_utc(hours_from_now: float = 0) -> str:
    return format_datetime(timezone.now() + timedelta(hours=hours_from_now), "seconds")


RICH = {
    "facilities": ["WIFI", "RESTAURANT", "TELEPORTER", "wifi"],
    "parking_type": "PARKING_GARAGE",
    "directions": [
        {"language": "hi", "text": "बाएँ मुड़ें"},
        {"language": "en", "text": "Level -1, follow the green signs"},
    ],
    "opening_times": {"twentyfourseven": True},
    "charging_when_closed": True,
    "images": [{"url": "https://cpo.example/site.jpg", "category": "LOCATION", "type": "jpeg"}],
    "operator": {"name": "Volt Ops", "website": "https://volt.example", "logo": {"url": "https://volt.example/l.png"}},
    "suboperator": {"name": "Sub Ops"},
    "owner": {"name": "Mall Owner Ltd"},
    "energy_mix": {
        "is_green_energy": False,
        "energy_sources": [{"source": "SOLAR", "percentage": 60}, {"source": "WIND", "percentage": 25}],
        "supplier_name": "Green Grid",
        "energy_product_name": "Eco Plus",
    },
}
RICH_EVSE = {
    "parking_restrictions": ["DISABLED", "EV_ONLY"],
    "floor_level": "-1",
    "physical_reference": "7",
    "directions": [{"language": "en", "text": "Bay 7 next to the lift"}],
    "images": [{"url": "https://cpo.example/charger.jpg", "category": "CHARGER", "type": "jpeg"}],
}


def groups_of(item: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {g["descriptor"]["code"]: {t["descriptor"]["code"]: t["value"] for t in g["list"]} for g in item["tags"]}


def items_by_location(bap: Any) -> dict[str, dict[str, Any]]:
    providers = last(bap, "on_search")["message"]["catalog"]["providers"]  # validated against the OpenAPI
    return {i["id"].split("/")[0]: i for p in providers for i in p["items"]}


@pytest.mark.django_db
def test_it_renders_every_attribute_in_core_terms(bap: Any, network: Partner) -> None:
    Partner.objects.filter(pk=network.pk).update(support_phone="+91 80 1234 5678", website="https://cpa.example")
    put_location(network, "RICH", 100, evse=RICH_EVSE, **RICH)
    bap("search", search_message())
    catalog = last(bap, "on_search")["message"]["catalog"]
    provider = catalog["providers"][0]
    location = next(loc for loc in provider["locations"] if loc["id"] == "LOC-RICH")
    assert location["descriptor"]["long_desc"] == "Level -1, follow the green signs"
    assert location["descriptor"]["images"] == [{"url": "https://cpo.example/site.jpg"}]
    item = next(i for i in provider["items"] if i["id"].startswith("RICH/"))
    assert item["descriptor"]["images"] == [{"url": "https://cpo.example/charger.jpg"}]
    groups = groups_of(item)
    assert groups["connector-specifications"]["connector-type"] == "CCS2"  # the existing groups stay first
    assert groups["facilities"] == {"wifi": "true", "restaurant": "true"}
    hours_tags = groups["opening-hours"]
    assert hours_tags["open-now"] == "true"
    assert hours_tags["twentyfourseven"] == "true"
    assert hours_tags["time-zone"] == KOLKATA
    assert hours_tags["charging-when-closed"] == "true"
    assert groups["parking"] == {
        "parking-type": "PARKING_GARAGE",
        "parking-restrictions": "DISABLED,EV_ONLY",
        "floor-level": "-1",
        "physical-reference": "7",
        "evse-directions": "Bay 7 next to the lift",
    }
    assert groups["accessibility"]["accessible-parking"] == "true"
    assert groups["energy-mix"] == {
        "is-green-energy": "false",
        "renewable-share": "85%",
        "source-solar": "60%",
        "source-wind": "25%",
        "supplier": "Green Grid",
        "product": "Eco Plus",
        "basis": "location",
    }
    assert groups["operator"] == {
        "operator": "Volt Ops",
        "operator-website": "https://volt.example",
        "operator-logo": "https://volt.example/l.png",
        "suboperator": "Sub Ops",
        "owner": "Mall Owner Ltd",
    }
    assert groups["help"]["cpo-phone"] == "+91 80 1234 5678"
    assert groups["help"]["cpo-website"] == "https://cpa.example"
    assert groups["help"]["emsp-phone"]
    assert sorted(item["category_ids"]) == ["accessible-parking", "open-24-7"]
    assert {c["id"] for c in provider["categories"]} == {"accessible-parking", "open-24-7"}
    # A location without details gets only what it has: no empty groups, no categories.
    plain = next(i for i in provider["items"] if i["id"].startswith("NEAR/"))
    assert set(groups_of(plain)) == {"connector-specifications", "tariff", "opening-hours", "help"}
    assert groups_of(plain)["opening-hours"] == {"time-zone": KOLKATA, "hours-known": "false"}
    assert "category_ids" not in plain


@pytest.mark.django_db
def test_it_renders_regular_hours_and_exceptions(bap: Any, network: Partner) -> None:
    today = timezone.now().astimezone(ZoneInfo(KOLKATA)).isoweekday()
    tomorrow = today % 7 + 1
    closing = {"period_begin": now_utc(24 * 3), "period_end": now_utc(24 * 3 + 2)}
    put_location(
        network,
        "SHOP",
        100,
        opening_times={
            "twentyfourseven": False,
            "regular_hours": [{"weekday": tomorrow, "period_begin": "09:00", "period_end": "18:00"}],
            "exceptional_closings": [closing, {"period_begin": now_utc(-48), "period_end": now_utc(-47)}],
        },
    )
    bap("search", search_message())
    tags = groups_of(items_by_location(bap)["SHOP"])["opening-hours"]
    assert tags["open-now"] == "false"
    assert tags["twentyfourseven"] == "false"
    assert tags["today"] == "closed"
    assert "09:00-18:00" in tags["regular-hours"]
    assert "T09:00+05:30" in tags["opens-at"]
    assert tags["exceptional-closing"] == f"{closing['period_begin']}/{closing['period_end']}"  # past ones left out


@pytest.mark.django_db
def test_it_tolerates_malformed_stored_data(bap: Any, network: Partner) -> None:
    put_location(
        network,
        "JUNK",
        100,
        evse={
            "parking_restrictions": "DISABLED",
            "images": [{"url": 12}, None, {"url": "ftp://x/y.jpg"}],
            "floor_level": {"level": 1},
            "directions": "straight on\x07",
        },
        facilities="WIFI",
        parking_type=42,
        directions={"text": 5},
        opening_times=[{"weekday": 1}],
        charging_when_closed="sometimes",
        images="https://x/y.jpg",
        operator="Acme",
        suboperator={"website": "https://no-name.example"},
        owner={"name": ["x"]},
        energy_mix={"energy_sources": "SOLAR", "is_green_energy": "perhaps", "supplier_name": 7},
    )
    bap("search", search_message(tags=[{"descriptor": {"code": "open-now"}, "value": "true"}]))
    item = items_by_location(bap)["JUNK"]  # kept: its hours are unknown, not closed
    groups = groups_of(item)
    assert set(groups) == {"connector-specifications", "tariff", "opening-hours", "parking", "help"}
    assert groups["parking"] == {"evse-directions": "straight on"}
    assert "images" not in item["descriptor"]
    assert "category_ids" not in item
    for tags in (
        [{"descriptor": {"code": "green-energy"}, "value": "true"}],
        [{"descriptor": {"code": "facilities"}, "value": "wifi"}],
        [{"descriptor": {"code": "accessible"}, "value": "true"}],
        [{"descriptor": {"code": "parking-type"}, "value": "street"}],
    ):
        bap("search", search_message(tags=tags))
        assert "JUNK" not in items_by_location(bap)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("code", "value", "expected"),
    [
        ("open-now", "true", {"NEAR", "FAR", "OPEN", "GREEN", "WIFI", "STREET", "ACCESS", "MIX50"}),
        ("opening-hours", "24/7", {"OPEN", "GREEN"}),
        ("min-renewable-share", ">= 80 %", {"GREEN", "MIX85", "CLOSED"}),
        ("renewable", "50", {"GREEN", "MIX85", "CLOSED", "MIX50"}),
        ("green-energy", "true", {"GREEN"}),
        ("facilities", "wifi", {"WIFI"}),
        ("amenities", "food", {"WIFI", "OPEN"}),
        ("has-wifi", "yes", {"WIFI"}),
        ("parking-type", "street", {"STREET"}),
        ("accessible", "true", {"ACCESS"}),
    ],
)
def test_each_filter_works_through_a_signed_search(
    bap: Any, network: Partner, code: str, value: str, expected: set[str]
) -> None:
    put_location(network, "OPEN", 50, opening_times={"twentyfourseven": True}, facilities=["CAFE"])
    put_location(
        network,
        "CLOSED",
        60,
        opening_times={
            "twentyfourseven": True,
            "exceptional_closings": [{"period_begin": now_utc(-1), "period_end": now_utc(1)}],
        },
        energy_mix={"is_green_energy": False, "energy_sources": [{"source": "WIND", "percentage": 85}]},
    )
    put_location(network, "GREEN", 70, opening_times={"twentyfourseven": True}, energy_mix={"is_green_energy": True})
    put_location(
        network,
        "MIX85",
        80,
        opening_times={
            "twentyfourseven": False,
            "regular_hours": [],
            "exceptional_closings": [{"period_begin": now_utc(-1), "period_end": now_utc(1)}],
        },
        energy_mix={"is_green_energy": False, "energy_sources": [{"source": "SOLAR", "percentage": 85}]},
    )
    put_location(
        network,
        "MIX50",
        90,
        energy_mix={"is_green_energy": False, "energy_sources": [{"source": "WATER", "percentage": "50"}]},
    )
    put_location(network, "WIFI", 100, facilities=["WIFI", "RESTAURANT"])
    put_location(network, "STREET", 110, parking_type="ON_STREET")
    put_location(network, "ACCESS", 120, evse={"parking_restrictions": ["DISABLED"]})
    bap("search", search_message(tags=[{"descriptor": {"code": code}, "value": value}]))
    assert set(items_by_location(bap)) == expected


@pytest.mark.django_db
def test_open_at_arrival_uses_the_time_the_driver_gives(bap: Any, network: Partner) -> None:
    closes_later = {"period_begin": now_utc(2), "period_end": now_utc(4)}
    put_location(network, "LATER", 50, opening_times={"twentyfourseven": True, "exceptional_closings": [closes_later]})
    put_location(network, "ALWAYS", 60, opening_times={"twentyfourseven": True})

    def search_arriving(timestamp: str | None) -> set[str]:
        message = search_message(tags=[{"descriptor": {"code": "open-at-arrival"}, "value": "true"}])
        if timestamp:
            message["intent"]["fulfillment"]["stops"][0]["time"] = {"timestamp": timestamp, "duration": "PT30M"}
        bap("search", message)
        return set(items_by_location(bap)) & {"LATER", "ALWAYS"}

    assert search_arriving(None) == {"LATER", "ALWAYS"}  # no time given: now
    assert search_arriving(now_utc(3)) == {"ALWAYS"}
    assert search_arriving(now_utc(5)) == {"LATER", "ALWAYS"}


@pytest.mark.django_db
def test_it_reads_more_candidates_when_the_filters_drop_many(bap: Any, network: Partner) -> None:
    for n in range(12):
        put_location(network, f"PLAIN{n}", 10 + n)
    put_location(network, "CAFE", 300, facilities=["CAFE"])
    bap(
        "search",
        search_message(
            tags=[
                {"descriptor": {"code": "facilities"}, "value": "cafe"},
                {"descriptor": {"code": "limit"}, "value": "2"},
            ]
        ),
    )
    assert set(items_by_location(bap)) == {"CAFE"}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("code", "value", "words"),
    [
        ("has-restroom", "true", "OCPI 2.2.1"),
        ("facilities", "toilet", "OCPI 2.2.1"),
        ("min-renewable-share", "most", "percentage"),
        ("open-now", "perhaps", "true or false"),
    ],
)
def test_a_filter_we_cannot_apply_is_an_error_callback_not_a_500(bap: Any, code: str, value: str, words: str) -> None:
    response = bap("search", search_message(tags=[{"descriptor": {"code": code}, "value": value}]))
    assert response.status_code == 200
    body = last(bap, "on_search")
    assert body["error"]["code"] == "30000"
    assert body["error"]["paths"] == f"message.intent.tags({code})"
    assert words in body["error"]["message"]


@pytest.mark.django_db
def test_the_energy_mix_of_the_tariff_counts_when_the_location_has_none(bap: Any, network: Partner) -> None:
    tariff_put(network, {**TARIFF, "id": "TG", "energy_mix": {"is_green_energy": True, "supplier_name": "Sun Co"}})
    location = ocpi_location(network.country_code, network.party_id, "TGREEN", evses=1, tariff_ids=["TG"])
    locations_store(network, [location])
    bap("search", search_message(tags=[{"descriptor": {"code": "green-energy"}, "value": "true"}]))
    items = items_by_location(bap)
    assert set(items) == {"TGREEN"}
    assert groups_of(items["TGREEN"])["energy-mix"] == {
        "is-green-energy": "true",
        "renewable-share": "100%",
        "supplier": "Sun Co",
        "basis": "tariff",
    }
    assert items["TGREEN"]["category_ids"] == ["green-energy"]
