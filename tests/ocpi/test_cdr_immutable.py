"""A CDR "cannot be changed or replaced once sent to the eMSP" (mod_cdrs): a repeat of it is answered as the first
was, one with other content changes nothing and is told apart. And list answers count what the query matches."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from billing.models import Cdr
from billing.services import records
from ocpi.models import DataQualityIssue
from ocpi.normalize import normalize_cdr
from tests.conftest import OcpiTestClient
from tests.factories import TokenFactory

pytestmark = pytest.mark.django_db

CDRS = "/ocpi/emsp/2.2.1/cdrs"


@pytest.fixture
def bec(client_for: Callable[..., OcpiTestClient]) -> OcpiTestClient:
    return client_for("BE", "BEC")


@pytest.fixture
def cdr(spec_example: Callable[[str], Any]) -> dict[str, Any]:
    return spec_example("cdr_example.json")


def _store(bec: OcpiTestClient, body: dict[str, Any]) -> records.CdrStored:
    partner = Cdr.objects.get().partner
    clean, _ = normalize_cdr(body, country_code="BE", party_id="BEC")
    return records.cdr_store(partner, clean)


def test_a_repeated_cdr_is_answered_as_the_first_was(bec: OcpiTestClient, cdr: dict[str, Any]) -> None:
    assert bec.post(CDRS, cdr).status_code == 201
    response = bec.post(CDRS, {**cdr, "last_updated": "2015-06-29T23:00:00Z"})
    assert (response.status_code, response.json()["status_code"]) == (200, 1000)
    assert _store(bec, {**cdr, "last_updated": "2015-06-29T23:00:00Z"}).changed_fields == []


def test_a_repeated_cdr_without_stamps_is_no_change(bec: OcpiTestClient, cdr: dict[str, Any]) -> None:
    """A missing stamp is our receive time (the CDR's, its tariffs'): it differs at each delivery."""
    unstamped = {**cdr, "tariffs": [{k: v for k, v in t.items() if k != "last_updated"} for t in cdr["tariffs"]]}
    unstamped.pop("last_updated")
    bec.post(CDRS, unstamped)
    assert _store(bec, unstamped).changed_fields == []


def test_a_cdr_id_posted_again_with_other_content_changes_nothing_and_says_what_differs(
    bec: OcpiTestClient, cdr: dict[str, Any]
) -> None:
    bec.post(CDRS, cdr)
    stored = _store(bec, {**cdr, "total_cost": {"excl_vat": 999, "incl_vat": 999}, "total_energy": 900})
    assert not stored.created
    assert stored.changed_fields == ["total_cost", "total_energy"]
    kept = Cdr.objects.get()
    assert (kept.total_cost_excl_vat, kept.data["total_energy"]) == (cdr["total_cost"]["excl_vat"], cdr["total_energy"])


def test_a_page_past_the_end_counts_the_objects_not_the_offset(client_for: Callable[..., OcpiTestClient]) -> None:
    cpo = client_for("BE", "BEC")
    for uid in ("T1", "T2", "T3"):
        TokenFactory(uid=uid)
    response = cpo.get("/ocpi/emsp/2.2.1/tokens?offset=1000")
    assert response.json()["data"] == []
    assert response["X-Total-Count"] == "3"
    assert cpo.get("/ocpi/emsp/2.2.1/tokens?offset=1&limit=1")["X-Total-Count"] == "3"


def test_a_cpo_posting_a_cdr_id_again_with_other_content_hears_2001_and_a_finding_is_kept(
    bec: OcpiTestClient, cdr: dict[str, Any]
) -> None:
    assert bec.post(CDRS, cdr).status_code == 201
    response = bec.post(CDRS, {**cdr, "total_cost": {"excl_vat": 999, "incl_vat": 999}})
    assert response.json()["status_code"] == 2001
    assert "credit CDR" in response.json()["status_message"]
    assert Cdr.objects.get().total_cost_excl_vat == cdr["total_cost"]["excl_vat"]
    assert DataQualityIssue.objects.filter(code="cdr_changed", object_id=cdr["id"]).exists()
