"""CDRs receiver: POST answers with a Location header, duplicates are idempotent, credit CDRs link up."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from billing.models import Cdr
from emsp.models import ChargingSession
from tests.conftest import OcpiTestClient

pytestmark = pytest.mark.django_db

BASE = "/ocpi/emsp/2.2.1/cdrs"


@pytest.fixture
def bec(client_for: Callable[..., OcpiTestClient]) -> OcpiTestClient:
    return client_for("BE", "BEC")


@pytest.fixture
def cdr(spec_example: Callable[[str], Any]) -> dict[str, Any]:
    return spec_example("cdr_example.json")


def test_post_stores_the_cdr_and_answers_with_its_location(bec: OcpiTestClient, cdr: dict[str, Any]) -> None:
    response = bec.post(BASE, cdr)
    assert (response.status_code, response.json()["status_code"]) == (201, 1000)
    assert response["Location"] == "http://127.0.0.1:8000/ocpi/emsp/2.2.1/cdrs/BE/BEC/12345"
    stored = Cdr.objects.get()
    assert stored.total_cost_excl_vat == Decimal(str(cdr["total_cost"]["excl_vat"]))
    got = bec.get(response["Location"].split("8000", 1)[1])
    assert got.json()["data"]["id"] == "12345"


def test_a_repeated_cdr_is_idempotent(bec: OcpiTestClient, cdr: dict[str, Any]) -> None:
    first = bec.post(BASE, cdr)
    second = bec.post(BASE, cdr)  # a retry (other content is refused: tests/ocpi/test_cdr_immutable.py)
    assert second.json()["status_code"] == 1000
    assert second["Location"] == first["Location"]
    assert Cdr.objects.count() == 1
    assert Cdr.objects.get().total_cost_excl_vat == Decimal(str(cdr["total_cost"]["excl_vat"]))


def test_a_credit_cdr_is_linked_to_the_original(bec: OcpiTestClient, cdr: dict[str, Any]) -> None:
    bec.post(BASE, cdr)
    credit = {
        **cdr,
        "id": "12345-C",
        "credit": True,
        "credit_reference_id": "12345",
        "total_cost": {
            "excl_vat": -cdr["total_cost"]["excl_vat"],
            "incl_vat": -cdr["total_cost"]["incl_vat"],
        },
    }
    assert bec.post(BASE, credit).json()["status_code"] == 1000
    stored = Cdr.objects.get(cdr_id="12345-C")
    assert stored.credit
    assert stored.credited_cdr == Cdr.objects.get(cdr_id="12345")


def test_a_cdr_is_linked_to_its_session(
    bec: OcpiTestClient, cdr: dict[str, Any], spec_example: Callable[[str], Any]
) -> None:
    session = spec_example("session_example_2_short_finished.json")
    bec.put(f"/ocpi/emsp/2.2.1/sessions/BE/BEC/{session['id']}", session)
    bec.post(BASE, {**cdr, "session_id": session["id"]})
    assert Cdr.objects.get().charging_session == ChargingSession.objects.get()


def test_a_cdr_without_total_cost_is_2001_and_not_stored(bec: OcpiTestClient, cdr: dict[str, Any]) -> None:
    broken = {k: v for k, v in cdr.items() if k != "total_cost"}
    response = bec.post(BASE, broken)
    assert response.json()["status_code"] == 2001
    assert not Cdr.objects.exists()


def test_a_cdr_of_another_party_is_refused(client_for: Callable[..., OcpiTestClient], cdr: dict[str, Any]) -> None:
    response = client_for("NL", "XXX").post(BASE, cdr)
    assert response.status_code == 404
    assert not Cdr.objects.exists()


@pytest.mark.parametrize("cdr_id", ["A/B", "A?B", "A#B", "A B", "50%", "A/"])
def test_the_location_of_a_cdr_whose_id_holds_url_characters_leads_back_to_it(
    bec: OcpiTestClient, cdr: dict[str, Any], cdr_id: str
) -> None:
    """A CiString id is any printable ASCII: the Location header percent-encodes it, so the CPO's GET on it
    finds this CDR (an unencoded `?` or `#` had cut the id short and could read another CDR)."""
    bec.post(BASE, {**cdr, "id": "A"})  # what a cut-short id would find
    response = bec.post(BASE, {**cdr, "id": cdr_id})
    assert (response.status_code, response.json()["status_code"]) == (201, 1000)
    location = response["Location"]
    assert " " not in location and "#" not in location and "?" not in location
    path = location.split("8000", 1)[1]
    got = bec.get(path, RAW_URI=path)  # as gunicorn passes it: the raw path, %2F and all
    assert (got.status_code, got.json()["data"]["id"]) == (200, cdr_id)
