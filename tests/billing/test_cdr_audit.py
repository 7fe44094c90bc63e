"""CDR audit: every CDR is repriced, compared with the CPO's totals, and disputed or flagged as needed."""

from __future__ import annotations

import copy
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from django.conf import settings

from billing.models import Cdr, CdrAudit, Dispute, PartnerTerms
from billing.services import cdr_store
from billing.services.audit import cdr_audit, cdr_process
from emsp.models import Partner, Token
from tests.factories import PartnerFactory, TokenFactory, stored_location

pytestmark = pytest.mark.django_db


@pytest.fixture
def bec(db: None) -> Partner:
    return PartnerFactory(country_code="BE", party_id="BEC")


@pytest.fixture(autouse=True)
def _the_examples_token_is_ours(db: None) -> None:
    """The example's token uid is one we hold (this module's tests only): a CDR of our party's token we don't
    hold is held for review (unknown_token)."""
    TokenFactory(uid="012345678")


@pytest.fixture
def example_cdr(spec_example: Callable[[str], Any]) -> dict[str, Any]:
    """The spec's example CDR, for a token of ours: its DE*TNM token is another eMSP's, whose CDRs bill no driver
    of ours (tests/billing/test_foreign_tokens.py)."""
    example = spec_example("cdr_example.json")
    ours = {"country_code": settings.OCPI_COUNTRY_CODE, "party_id": settings.OCPI_PARTY_ID}
    return {**example, "cdr_token": {**example["cdr_token"], **ours}}


def store(partner: Partner, obj: dict[str, Any]) -> Cdr:
    from ocpi.normalize import normalize_cdr

    clean, _ = normalize_cdr(obj, country_code=partner.country_code, party_id=partner.party_id)
    return cdr_store(partner, clean).cdr


def with_known_location(partner: Partner, cdr: dict[str, Any]) -> dict[str, Any]:
    location = stored_location(partner, location_id="LOC-AUDIT")
    location.time_zone = "Europe/Brussels"
    location.save()
    cdr = copy.deepcopy(cdr)
    cdr["cdr_location"]["id"] = "LOC-AUDIT"
    return cdr


def test_a_cdr_at_an_unknown_location_is_priced_but_flagged_for_review(
    bec: Partner, example_cdr: dict[str, Any]
) -> None:
    audit = cdr_audit(store(bec, example_cdr))
    assert audit.status == CdrAudit.Status.REVIEW
    assert set(audit.flags) >= {"unknown_location", "no_session"}
    assert audit.computed_excl_vat == Decimal("4.00")  # TIME 2.00/h, 1.973 h rounded up to 2 h by step 300
    assert audit.computed_incl_vat == Decimal("4.400")
    assert not Dispute.objects.exists()


def test_a_cdr_that_matches_our_price_within_tolerance_is_matched(
    bec: Partner, example_cdr: dict[str, Any], spec_example: Any
) -> None:
    cdr_obj = with_known_location(bec, example_cdr)
    session = spec_example("session_example_2_short_finished.json")
    from emsp.services.sessions import session_put
    from ocpi.normalize import normalize_session

    session_put(bec, normalize_session(session, country_code="BE", party_id="BEC")[0])
    cdr_obj["session_id"] = session["id"]
    cdr_obj["total_cost"] = {"excl_vat": 4.005, "incl_vat": 4.4}
    audit = cdr_audit(store(bec, cdr_obj))
    assert audit.status == CdrAudit.Status.MATCHED, audit.flags
    assert audit.difference_excl_vat == Decimal("0.005")
    assert audit.time_zone == "Europe/Brussels"  # the stored location's zone (the CDR carries none)


def test_an_overcharge_opens_a_dispute_with_both_breakdowns(bec: Partner, example_cdr: dict[str, Any]) -> None:
    cdr_obj = with_known_location(bec, example_cdr)
    cdr_obj["total_cost"] = {"excl_vat": 5.0, "incl_vat": 5.5}
    cdr_obj["total_time_cost"] = {"excl_vat": 5.0, "incl_vat": 5.5}
    audit = cdr_audit(store(bec, cdr_obj))
    assert audit.status == CdrAudit.Status.MISMATCH
    dispute = Dispute.objects.get()
    assert (dispute.cpo_amount, dispute.our_amount, dispute.difference) == (Decimal("5"), Decimal("4"), Decimal("1"))
    assert audit.cpo_breakdown["total_time_cost"] == {"excl_vat": 5.0, "incl_vat": 5.5}
    assert audit.our_breakdown["total_cost"]["excl_vat"] == "4"
    assert Decimal(audit.our_breakdown["differences"]["total_time_cost.excl_vat"]) == Decimal("1")
    assert dispute.events.get().action == "opened"


def test_auditing_twice_opens_one_dispute(bec: Partner, example_cdr: dict[str, Any]) -> None:
    cdr_obj = {**example_cdr, "total_cost": {"excl_vat": 9, "incl_vat": 9.9}}
    cdr = store(bec, cdr_obj)
    cdr_audit(cdr)
    cdr_audit(cdr)
    assert Dispute.objects.count() == 1
    assert CdrAudit.objects.count() == 1


def test_the_tolerance_is_per_partner(bec: Partner, example_cdr: dict[str, Any]) -> None:
    PartnerTerms.objects.create(partner=bec, audit_tolerance=Decimal("0"))
    cdr_obj = {**with_known_location(bec, example_cdr), "total_cost": {"excl_vat": 4.005, "incl_vat": 4.4}}
    assert cdr_audit(store(bec, cdr_obj)).status == CdrAudit.Status.MISMATCH


def test_a_subtotal_difference_alone_is_a_mismatch(bec: Partner, example_cdr: dict[str, Any]) -> None:
    cdr_obj = with_known_location(bec, example_cdr)
    cdr_obj["total_energy_cost"] = {"excl_vat": 1.0, "incl_vat": 1.1}  # we bill no energy on this tariff
    assert cdr_audit(store(bec, cdr_obj)).status == CdrAudit.Status.MISMATCH


def test_a_malformed_tariff_is_unpriceable_and_kept(bec: Partner, example_cdr: dict[str, Any]) -> None:
    cdr_obj = copy.deepcopy(example_cdr)
    cdr_obj["tariffs"][0]["elements"][0]["price_components"][0]["price"] = "a lot"
    cdr = store(bec, cdr_obj)
    audit = cdr_audit(cdr)
    assert audit.status in (CdrAudit.Status.UNPRICEABLE, CdrAudit.Status.REVIEW)
    assert Cdr.objects.filter(pk=cdr.pk).exists()


def test_a_cdr_without_any_tariff_is_flagged_for_review(bec: Partner, example_cdr: dict[str, Any]) -> None:
    cdr_obj = {k: v for k, v in example_cdr.items() if k != "tariffs"}
    audit = cdr_audit(store(bec, cdr_obj))
    assert audit.status == CdrAudit.Status.REVIEW
    assert "no_tariff" in audit.flags


def test_a_credit_cdr_that_brings_the_net_in_line_settles_the_dispute(
    bec: Partner, example_cdr: dict[str, Any]
) -> None:
    cdr_obj = with_known_location(bec, example_cdr)
    cdr_obj["total_cost"] = {"excl_vat": 5.0, "incl_vat": 5.5}
    cdr_audit(store(bec, cdr_obj))
    credit = {
        **cdr_obj,
        "id": "12345-C",
        "credit": True,
        "credit_reference_id": "12345",
        "total_cost": {"excl_vat": -1.0, "incl_vat": -1.1},
    }
    credit.pop("total_time_cost")
    audit = cdr_audit(store(bec, credit))
    assert audit.status == CdrAudit.Status.CREDIT
    dispute = Dispute.objects.get()
    assert dispute.state == Dispute.State.CREDITED
    assert dispute.credit_amount == Decimal("1")
    assert dispute.events.last().action == "credit CDR received"


def test_processing_a_cdr_of_our_token_makes_a_receipt_with_our_fee(bec: Partner, example_cdr: dict[str, Any]) -> None:
    token = Token.objects.get(uid="012345678")  # _the_examples_token_is_ours
    PartnerTerms.objects.create(
        partner=bec, fee_flat=Decimal("1.00"), fee_percent=Decimal("10"), fee_vat_percent=Decimal("20")
    )
    cdr = store(bec, example_cdr)
    cdr_process(cdr.pk)
    receipt = cdr.receipt
    assert receipt.driver == token.driver
    assert receipt.cpo_cost_excl_vat == Decimal("4")
    assert receipt.cpo_vat == Decimal("0.4")
    assert receipt.fee_excl_vat == Decimal("1.4")  # 1.00 + 10 % of 4.00
    assert receipt.fee_vat == Decimal("0.28")
    assert receipt.total_incl_vat == Decimal("6.08")  # 4.40 + 1.40 + 0.28
    cdr_process(cdr.pk)
    assert Cdr.objects.get(pk=cdr.pk).receipt == receipt


def test_a_received_cdr_is_audited_after_commit(
    client_for: Any, example_cdr: dict[str, Any], django_capture_on_commit_callbacks: Any
) -> None:
    client = client_for("BE", "BEC")
    with django_capture_on_commit_callbacks(execute=True):
        client.post("/ocpi/emsp/2.2.1/cdrs", example_cdr)
    assert Cdr.objects.get().audit.status == CdrAudit.Status.REVIEW
