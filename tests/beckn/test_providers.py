"""Providers are the CPO parties, not the partners they came through: a hub (or a partner granted other parties)
brings several parties' locations, whose ids are unique within a party only (mod_locations). Each party is its
own provider, so every location, fulfillment and item id is unique within its provider and `select` books
what the catalogue showed."""

from __future__ import annotations

from typing import Any

import pytest

from billing.services import tariff_put
from emsp.models import Partner, PartnerParty
from emsp.services.catalogue import locations_store
from tests.beckn.bap import TARIFF
from tests.beckn.test_actions import last, search_message
from tests.factories import ocpi_location

pytestmark = pytest.mark.django_db


@pytest.fixture
def second_party(network: Partner) -> Partner:
    """The same partner brings party IN*CPB too, with a location of the same id as one of IN*CPA's."""
    PartnerParty.objects.create(partner=network, country_code="IN", party_id="CPB")
    location = ocpi_location("IN", "CPB", "NEAR", evses=1)
    location["evses"][0]["connectors"][0].update(standard="CHADEMO", max_electric_power=50000)  # type: ignore[index]
    locations_store(network, [location])
    tariff_put(network, {**TARIFF, "party_id": "CPB"})
    return network


def _providers(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["id"]: p for p in body["message"]["catalog"]["providers"]}


def test_each_party_is_a_provider_whose_ids_are_unique(bap: Any, second_party: Partner) -> None:
    bap("search", search_message())
    providers = _providers(last(bap, "on_search"))
    assert {"IN*CPA", "IN*CPB"} <= set(providers)
    for provider in providers.values():
        for key in ("items", "locations", "fulfillments"):
            ids = [entry["id"] for entry in provider[key]]
            assert len(ids) == len(set(ids)), (provider["id"], key, ids)
    assert [i["id"] for i in providers["IN*CPB"]["items"]] == ["NEAR/NEAR-E1/1"]
    assert "CHAdeMO" in providers["IN*CPB"]["items"][0]["descriptor"]["name"]
    assert providers["IN*CPB"]["descriptor"]["name"].startswith("IN*CPB")


def test_select_books_the_item_of_the_provider_named(bap: Any, second_party: Partner) -> None:
    for party, connector in (("IN*CPB", "CHAdeMO"), ("IN*CPA", "CCS2")):
        bap("select", {"order": {"provider": {"id": party}, "items": [{"id": "NEAR/NEAR-E1/1"}]}})
        order = last(bap, "on_select")["message"]["order"]
        assert order["provider"]["id"] == party
        assert connector in str(order["items"][0]["tags"]), order["items"][0]


def test_a_search_for_one_provider_shows_that_party_only(bap: Any, second_party: Partner) -> None:
    message = search_message()
    message["intent"]["provider"] = {"id": "IN*CPB"}
    bap("search", message)
    assert set(_providers(last(bap, "on_search"))) == {"IN*CPB"}
