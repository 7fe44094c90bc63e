"""Storing the CPOs' tariffs and CDRs (mod_tariffs, mod_cdrs)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from billing.models import Cdr, Tariff
from billing.money import stored_amount
from billing.services import settlement
from emsp.celery import run_after_commit
from emsp.datetimes import parse_utc
from emsp.inserts import insert
from emsp.models import Partner, ci_key
from emsp.rows import first_where
from emsp.services.partners import party_holders
from emsp.services.sessions import session_of_charge


def _decimal(value: Any) -> Decimal | None:
    """A CDR's number as its column holds it (4 decimals), rounded here, where the normaliser reported it
    (ocpi/normalize/sessions.py `_amount`, issue "rounded"), not silently by the column."""
    return None if value is None else stored_amount(value)


def tariff_key(country_code: str, party_id: str, tariff_id: str) -> str:
    return ci_key(country_code, party_id, tariff_id)


def tariff_get(country_code: str, party_id: str, tariff_id: str) -> Tariff | None:
    return Tariff.objects.filter(ocpi_key=tariff_key(country_code, party_id, tariff_id)).first()


class PartyNotHeld(Exception):
    """The object's party is granted to another connection than its writer's (moved off it since the writer's
    instance read its parties): nothing of it is written."""


def tariff_put(
    partner: Partner, obj: dict[str, Any], *, holders: dict[str, int] | None = None, audit_waiting: bool = True
) -> tuple[Tariff, bool, bool]:
    """Create or replace a tariff. Returns (tariff, created, applied); an older version is ignored. Raises
    PartyNotHeld where the database grants its party to another connection than the writer's, or to none.
    `holders`: the parties' holders already read (`party_holders`, a page's in one query). A tariff stored has
    the CDRs of its party audited without a tariff audited again, by a task after the commit (`audit_waiting`;
    tariffs_store queues one for its page). Queued best effort: a broker that is down loses the task (a warning)
    and fails no PUT, which stored the tariff; the beat's audit_cdrs_awaiting_tariffs finds those CDRs."""
    key = tariff_key(obj["country_code"], obj["party_id"], obj["id"])
    last_updated = parse_utc(obj["last_updated"])
    start, end = obj.get("start_date_time"), obj.get("end_date_time")
    with transaction.atomic():
        # select_for_update takes the generation's lock before the row's (billing/tariff_cache.py).
        tariff = Tariff.objects.select_for_update().filter(ocpi_key=key).first()
        # Whose party is it now, as the database says, where the tariff is new here or held under another
        # connection? The writer passed the party check against the parties its instance read (cached for
        # seconds by ocpi/transport.py, or for a whole pull): a party moved off it since is not written. A party
        # it holds takes the tariff over (moved to it: emsp/services/partners.py::party_objects_moved), also
        # when this version is older than ours.
        taken = False
        if tariff is None or tariff.partner_id != partner.pk:
            party = ci_key(obj["country_code"], obj["party_id"])
            if holders is None or tariff is not None:
                # Read under the row's lock where the tariff is another connection's: a grant that moved it
                # meanwhile is seen (the page's read, made before, would take it back).
                holders = party_holders({(obj["country_code"], obj["party_id"])})
            holder = holders.get(party)
            if holder != partner.pk:
                # Also a party no connection holds: a partner's own party is held as its PartnerParty too
                # (Partner.save), so none of its parties is missing here. Stored all the same, a tariff of a party
                # nobody holds had been kept under the writer (a camelCase party past the receiver's check).
                raise PartyNotHeld(f"{party} is not granted to this connection")
            taken = tariff is not None
        if tariff is not None and last_updated < tariff.last_updated:
            if taken:
                tariff.partner = partner
                tariff.save(update_fields=["partner"])
            return tariff, False, False
        created = tariff is None
        tariff = tariff or Tariff(partner=partner, ocpi_key=key)
        if taken:
            tariff.partner = partner
        tariff.country_code = obj["country_code"]
        tariff.party_id = obj["party_id"]
        tariff.tariff_id = obj["id"]
        tariff.currency = obj["currency"]
        tariff.type = obj.get("type") or ""
        tariff.tax_included = obj.get("tax_included") or ""
        tariff.start_date_time = parse_utc(start) if start else None
        tariff.end_date_time = parse_utc(end) if end else None
        tariff.last_updated = last_updated
        tariff.data = obj
        tariff.received_at = timezone.now()
        tariff.save()
        if audit_waiting:
            run_after_commit("billing.tasks.audit_cdrs_for_tariffs", [tariff.pk], best_effort=True)
    return tariff, created, True


def tariffs_store(partner: Partner, tariffs: list[dict[str, Any]]) -> int:
    holders = party_holders({(obj["country_code"], obj["party_id"]) for obj in tariffs})
    stored: list[int] = []
    for obj in tariffs:
        try:
            tariff, _, applied = tariff_put(partner, obj, holders=holders, audit_waiting=False)
        except PartyNotHeld:
            continue  # moved off the writer since its pull began: the holder's to write
        if applied:
            stored.append(tariff.pk)
    if stored:
        # One task for the page's tariffs (tariff_put's own would be one per tariff). Best effort, as tariff_put's:
        # the tariffs are stored, and the beat's audit_cdrs_awaiting_tariffs finds their CDRs without the task.
        run_after_commit("billing.tasks.audit_cdrs_for_tariffs", stored, best_effort=True)
    return len(stored)


def tariff_delete(tariff: Tariff, *, writer: Partner | None = None) -> None:
    """Delete a tariff (mod_tariffs DELETE). With a `writer` (a CPO's DELETE), the statement deletes it only under
    the writer's connection, so that a tariff whose party was moved to another connection since the writer's
    instance read its parties (cached for seconds by ocpi/transport.py) is not deleted: PartyNotHeld, as a PUT
    of it is refused. One left under another connection is deleted where the database grants its party to the
    writer (as a PUT of it takes it over: `tariff_put`)."""
    if writer is None:
        tariff.delete()
        return
    if Tariff.objects.filter(pk=tariff.pk, partner_id=writer.pk).delete()[0]:
        return
    party = ci_key(tariff.country_code, tariff.party_id)
    if party_holders({(tariff.country_code, tariff.party_id)}).get(party) != writer.pk:
        raise PartyNotHeld(f"{party} is not granted to {writer}")
    # Under the owner read, or the writer's by now; not where a grant since has moved it to a third connection.
    Tariff.objects.filter(pk=tariff.pk, partner_id__in=(tariff.partner_id, writer.pk)).delete()


def tariffs_delete_missing(partner: Partner, seen_keys: set[str], since: datetime) -> int:
    """After a full pull that saw the partner's whole tariff list: its tariffs it no longer lists are gone
    (mod_tariffs: "Any older information that is not specified in the response is considered no longer
    valid"). Tariffs pushed to us during the pull are kept. Compared here, not in SQL (a NOT IN of every key
    seen can pass PostgreSQL's parameter limit). Returns how many went."""
    stale = [
        pk
        for pk, key in Tariff.objects.filter(partner=partner, received_at__lt=since).values_list("pk", "ocpi_key")
        if key not in seen_keys
    ]
    gone = 0
    for start in range(0, len(stale), 5000):
        gone += Tariff.objects.filter(pk__in=stale[start : start + 5000]).delete()[0]
    return gone


def cdr_key(country_code: str, party_id: str, cdr_id: str) -> str:
    return ci_key(country_code, party_id, cdr_id)


@dataclass
class CdrStored:
    cdr: Cdr
    created: bool
    # A repeated id whose content differs from the stored CDR: the fields that differ (nothing was changed;
    # the receiver refuses it with OCPI 2001, mod_cdrs: a CDR "cannot be changed or replaced once sent").
    changed_fields: list[str] = field(default_factory=list)


def _position(value: Any) -> Any:
    """A coordinate as a number: "3.729944" and "3.7299440" are one place (OCPI GeoLocation strings are kept as
    the CPO renders them, and a retry may render them again differently)."""
    try:
        return Decimal(str(value).strip())
    except ArithmeticError:
        return value


def _content(obj: dict[str, Any]) -> dict[str, Any]:
    """A CDR as compared with a repeat of it: without the stamps (a missing one is our receive time, which
    differs at each delivery; so is an embedded tariff's), its coordinates as numbers."""
    out = {k: v for k, v in obj.items() if k != "last_updated"}
    location = out.get("cdr_location")
    if isinstance(location, dict) and isinstance(location.get("coordinates"), dict):
        coordinates = {k: _position(v) for k, v in location["coordinates"].items()}
        out["cdr_location"] = {**location, "coordinates": coordinates}
    if isinstance(out.get("tariffs"), list):
        out["tariffs"] = [
            {k: v for k, v in t.items() if k != "last_updated"} if isinstance(t, dict) else t for t in out["tariffs"]
        ]
    return out


def _changed_fields(stored: dict[str, Any], repeat: dict[str, Any]) -> list[str]:
    """The fields in which a repeat of a CDR differs from the stored one (a hub's retry differs in none)."""
    old, new = _content(stored), _content(repeat)
    return sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))


def cdr_store(partner: Partner, obj: dict[str, Any]) -> CdrStored:
    """Store a CDR once. CDRs are immutable (mod_cdrs): a repeated id returns the stored one unchanged, and says
    in which fields it differs (`CdrStored.changed_fields`: a correction must come as a credit CDR)."""
    key = cdr_key(obj["country_code"], obj["party_id"], obj["id"])
    # Lookups and the row in plain SQL (emsp/rows.py, emsp/inserts.py): cProfile of a CDR POST
    # (bench/bench_ocpi_calls.py --kind cdr) showed the ORM compiling its two lookups and INSERT as half its CPU.
    existing = first_where(Cdr, "t.ocpi_key = %s", [key])
    if existing is not None:
        return CdrStored(existing, created=False, changed_fields=_changed_fields(existing.data, obj))
    total_cost = obj.get("total_cost") or {}
    location = obj.get("cdr_location") or {}
    cdr_token = obj.get("cdr_token") or {}
    cdr = Cdr(
        partner=partner,
        country_code=obj["country_code"],
        party_id=obj["party_id"],
        cdr_id=obj["id"],
        ocpi_key=key,
        session_id=obj.get("session_id") or "",
        start_date_time=parse_utc(obj["start_date_time"]),
        end_date_time=parse_utc(obj["end_date_time"]),
        currency=obj["currency"],
        total_cost_excl_vat=_decimal(total_cost.get("excl_vat")) or Decimal("0"),
        total_cost_incl_vat=_decimal(total_cost.get("incl_vat")),
        total_cost_taxes=total_cost.get("taxes") or [],
        total_energy=_decimal(obj.get("total_energy")) or Decimal("0"),
        total_time=_decimal(obj.get("total_time")) or Decimal("0"),
        total_parking_time=_decimal(obj.get("total_parking_time")),
        location_id=str(location.get("id") or ""),
        evse_uid=str(location.get("evse_uid") or ""),
        token_uid=str(cdr_token.get("uid") or ""),
        credit=bool(obj.get("credit")),
        credit_reference_id=obj.get("credit_reference_id") or "",
        last_updated=parse_utc(obj["last_updated"]),
        data=obj,
    )
    # The session it bills: the one its session_id names, or, without one, the session of the START_SESSION its
    # authorization_reference repeats (this partner's only). A session that comes later is linked then
    # (emsp/services/sessions.py), or by the CDR's processing (audit.cdr_process).
    cdr.charging_session = session_of_charge(
        partner.pk, cdr.country_code, cdr.party_id, cdr.session_id, str(obj.get("authorization_reference") or "")
    )
    if cdr.credit and cdr.credit_reference_id:
        # A credit CDR corrects an earlier one (mod_cdrs §"Credit CDRs").
        cdr.credited_cdr = first_where(
            Cdr, "t.ocpi_key = %s", [cdr_key(cdr.country_code, cdr.party_id, cdr.credit_reference_id)]
        )
    try:
        with transaction.atomic():
            # Ended in a period finance has closed: settled in the first open one after it. Read in the INSERT's
            # transaction with the periods locked (settlement_close locks its period before recomputing it): a
            # close can't commit between this read and the INSERT and leave the CDR in the closed period.
            cdr.carried_to = settlement.carried_past_closed(partner.pk, cdr.currency, cdr.end_date_time, lock=True)
            insert(cdr)
            # Audited against our tariff engine and receipted for the driver, in the background.
            run_after_commit("billing.tasks.process_cdr", cdr.pk)
    except IntegrityError:
        # The same CDR arrived twice at once (hubs retry): the first one stored wins.
        first = Cdr.objects.get(ocpi_key=key)
        return CdrStored(first, created=False, changed_fields=_changed_fields(first.data, obj))
    return CdrStored(cdr, created=True)


def cdrs_store(partner: Partner, cdrs: list[dict[str, Any]]) -> int:
    return sum(1 for obj in cdrs if cdr_store(partner, obj).created)
