"""A search shows a tariff from its start_date_time up to and including its end_date_time (OCPI 2.2.1
mod_tariffs: "the time after which this tariff is no longer valid"), as quotes and the pricing engine read it,
on PostgreSQL's plain-SQL path and the ORM path alike."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from beckn import catalogue
from beckn.catalogue import SearchFilters, search
from billing.services import tariff_put
from billing.services.driver_pricing import tariffs_for_connector
from emsp.models import Connector, Partner
from emsp.services.catalogue import locations_store
from tests.beckn.bap import TARIFF
from tests.factories import ocpi_location

HERE = SearchFilters(latitude=12.97, longitude=77.59, radius_m=5000)


@pytest.mark.django_db
@pytest.mark.parametrize("fast_path", [True, False])
def test_a_tariff_is_shown_up_to_and_including_its_end(monkeypatch: pytest.MonkeyPatch, fast_path: bool) -> None:
    monkeypatch.setattr(catalogue, "FAST_PATH", fast_path)
    partner = Partner.objects.create(name="CPO A", country_code="IN", party_id="CPA", state="CONNECTED")
    location = ocpi_location("IN", "CPA", "LOC1", evses=1, latitude=12.97, longitude=77.59)
    location["evses"][0]["connectors"][0]["tariff_ids"] = ["T1"]  # type: ignore[index]
    locations_store(partner, [location])
    start = timezone.now().replace(microsecond=0)
    end = start + timedelta(hours=1)
    energy = {"type": "ENERGY", "price": "18", "vat": 18, "step_size": 1}
    tariff_put(partner, {**TARIFF, "elements": [{"price_components": [energy]}],
                         "start_date_time": start.isoformat(), "end_date_time": end.isoformat()})  # fmt: skip

    def shown(at: object) -> set[Decimal | None]:
        return {hit.energy_price for hit in search(HERE, now=at)}  # type: ignore[arg-type]

    assert shown(start - timedelta(microseconds=1)) == {None}
    assert shown(start) == {Decimal("18")}
    assert shown(end) == {Decimal("18")}
    assert shown(end + timedelta(microseconds=1)) == {None}
    connector = Connector.objects.get()
    assert [t.tariff_id for t in tariffs_for_connector(connector, end)] == ["T1"]  # what a quote reads
