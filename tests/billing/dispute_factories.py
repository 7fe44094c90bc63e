"""Test data for the disputes console: disputes opened by the real CDR audit, and bare ones for the queue."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import factory
from django.utils import timezone

from billing.models import Cdr, Dispute
from emsp.models import Partner, Token
from tests.factories import PartnerFactory, TokenFactory, stored_location

LOCATION_ID = "LOC-DISPUTE"
TOKEN_UID = "TOKEN-DISPUTE-1"


def ocpi_cdr(
    partner: Partner,
    cdr_id: str,
    *,
    total: tuple[float, float] = (6.0, 6.6),
    energy_cost: tuple[float, float] | None = (6.0, 6.6),
    time_cost: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """A CDR of 20 kWh under a 0.25/kWh tariff with 10 % VAT: we price it 5.00 excl. / 5.50 incl. VAT."""
    cdr: dict[str, Any] = {
        "country_code": partner.country_code,
        "party_id": partner.party_id,
        "id": cdr_id,
        "start_date_time": "2026-10-01T10:00:00Z",
        "end_date_time": "2026-10-01T11:00:00Z",
        "session_id": f"S-{cdr_id}",
        "cdr_token": {
            "country_code": "IN",
            "party_id": "EMS",
            "uid": TOKEN_UID,
            "type": "RFID",
            "contract_id": "IN-EMS-C00000001",
        },
        "auth_method": "WHITELIST",
        "cdr_location": {
            "id": LOCATION_ID,
            "address": "1 MG Road",
            "city": "Bengaluru",
            "country": "IND",
            "coordinates": {"latitude": "12.971599", "longitude": "77.594566"},
            "evse_uid": f"{LOCATION_ID}-E1",
            "evse_id": f"IN*{partner.party_id}*E1",
            "connector_id": "1",
            "connector_standard": "IEC_62196_T2_COMBO",
            "connector_format": "CABLE",
            "connector_power_type": "DC",
        },
        "currency": "EUR",
        "tariffs": [
            {
                "country_code": partner.country_code,
                "party_id": partner.party_id,
                "id": "T-ENERGY",
                "currency": "EUR",
                "elements": [{"price_components": [{"type": "ENERGY", "price": 0.25, "vat": 10.0, "step_size": 1}]}],
                "last_updated": "2026-09-01T00:00:00Z",
            }
        ],
        "charging_periods": [
            {
                "start_date_time": "2026-10-01T10:00:00Z",
                "dimensions": [{"type": "ENERGY", "volume": 20}],
                "tariff_id": "T-ENERGY",
            }
        ],
        "total_cost": {"excl_vat": total[0], "incl_vat": total[1]},
        "total_energy": 20,
        "total_time": 1,
        "last_updated": "2026-10-01T11:05:00Z",
    }
    if energy_cost is not None:
        cdr["total_energy_cost"] = {"excl_vat": energy_cost[0], "incl_vat": energy_cost[1]}
    if time_cost is not None:
        cdr["total_time_cost"] = {"excl_vat": time_cost[0], "incl_vat": time_cost[1]}
    return cdr


def audited_dispute(partner: Partner | None = None, cdr_id: str = "CDR-DISPUTE-1", **cdr_fields: Any) -> Dispute:
    """Store an overbilled CDR and run the real audit on it, which opens the dispute."""
    from billing.services import cdr_store
    from billing.services.audit import cdr_audit
    from ocpi.normalize import normalize_cdr

    partner = partner or PartnerFactory(country_code="IN", party_id="DSP", name="Disputed CPO")
    if not partner.locations.filter(location_id=LOCATION_ID).exists():
        stored_location(partner, location_id=LOCATION_ID)
    if not Token.objects.by_uid(TOKEN_UID, "RFID").exists():
        TokenFactory(uid=TOKEN_UID)  # a token of ours: a CDR of one we don't hold is held (unknown_token)
    clean, _ = normalize_cdr(
        ocpi_cdr(partner, cdr_id, **cdr_fields), country_code=partner.country_code, party_id=partner.party_id
    )
    cdr_audit(cdr_store(partner, clean).cdr)
    return Dispute.objects.get(cdr__cdr_id=cdr_id)


class BareCdrFactory(factory.django.DjangoModelFactory):
    """A CDR row with only the columns the queue shows (no audit)."""

    class Meta:
        model = Cdr

    partner = factory.SubFactory(PartnerFactory)
    country_code = factory.LazyAttribute(lambda c: c.partner.country_code)
    party_id = factory.LazyAttribute(lambda c: c.partner.party_id)
    cdr_id = factory.Sequence(lambda n: f"QCDR{n:05d}")
    ocpi_key = factory.LazyAttribute(lambda c: f"{c.country_code}*{c.party_id}*{c.cdr_id}".lower())
    session_id = factory.LazyAttribute(lambda c: f"SESS-{c.cdr_id}")
    end_date_time = factory.LazyFunction(lambda: timezone.now() - timedelta(days=1))
    start_date_time = factory.LazyAttribute(lambda c: c.end_date_time - timedelta(hours=1))
    currency = "EUR"
    total_cost_excl_vat = Decimal("10")
    last_updated = factory.LazyFunction(timezone.now)
    data = factory.LazyFunction(dict)


class QueueDisputeFactory(factory.django.DjangoModelFactory):
    """A dispute as the audit opens it: `difference` is the CPO amount minus `our_amount`."""

    class Meta:
        model = Dispute

    class Params:
        days_old = 0

    cdr = factory.SubFactory(BareCdrFactory)
    partner = factory.SelfAttribute("cdr.partner")
    currency = "EUR"
    cpo_amount = factory.SelfAttribute("cdr.total_cost_excl_vat")
    our_amount = Decimal("9")
    difference = factory.LazyAttribute(lambda d: d.cpo_amount - d.our_amount)
    opened_at = factory.LazyAttribute(lambda d: timezone.now() - timedelta(days=d.days_old, minutes=1))
