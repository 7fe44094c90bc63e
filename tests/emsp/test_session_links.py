"""A session's links to our objects (location, EVSE, token) are found when it arrives and stand while the CPO's
PATCHes keep its ids; a PATCH naming other ids links anew, and a link not found is looked for again
(emsp/services/sessions.py)."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from emsp.inserts import update
from emsp.models import ChargingSession, Evse
from emsp.services import sessions
from tests.factories import PartnerFactory, TokenFactory, stored_location

pytestmark = pytest.mark.django_db


def session_object(location_id: str, evse_uid: str, token_uid: str) -> dict[str, Any]:
    return {
        "country_code": "IN", "party_id": "CPA", "id": "S1", "start_date_time": "2026-06-01T10:00:00Z", "kwh": 0,
        "cdr_token": {"uid": token_uid, "type": "RFID", "contract_id": "C1",
                      "country_code": settings.OCPI_COUNTRY_CODE, "party_id": settings.OCPI_PARTY_ID},
        "auth_method": "WHITELIST", "location_id": location_id, "evse_uid": evse_uid, "connector_id": "1",
        "currency": "INR", "status": "ACTIVE", "last_updated": "2026-06-01T10:00:00Z",
    }  # fmt: skip


def patch(minute: int, **fields: Any) -> dict[str, Any]:
    return {"kwh": minute / 10, "last_updated": f"2026-06-01T10:{minute:02d}:00Z", **fields}


def tables_read(queries: list[dict[str, str]]) -> set[str]:
    return {table for q in queries for table in ("emsp_location", "emsp_evse", "emsp_token") if table in q["sql"]}


def test_a_patch_that_keeps_the_ids_keeps_the_links_without_looking_them_up() -> None:
    partner = PartnerFactory(country_code="IN", party_id="CPA")
    location = stored_location(partner, location_id="LOC1")
    token = TokenFactory()
    sessions.session_put(partner, session_object("LOC1", "LOC1-E1", token.uid))
    linked = ChargingSession.objects.get()
    assert (linked.location, linked.evse, linked.token) == (location, Evse.objects.get(uid="LOC1-E1"), token)

    with CaptureQueriesContext(connection) as seen:
        change = sessions.session_patch(linked.ocpi_key, patch(5))
    assert change is not None and change.applied
    assert not tables_read(seen.captured_queries), [q["sql"][:80] for q in seen.captured_queries]
    stored = ChargingSession.objects.get()
    assert (stored.location_id, stored.evse_id, stored.token_id) == (linked.location_id, linked.evse_id, token.pk)
    assert str(stored.kwh) == "0.5000" and stored.data["kwh"] == 0.5


def test_a_patch_that_names_another_location_links_it_anew() -> None:
    partner = PartnerFactory(country_code="IN", party_id="CPA")
    stored_location(partner, location_id="LOC1")
    other = stored_location(partner, location_id="LOC2")
    token = TokenFactory()
    sessions.session_put(partner, session_object("LOC1", "LOC1-E1", token.uid))
    key = ChargingSession.objects.get().ocpi_key

    sessions.session_patch(key, patch(5, location_id="LOC2", evse_uid="LOC2-E2"))
    stored = ChargingSession.objects.get()
    assert (stored.location, stored.evse) == (other, Evse.objects.get(uid="LOC2-E2"))


def test_a_link_not_found_is_looked_for_again_on_the_next_patch() -> None:
    partner = PartnerFactory(country_code="IN", party_id="CPA")
    token = TokenFactory()
    sessions.session_put(partner, session_object("LATE", "LATE-E1", token.uid))  # the location is not here yet
    assert ChargingSession.objects.get().location is None
    location = stored_location(partner, location_id="LATE")

    sessions.session_patch(ChargingSession.objects.get().ocpi_key, patch(5))
    stored = ChargingSession.objects.get()
    assert (stored.location, stored.evse, stored.token) == (location, Evse.objects.get(uid="LATE-E1"), token)


def test_an_older_patch_changes_nothing_and_an_unknown_session_is_none() -> None:
    partner = PartnerFactory(country_code="IN", party_id="CPA")
    sessions.session_put(partner, {**session_object("LOC1", "LOC1-E1", "T1"), "last_updated": "2026-06-01T10:30:00Z"})
    key = ChargingSession.objects.get().ocpi_key
    change = sessions.session_patch(key, patch(5))
    assert change is not None and not change.applied
    assert ChargingSession.objects.get().kwh == 0
    assert sessions.session_patch("IN*CPA*NOPE", patch(5)) is None


def test_update_writes_what_save_writes() -> None:
    partner = PartnerFactory(country_code="IN", party_id="CPA")
    sessions.session_put(partner, session_object("LOC1", "LOC1-E1", "T1"))
    sessions.session_put(partner, {**session_object("LOC1", "LOC1-E1", "T1"), "id": "S2"})
    first, second = ChargingSession.objects.order_by("id")
    for session in (first, second):
        session.status, session.kwh, session.data = "COMPLETED", "7.25", {**session.data, "status": "COMPLETED"}
        session.received_at = first.received_at
    first.save()
    update(second)
    one, two = (ChargingSession.objects.filter(pk=s.pk).values().get() for s in (first, second))
    differ = {"id", "session_id", "ocpi_key", "data"}  # the sessions' own ids
    assert {k: v for k, v in one.items() if k not in differ} == {k: v for k, v in two.items() if k not in differ}
    assert {**one["data"], "id": "S2"} == two["data"]
    assert two["status"] == "COMPLETED" and str(two["kwh"]) == "7.2500"


def test_update_of_a_row_that_is_gone_raises() -> None:
    partner = PartnerFactory(country_code="IN", party_id="CPA")
    sessions.session_put(partner, session_object("LOC1", "LOC1-E1", "T1"))
    session = ChargingSession.objects.get()
    ChargingSession.objects.all().delete()
    with pytest.raises(DatabaseError):
        update(session)
    assert not ChargingSession.objects.exists()  # save() would have inserted it again


def test_the_session_table_has_no_index_nothing_reads_and_its_key_stays_unique() -> None:
    """emsp/0024: a PATCH writes an entry in each of the table's indexes (its last_updated moves, so none is in
    place); the LIKE indexes and (partner, last_updated) are gone, the key's uniqueness is not."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT indexdef FROM pg_indexes WHERE tablename = 'emsp_chargingsession'")
            definitions = [row[0] for row in cursor.fetchall()]
        assert not [d for d in definitions if "pattern_ops" in d or "(partner_id, last_updated)" in d], definitions
        assert [d for d in definitions if "UNIQUE" in d and "(ocpi_key)" in d]
    partner = PartnerFactory(country_code="IN", party_id="CPA")
    sessions.session_put(partner, session_object("LOC1", "LOC1-E1", "T1"))
    held = ChargingSession.objects.get()
    with pytest.raises(IntegrityError), transaction.atomic():
        ChargingSession.objects.create(
            partner=partner, country_code="IN", party_id="CPA", session_id="s1", ocpi_key=held.ocpi_key,
            start_date_time=held.start_date_time, currency="INR", last_updated=held.last_updated, data={},
        )  # fmt: skip


def test_a_reservation_found_on_a_later_patch_is_fulfilled_though_the_status_stays() -> None:
    """A change that keeps the ids but links a reservation (its command found only now) fulfils it: the status
    has not moved, the reservation has."""
    from datetime import timedelta

    from django.utils import timezone

    from emsp.models import Command, Reservation

    partner = PartnerFactory(country_code="IN", party_id="CPA")
    stored_location(partner, location_id="LOC1")
    token = TokenFactory()
    obj = {**session_object("LOC1", "LOC1-E1", token.uid), "authorization_reference": "AUTH-1"}
    sessions.session_put(partner, obj)  # ACTIVE; no command of that reference yet
    assert ChargingSession.objects.get().reservation is None
    now = timezone.now()
    reservation = Reservation.objects.create(
        evse=Evse.objects.get(uid="LOC1-E1"), token=token, status=Reservation.Status.RESERVED,
        start_at=now - timedelta(minutes=5), expiry_at=now + timedelta(minutes=25),
    )  # fmt: skip
    Command.objects.create(partner=partner, type=Command.Type.RESERVE_NOW, authorization_reference="AUTH-1",
                           token=token, reservation=reservation)  # fmt: skip

    sessions.session_patch(ChargingSession.objects.get().ocpi_key, patch(5))
    assert ChargingSession.objects.get().reservation == reservation
    reservation.refresh_from_db()
    assert reservation.status == Reservation.Status.FULFILLED
