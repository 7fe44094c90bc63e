"""What a signed search serves of real-feed locations the normaliser had stored wrongly: ITCharge's Sunday
(weekday 0) closed, a time zone five hours off, a charger in the Gulf of Guinea, an address with a TAB. The feeds
are read in place (../shared)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from emsp.models import Partner
from ocpi.normalize import unwrap_list_payload
from ocpi.sync import ingest_page
from tests.beckn.test_actions import last, search_message
from tests.conftest import shared_dir

FEEDS = shared_dir() / "data" / "ocm" / "ocpi-feeds"

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(not FEEDS.is_dir(), reason=f"real CPO feeds not found at {FEEDS}"),
]

ITCHARGE = "ocpi_2_2_1_locations-itcharge.json"


def feed_location(feed: str, location_id: str) -> dict[str, Any]:
    objects = unwrap_list_payload((FEEDS / feed).read_bytes())
    return next(o for o in objects if str(o.get("id")) == location_id)


def search_at(bap: Any, gps: str) -> dict[str, Any]:
    bap("search", search_message(gps=gps, radius_km="1"))
    return last(bap, "on_search")["message"]["catalog"]  # OpenAPI-validated


def serve(bap: Any, network: Partner, feed: str, location_id: str) -> dict[str, Any]:
    """The catalogue's location and the opening-hours tags of its first item, after a search around it."""
    raw = feed_location(feed, location_id)
    raw["country_code"], raw["party_id"] = network.country_code, network.party_id
    ingest_page(network, "locations", [raw])
    catalog = search_at(bap, f"{float(raw['coordinates']['latitude'])},{float(raw['coordinates']['longitude'])}")
    provider = catalog["providers"][0]
    place = next(loc for loc in provider["locations"] if loc["id"] == f"LOC-{location_id}")
    item = next(i for i in provider["items"] if i["id"].startswith(f"{location_id}/"))
    tags = {g["descriptor"]["code"]: {t["descriptor"]["code"]: t["value"] for t in g["list"]} for g in item["tags"]}
    return {"location": place, "tags": tags}


def test_an_itcharge_site_open_on_day_0_is_served_open_on_sunday(bap: Any, network: Partner) -> None:
    got = serve(bap, network, ITCHARGE, "b82c2715-34d2-4bb7-83cd-cac7ac789d21")
    week = got["tags"]["opening-hours"]["regular-hours"]
    assert "Sun closed" not in week and "Sun" in week, week


def test_nizhnevartovsk_is_served_in_its_own_time_zone(bap: Any, network: Partner) -> None:
    got = serve(bap, network, ITCHARGE, "f5babeb2-f658-4957-b837-c5ca8762fbf0")  # sent Etc/GMT+5, i.e. UTC-5
    assert got["tags"]["opening-hours"]["time-zone"] == "Asia/Yekaterinburg"


def test_a_site_sent_at_0_minus_1_is_not_served(bap: Any, network: Partner) -> None:
    raw = feed_location(ITCHARGE, "b6b4c5bd-8473-476b-a6a8-0712ba429453")
    raw["country_code"], raw["party_id"] = network.country_code, network.party_id
    assert ingest_page(network, "locations", [raw]).rejected == 1
    providers = search_at(bap, "0.000000,-1.000000").get("providers") or []
    assert not [loc for p in providers for loc in p.get("locations", []) if loc["id"] == f"LOC-{raw['id']}"]


def test_an_address_with_a_tab_is_served_on_one_line(bap: Any, network: Partner) -> None:
    got = serve(bap, network, "ocpi_2_2_locations-otopriz.json", "1056000601")  # "... İçkapı No:1<TAB>Siirt"
    assert "İçkapı No:1 Siirt" in got["location"]["address"]
    assert "\t" not in orjson.dumps(got["location"]).decode()
