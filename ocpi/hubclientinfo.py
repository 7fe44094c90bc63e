"""HubClientInfo (mod_hub_client_info): the parties a hub connects us with, pushed by the hub to our receiver
(ocpi/views/hubclientinfo.py) or pulled from its sender, stored per hub (`HubClientInfo`) and shown on the
partner's health page.

A ClientInfo is a record, never a grant. A CPO party a hub announces becomes a REQUESTED party of that
connection (emsp/services/partners.py); the hub may act for it — send its locations, sessions, CDRs — only
once staff grant it. Parties are deliberately not granted automatically, even for a hub we connected to
ourselves: a hub lists every party connected to it, including CPOs we have no roaming contract with (PLANNED
is the spec's own word for those), CPOs we reach directly over another connection (a party belongs to one
connection only) and eMSPs; whose charge points we sell to drivers, and through which connection, is ours to
decide, once per party."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import transaction

from emsp.models import Partner, PartnerParty, ci_key
from emsp.services.partners import partner_parties_claimed
from ocpi.client import OcpiClient, OcpiClientError
from ocpi.models import HubClientInfo
from ocpi.normalize import Issue, Rejected, format_ocpi_datetime, parse_ocpi_datetime
from ocpi.normalize.datetimes import implausible
from ocpi.quality import record_issues
from ocpi.transport import absolute_url

log = logging.getLogger(__name__)

MODULE = "hubclientinfo"
# types.asciidoc Role; mod_hub_client_info ConnectionStatus.
ROLES = frozenset({"CPO", "EMSP", "HUB", "NAP", "NSP", "OTHER", "SCSP"})
STATUSES = frozenset(HubClientInfo.Status.values)
# The versions that have the module (2.2 onwards), and its path at ours.
VERSIONS = ("2.2.1", "2.3.0")
_COUNTRY_CODE = re.compile(r"^[A-Za-z]{2}$")
_PARTY_ID = re.compile(r"^[A-Za-z0-9]{3}$")


def receiver_endpoint(partner: Partner, version: str) -> dict[str, str] | None:
    """Our HubClientInfo receiver as an Endpoint of our version details, for a hub. A partner still in its
    handshake is offered it too: a hub reads our details before its credentials tell us it is one."""
    if version not in VERSIONS:
        return None
    if partner.role != Partner.Role.HUB and partner.state == Partner.State.CONNECTED:
        return None
    return {"identifier": MODULE, "role": "RECEIVER", "url": absolute_url(f"/ocpi/emsp/{version}/{MODULE}")}


def normalize_client_info(
    body: Any, country_code: str | None = None, party_id: str | None = None
) -> tuple[dict[str, Any], list[Issue]]:
    """A ClientInfo object (mod_hub_client_info §"ClientInfo Object": every field required), as the
    normalisers return objects (no issues: nothing is fixed). With the party of the URL, the body's must be
    the same (a missing one is taken from the URL). Raises Rejected naming the field."""
    if not isinstance(body, dict):
        raise Rejected("", "a ClientInfo object expected")
    clean: dict[str, Any] = {}
    for field, pattern, from_url in (
        ("country_code", _COUNTRY_CODE, country_code),
        ("party_id", _PARTY_ID, party_id),
    ):
        value = body.get(field, from_url)
        if not isinstance(value, str) or not pattern.match(value.strip()):
            raise Rejected(field, f"{'2 letters' if field == 'country_code' else '3 letters or digits'} required")
        if from_url is not None and value.strip().upper() != from_url.strip().upper():
            raise Rejected(field, f"{value.strip()!r} differs from the URL ({from_url})")
        clean[field] = value.strip().upper()
    for field, allowed in (("role", ROLES), ("status", STATUSES)):
        value = body.get(field)
        if not isinstance(value, str) or value.strip().upper() not in allowed:
            raise Rejected(field, f"one of {', '.join(sorted(allowed))} required")
        clean[field] = value.strip().upper()
    last_updated = parse_ocpi_datetime(body.get("last_updated"), "last_updated")
    why = implausible(last_updated, event=True)
    if why:
        raise Rejected("last_updated", why)
    clean["last_updated"] = last_updated
    return clean, []


def client_info_store(partner: Partner, info: dict[str, Any]) -> tuple[HubClientInfo, bool]:
    """Keep a hub's ClientInfo unless we hold a newer one (by `last_updated`); a CPO party announced behind the
    hub becomes a REQUESTED party of the connection. Returns (the row, whether this one was kept)."""
    with transaction.atomic():
        row = (
            HubClientInfo.objects.select_for_update()
            .filter(partner=partner, country_code=info["country_code"], party_id=info["party_id"])
            .first()
        )
        if row is not None and row.last_updated > info["last_updated"]:
            return row, False
        fields = {"role": info["role"], "status": info["status"], "last_updated": info["last_updated"]}
        row, _ = HubClientInfo.objects.update_or_create(
            partner=partner, country_code=info["country_code"], party_id=info["party_id"], defaults=fields
        )
        if info["role"] == "CPO" and not _is_us_or_the_hub(partner, info["country_code"], info["party_id"]):
            partner_parties_claimed(partner, [(info["country_code"], info["party_id"])])
    return row, True


def _is_us_or_the_hub(partner: Partner, country_code: str, party_id: str) -> bool:
    key = ci_key(country_code, party_id)
    return key in (partner.party_key, ci_key(settings.OCPI_COUNTRY_CODE, settings.OCPI_PARTY_ID))


def client_info_as_ocpi(row: HubClientInfo) -> dict[str, Any]:
    return {
        "party_id": row.party_id,
        "country_code": row.country_code,
        "role": row.role,
        "status": row.status,
        "last_updated": format_ocpi_datetime(row.last_updated),
    }


def client_info_pull(partner: Partner) -> int | None:
    """GET the list of ClientInfo from the hub's Sender interface, if it offers one, and keep each. The list is
    the hub's whole picture ("Any older information that is not specified in the response is considered as no
    longer valid"): ClientInfo it no longer names is dropped. Returns how many it listed (None: no sender).
    Raises OcpiClientError; nothing is dropped then."""
    url = partner.endpoint_url(MODULE, "SENDER")
    if not url:
        return None
    listed: set[str] = set()
    found: list[tuple[str, Issue]] = []
    for page in OcpiClient(partner).iter_pages(url, module=MODULE):
        for raw in page.items:
            try:
                info, _ = normalize_client_info(raw)
            except Rejected as exc:
                found.append((_object_id(raw), Issue(exc.path, "rejected", exc.reason[:500], False)))
                continue
            client_info_store(partner, info)
            listed.add(ci_key(info["country_code"], info["party_id"]))
    gone = [
        pk
        for pk, country_code, party_id in HubClientInfo.objects.filter(partner=partner).values_list(
            "pk", "country_code", "party_id"
        )
        if ci_key(country_code, party_id) not in listed
    ]
    HubClientInfo.objects.filter(pk__in=gone).delete()
    if found:
        record_issues(partner, MODULE, found)
    log.info("HubClientInfo of %s: %d parties listed, %d dropped", partner, len(listed), len(gone))
    return len(listed)


def _object_id(raw: Any) -> str:
    if not isinstance(raw, dict):
        return "?"
    return ci_key(str(raw.get("country_code")), str(raw.get("party_id")))[:120]


def client_info_refresh(partner: Partner) -> int | None:
    """client_info_pull for a full pull: a hub that fails to list its parties fails no pull of its objects."""
    try:
        return client_info_pull(partner)
    except OcpiClientError as exc:
        log.warning("HubClientInfo of %s not pulled: %s", partner, exc)
        return None


@dataclass
class HubParty:
    """One party behind a hub, for the console: what the hub says of it and what we granted."""

    country_code: str
    party_id: str
    role: str = ""
    status: str = ""  # the hub's ConnectionStatus ("" when the hub never told us)
    last_updated: datetime | None = None
    grant: str = ""  # GRANTED / REQUESTED for this connection, "" when neither
    held_by: Partner | None = None  # another connection the party is granted to

    @property
    def party_key(self) -> str:
        return ci_key(self.country_code, self.party_id)


def hub_parties(partner: Partner) -> list[HubParty]:
    """The parties behind a connection: those its hub announced (HubClientInfo) and those granted or requested
    for it, with the hub's word on their role and connection status."""
    parties: dict[str, HubParty] = {}
    for row in HubClientInfo.objects.filter(partner=partner).order_by("country_code", "party_id"):
        parties[ci_key(row.country_code, row.party_id)] = HubParty(
            row.country_code, row.party_id, row.role, row.status, row.last_updated
        )
    for grant in PartnerParty.objects.filter(partner=partner, own=False).order_by("country_code", "party_id"):
        party = parties.setdefault(
            ci_key(grant.country_code, grant.party_id), HubParty(grant.country_code, grant.party_id)
        )
        party.grant = grant.status
    elsewhere = PartnerParty.objects.filter(status=PartnerParty.Status.GRANTED).exclude(partner=partner)
    for grant in elsewhere.filter(party_id__in={p.party_id for p in parties.values()}).select_related("partner"):
        party = parties.get(ci_key(grant.country_code, grant.party_id))
        if party is not None:
            party.held_by = grant.partner
    return sorted(parties.values(), key=lambda p: p.party_key)
