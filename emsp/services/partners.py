"""The parties a connection may act for: granted by us (staff, or the command that sets a partner up),
requested — never taken — when a partner claims more in its credentials."""

from __future__ import annotations

import logging

from django.db import IntegrityError, transaction

from emsp.models import Partner, PartnerParty, ci_key

log = logging.getLogger(__name__)


class PartyTaken(Exception):
    """The party is already granted to another connection (a party belongs to one connection only)."""


def party_holder(country_code: str, party_id: str) -> Partner | None:
    """The connection a party is granted to, if any."""
    row = (
        PartnerParty.objects.filter(
            country_code=country_code.strip().upper(),
            party_id=party_id.strip().upper(),
            status=PartnerParty.Status.GRANTED,
        )
        .select_related("partner")
        .first()
    )
    return row.partner if row is not None else None


def partner_party_grant(*, partner: Partner, country_code: str, party_id: str, by: str) -> PartnerParty:
    """Let `partner` act for a further party (a hub's CPO). Raises PartyTaken when another connection has it."""
    country_code, party_id = country_code.strip().upper(), party_id.strip().upper()
    holder = party_holder(country_code, party_id)
    if holder is not None and holder.pk != partner.pk:
        raise PartyTaken(f"{ci_key(country_code, party_id)} is granted to {holder}")
    try:
        with transaction.atomic():
            party, _ = PartnerParty.objects.update_or_create(
                partner=partner,
                country_code=country_code,
                party_id=party_id,
                defaults={"status": PartnerParty.Status.GRANTED, "granted_by": by[:150]},
            )
    except IntegrityError as exc:  # granted elsewhere meanwhile
        raise PartyTaken(f"{ci_key(country_code, party_id)} is granted to another connection") from exc
    partner.__dict__.pop("_granted_keys", None)
    return party


def partner_parties_claimed(partner: Partner, parties: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """A partner claims these parties (credentials roles): those it was not granted are recorded as
    REQUESTED for staff and returned; it may not act for them."""
    refused = []
    for country_code, party_id in parties:
        if partner.owns(country_code, party_id):
            continue
        refused.append((country_code, party_id))
        PartnerParty.objects.get_or_create(
            partner=partner,
            country_code=country_code.strip().upper(),
            party_id=party_id.strip().upper(),
            defaults={"status": PartnerParty.Status.REQUESTED},
        )
        log.warning("%s claimed party %s*%s, which it was not granted", partner, country_code, party_id)
    return refused
