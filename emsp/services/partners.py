"""The parties a connection may act for: granted by us (staff, or the command that sets a partner up),
requested — never taken — when a partner claims more in its credentials."""

from __future__ import annotations

import logging

from django.db import IntegrityError, transaction
from django.db.models import Q

from emsp.models import Location, Partner, PartnerParty, ci_key

log = logging.getLogger(__name__)

# A partner's claims waiting for staff (REQUESTED) are recorded up to this many: a refused credentials request
# spends no Token A, so a partner could otherwise fill the staff's queue (and the partner page) without end.
MAX_PENDING_CLAIMS = 200


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


PARTIES_PER_QUERY = 300


def party_holders(parties: set[tuple[str, str]]) -> dict[str, int]:
    """The connection (pk) each of `parties` is granted to, by ci_key, in one query; a party no connection holds
    is absent. PartnerParty holds its parties upper-cased (its save, the claims' bulk insert)."""
    wanted = sorted({(cc.strip().upper(), pid.strip().upper()) for cc, pid in parties})
    holders: dict[str, int] = {}
    # A few hundred parties a statement: SQLite refuses an expression deeper than 1,000 (a hub's page of tariffs
    # of 1,000 parties had failed whole).
    for start in range(0, len(wanted), PARTIES_PER_QUERY):
        match = Q()
        for cc, pid in wanted[start : start + PARTIES_PER_QUERY]:
            match |= Q(country_code=cc, party_id=pid)
        rows = PartnerParty.objects.filter(match, status=PartnerParty.Status.GRANTED).values_list(
            "country_code", "party_id", "partner"
        )
        holders.update((ci_key(cc, pid), partner_id) for cc, pid, partner_id in rows)
    return holders


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
            party_objects_moved(partner, country_code, party_id)
    except IntegrityError as exc:  # granted elsewhere meanwhile
        raise PartyTaken(f"{ci_key(country_code, party_id)} is granted to another connection") from exc
    partner.__dict__.pop("_granted_keys", None)
    return party


def party_objects_moved(partner: Partner, country_code: str, party_id: str) -> dict[str, int]:
    """The party is now held by `partner` (granted to it, or its own party): the party's locations (their EVSEs
    and connectors with them) and tariffs we hold under another connection become this one's, so that commands
    and EVSE reads go to it, the old connection's full pull no longer withdraws or deletes them, and its state no
    longer hides them. Not its CDRs (settled with the connection that sent them) nor its sessions: a session is
    tied to the commands sent through its connection (commands_of_reference is per connection: its booking, a
    late session's stop) and priced on that connection's terms, so one under way stays where it started.
    Call it in the transaction that grants the party. Returns how many rows moved, by kind."""
    # Parties are compared case-insensitively (ci_key); the columns hold what the normaliser gave (upper case).
    party = {"country_code__iexact": country_code.strip(), "party_id__iexact": party_id.strip()}
    moved = {"locations": Location.objects.filter(**party).exclude(partner=partner).update(partner=partner)}
    # Tariffs are billing's, which sits above emsp (pyproject's layers): reached through the partner's relation.
    # Looked for first: every UPDATE of the table moves the tariff generation (billing/tariff_cache.py), which a
    # grant that moves nothing has no reason to do.
    tariffs = Partner._meta.get_field("tariffs").related_model.objects.filter(**party).exclude(partner=partner)
    moved["tariffs"] = tariffs.update(partner=partner) if tariffs.exists() else 0
    if any(moved.values()):
        log.info(
            "party %s now held by %s: moved %d location(s) and %d tariff(s) to it",
            ci_key(country_code, party_id),
            partner,
            moved["locations"],
            moved["tariffs"],
        )
    return moved


def partner_parties_claimed(partner: Partner, parties: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """A partner claims these parties (credentials roles, a hub's client info): those it was not granted are
    returned, and recorded as REQUESTED for staff while fewer than MAX_PENDING_CLAIMS of its claims wait; it may
    not act for them. One warning a call, however many it claims."""
    refused = [(cc, pid) for cc, pid in parties if not partner.owns(cc, pid)]
    if not refused:
        return refused
    claimed = list(dict.fromkeys((cc.strip().upper(), pid.strip().upper()) for cc, pid in refused))
    known = set(PartnerParty.objects.filter(partner=partner).values_list("country_code", "party_id"))
    fresh = [party for party in claimed if party not in known]
    waiting = PartnerParty.objects.filter(partner=partner, status=PartnerParty.Status.REQUESTED).count()
    recorded = fresh[: max(MAX_PENDING_CLAIMS - waiting, 0)]
    PartnerParty.objects.bulk_create(
        [
            PartnerParty(partner=partner, country_code=cc, party_id=pid, status=PartnerParty.Status.REQUESTED)
            for cc, pid in recorded
        ],
        ignore_conflicts=True,  # the same claim from a concurrent request: recorded once (party_once_per_partner)
    )
    named = ", ".join(ci_key(cc, pid) for cc, pid in claimed[:10]) + (" …" if len(claimed) > 10 else "")
    unrecorded = len(fresh) - len(recorded)
    log.warning(
        "%s claimed %d part%s it was not granted (%s)%s",
        partner,
        len(claimed),
        "y" if len(claimed) == 1 else "ies",
        named,
        f"; {unrecorded} not recorded: {MAX_PENDING_CLAIMS} of its claims already wait for staff" if unrecorded else "",
    )
    return refused
