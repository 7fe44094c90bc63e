"""The party a tariff is stored under is the one its OCPI object names, as the normaliser reads it: `ocpi_import`
grants that party (not the file's spelling of it), and the console cannot move a tariff to another one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from billing.models import Tariff
from billing.services import records
from emsp.models import Partner, PartnerParty
from ocpi.normalize import normalize_tariff

pytestmark = pytest.mark.django_db


def spec_tariff(spec_example: Callable[[str], Any]) -> dict[str, Any]:
    """The spec's simple per-kWh tariff without its party, which each test gives it."""
    raw = spec_example("tariff_8_simple_025kwh.json")
    return {k: v for k, v in raw.items() if k not in ("country_code", "party_id")}


# -- ocpi_import grants the party the normaliser stores under ------------------------------------------------------


def test_ocpi_import_grants_the_party_it_reads(tmp_path: Path, spec_example: Callable[[str], Any]) -> None:
    base = spec_tariff(spec_example)
    f = tmp_path / "t.json"
    f.write_bytes(
        orjson.dumps(
            [
                {**base, "id": "T-AUT", "country_code": "AUT", "party_id": "ABC"},  # alpha-3 Austria, not AU
                {**base, "id": "T-CAMEL", "countryCode": "DE", "partyId": "DEF"},  # camelCase, read as such
            ]
        )
    )
    call_command("ocpi_import", str(f), "--partner", "NL*IMP", "--module", "tariffs", verbosity=0)
    granted = sorted(PartnerParty.objects.values_list("country_code", "party_id"))
    assert ("AU", "ABC") not in granted
    assert ("AT", "ABC") in granted and ("DE", "DEF") in granted
    assert sorted(Tariff.objects.values_list("country_code", "party_id")) == [("AT", "ABC"), ("DE", "DEF")]


def test_ocpi_import_grants_no_cut_party_for_an_object_it_rejects(
    tmp_path: Path, spec_example: Callable[[str], Any], capsys: pytest.CaptureFixture[str]
) -> None:
    # "ABCD" is no CiString(3) party id: the normaliser refuses the object, so its first three letters are no
    # party of this partner's either.
    f = tmp_path / "t.json"
    f.write_bytes(orjson.dumps([{**spec_tariff(spec_example), "id": "T-4", "country_code": "AT", "party_id": "ABCD"}]))
    call_command("ocpi_import", str(f), "--partner", "NL*IMP", "--module", "tariffs", verbosity=0)
    assert not PartnerParty.objects.filter(party_id="ABC").exists()
    assert not Tariff.objects.exists()
    assert "rejected=1" in capsys.readouterr().out


# -- the console shows a tariff, it does not move or make one -------------------------------------------------------


@pytest.fixture
def stored_tariff(partner: Partner, spec_example: Callable[[str], Any]) -> Tariff:
    clean, _ = normalize_tariff(
        {**spec_tariff(spec_example), "id": "16"}, country_code=partner.country_code, party_id=partner.party_id
    )
    assert records.tariffs_store(partner, [clean]) == 1
    return Tariff.objects.get(tariff_id="16")


def test_the_tariff_change_form_does_not_move_it_to_another_party(admin_client: Client, stored_tariff: Tariff) -> None:
    url = reverse("admin:billing_tariff_change", args=[stored_tariff.pk])
    page = admin_client.get(url)
    assert page.status_code == 200
    form = {
        "country_code": "FR",
        "party_id": "ZZZ",
        "tariff_id": "OTHER",
        "ocpi_key": "FR*ZZZ*OTHER",
        "currency": "USD",
        "last_updated_0": "2030-01-01",
        "last_updated_1": "00:00:00",
        "_save": "Save",
    }
    admin_client.post(url, form)
    stored_tariff.refresh_from_db()
    assert (stored_tariff.country_code, stored_tariff.party_id, stored_tariff.tariff_id) == ("IN", "CPA", "16")
    assert stored_tariff.ocpi_key == "IN*CPA*16"
    assert stored_tariff.currency == stored_tariff.data["currency"]


def test_the_console_cannot_add_a_tariff(admin_client: Client) -> None:
    url = reverse("admin:billing_tariff_add")
    assert admin_client.get(url).status_code == 403
    assert admin_client.post(url, {"tariff_id": "X", "_save": "Save"}).status_code == 403
    assert not Tariff.objects.exists()
