"""A session we made of a CDR (the CPO had not reported it: sessions.session_from_cdr) gives way to the CPO's own
Session of that id when it comes after all, through the literal OCPI paths: taken whatever its last_updated (the
made one's is the CDR's, which a session's own precedes) when it is COMPLETED, never moved back to an earlier
state, and what billing did stands: the bill's figures, the booking's and the CDR's ties, one bill, and no new
word to the app."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from billing.models import Cdr, DriverReceipt, Payment
from billing.services import audit
from billing.services.audit import cdr_process
from emsp.models import Booking, ChargingSession, Command, Evse, Partner, Reservation
from emsp.services.sessions import session_of_charge
from tests.beckn.conftest import _fresh_registry_cache, bap, network  # noqa: F401 (the Beckn journey's fixtures)
from tests.beckn.test_payments_journey import assert_books_balance, balance
from tests.billing.test_cdr_booking_links import cdr_of, session_of, started, wallet_driver
from tests.billing.test_settlement_review_fixes import _run, _until, needs_postgres
from tests.conftest import CPO_TOKEN, OcpiTestClient

pytestmark = [pytest.mark.django_db, pytest.mark.we_collect]

SESSION = "/ocpi/emsp/2.2.1/sessions/IN/CPA/S-1"
CDRS = "/ocpi/emsp/2.2.1/cdrs"


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def ago(minutes: int) -> str:
    return iso(timezone.now().replace(microsecond=0) - timedelta(minutes=minutes))


def cpo_session(booking: Booking, *, status: str = "COMPLETED", last_updated: str | None = None) -> dict[str, Any]:
    """The CPO's own Session S-1 of the booking's start, as only it carries it: its start and end, a meter, its
    charging period, its running kwh and cost; last updated (by default) before the CDR was."""
    session = {
        **session_of(booking, "S-1"), "status": status, "start_date_time": ago(50), "end_date_time": ago(6),
        "kwh": 19.5, "meter_id": "METER-7", "total_cost": {"excl_vat": 370, "incl_vat": 436.60},
        "charging_periods": [{"start_date_time": ago(50), "dimensions": [{"type": "ENERGY", "volume": 19.5}]}],
        "last_updated": last_updated or ago(5),
    }  # fmt: skip
    if status != "COMPLETED":
        session.pop("end_date_time")
    return session


def made_of_its_cdr(
    bap: Any,  # noqa: F811
    ocpi: OcpiTestClient,
    *,
    session_id: str = "S-1",
    began: int = 50,
    ended: int = 6,
) -> ChargingSession:
    """A booking's charge (`began` to `ended` minutes ago) whose CDR (naming S-1, or `session_id`) came and whose
    session did not: after the grace, the CDR made the session S-1 (one naming none: under the CDR's row) and
    billed the booking (463.27 INR from the wallet's hold)."""
    wallet_driver()
    booking = started(bap)
    cdr = {
        **cdr_of(booking, "CDR-1", session_id=session_id),
        "start_date_time": ago(began),
        "end_date_time": ago(ended),
    }
    with bap.capture(execute=True):
        assert ocpi.post(CDRS, cdr).json()["status_code"] == 1000
    stored = Cdr.objects.get(cdr_id="CDR-1")
    assert stored.charging_session_id is None  # put off for its session
    with bap.capture(execute=True):
        cdr_process(stored.pk, now=timezone.now() + audit.SESSION_GRACE + timedelta(minutes=3))
    session = ChargingSession.objects.get(ocpi_key="IN*CPA*S-1" if session_id else f"CDR*{stored.pk}")
    assert session.data.get("made_of_cdr") == "CDR-1"
    assert Booking.objects.get(pk=booking.pk).state == Booking.State.SETTLED
    return session


def told_the_app(bap: Any) -> int:  # noqa: F811
    return sum(len(bap.bap.callbacks(action)) for action in ("on_status", "on_update"))


def assert_billed_once(made: ChargingSession) -> None:
    """What billing did of the CDR stands: the CDR and the start tied to the session's row, the row to the
    booking, settled; one receipt, the hold captured once, the books balanced."""
    session = ChargingSession.objects.get(ocpi_key="IN*CPA*S-1")
    assert (session.pk, session.booking_id) == (made.pk, made.booking_id)
    assert Cdr.objects.get(cdr_id="CDR-1").charging_session_id == made.pk
    assert Command.objects.get(booking_id=made.booking_id, type="START_SESSION").session_id == made.pk
    assert Booking.objects.get(pk=made.booking_id).state == Booking.State.SETTLED
    assert DriverReceipt.objects.count() == 1
    charge = Payment.objects.get(booking_id=made.booking_id, purpose="charge")
    assert (charge.status, charge.captured_minor) == (Payment.Status.CAPTURED, 46327)
    assert balance("holds:wallet") == 0
    assert_books_balance()


def test_the_cpos_own_session_put_after_its_cdr_takes_the_made_ones_place(
    bap: Any,  # noqa: F811
    network: Any,  # noqa: F811
    ocpi: OcpiTestClient,
) -> None:
    """Last updated before the CDR (as a session is): it had been answered 1000 and dropped as stale, the session
    left with the CDR's figures only."""
    made = made_of_its_cdr(bap, ocpi)
    heard = told_the_app(bap)
    booking = Booking.objects.get(pk=made.booking_id)
    put = cpo_session(booking)

    with bap.capture(execute=True):
        response = ocpi.put(SESSION, put)

    assert (response.status_code, response.json()["status_code"]) == (200, 1000)
    session = ChargingSession.objects.get(ocpi_key="IN*CPA*S-1")
    assert "made_of_cdr" not in session.data
    assert session.data["meter_id"] == "METER-7"
    assert session.data["charging_periods"] == put["charging_periods"]
    assert (iso(session.start_date_time), iso(session.end_date_time)) == (put["start_date_time"], put["end_date_time"])
    assert iso(session.last_updated) == put["last_updated"]  # the CPO's own clock orders its session from now on
    assert session.status == ChargingSession.Status.COMPLETED
    # The bill's figures, not the session's running ones (19.5 kWh, 436.60)
    assert (session.kwh, session.total_cost_excl_vat, session.total_cost_incl_vat) == (
        Decimal("20"),
        Decimal("380"),
        Decimal("448.40"),
    )
    assert ocpi.get(SESSION).json()["data"]["meter_id"] == "METER-7"
    assert_billed_once(made)
    assert told_the_app(bap) == heard


@pytest.mark.parametrize("stamped", ["before", "after"])
@pytest.mark.parametrize("status", ["ACTIVE", "PENDING", "INVALID"])
def test_the_cpos_session_in_another_state_than_completed_leaves_the_made_one_as_it_is(
    bap: Any,  # noqa: F811
    network: Any,  # noqa: F811
    ocpi: OcpiTestClient,
    status: str,
    stamped: str,
) -> None:
    """The CDR closed the charge: an earlier state of it (or INVALID, which the billed CDR contradicts), even
    stamped after the CDR, is answered 1000 and stored nowhere. Stamped after, it had moved the session back to
    ACTIVE and told the app so."""
    made = made_of_its_cdr(bap, ocpi)
    heard = told_the_app(bap)
    booking = Booking.objects.get(pk=made.booking_id)
    stamp = ago(5) if stamped == "before" else iso(timezone.now() + timedelta(minutes=1))

    with bap.capture(execute=True):
        response = ocpi.put(SESSION, cpo_session(booking, status=status, last_updated=stamp))

    assert (response.status_code, response.json()["status_code"]) == (200, 1000)
    session = ChargingSession.objects.get(ocpi_key="IN*CPA*S-1")
    assert session.status == ChargingSession.Status.COMPLETED
    assert session.data == made.data
    assert_billed_once(made)
    assert told_the_app(bap) == heard


def test_a_patch_of_the_made_session_is_told_to_put_it_first(
    bap: Any,  # noqa: F811
    network: Any,  # noqa: F811
    ocpi: OcpiTestClient,
) -> None:
    """A PATCH changes the CPO's object, which we don't hold: it had been applied to the one made of the CDR (its
    status back to ACTIVE, the CDR's periods mixed with the session's)."""
    made = made_of_its_cdr(bap, ocpi)
    heard = told_the_app(bap)
    later = iso(timezone.now() + timedelta(minutes=1))
    period = {"start_date_time": ago(50), "dimensions": [{"type": "ENERGY", "volume": 19.5}]}

    with bap.capture(execute=True):
        answers = [
            ocpi.patch(SESSION, {"status": "ACTIVE", "last_updated": later}),
            ocpi.patch(SESSION, {"charging_periods": [period], "last_updated": ago(5)}),
        ]

    assert [(a.status_code, a.json()["status_code"]) for a in answers] == [(404, 2000), (404, 2000)]
    assert answers[0].json()["status_message"] == "Unknown session: PUT it first"
    session = ChargingSession.objects.get(ocpi_key="IN*CPA*S-1")
    assert (session.status, session.data) == (ChargingSession.Status.COMPLETED, made.data)
    assert told_the_app(bap) == heard
    # Nor is it the CPO's to read back: our object, with our mark, is no Session of theirs.
    read = ocpi.get(SESSION)
    assert (read.status_code, read.json()["status_code"]) == (404, 2000)


def test_once_taken_over_the_session_is_the_cpos_and_keeps_the_bills_figures(
    bap: Any,  # noqa: F811
    network: Any,  # noqa: F811
    ocpi: OcpiTestClient,
) -> None:
    """After the CPO's COMPLETED session: an older version of it is stale, a PATCH is applied, and neither takes
    the bill's figures back to the session's running ones."""
    made = made_of_its_cdr(bap, ocpi)
    booking = Booking.objects.get(pk=made.booking_id)
    with bap.capture(execute=True):
        ocpi.put(SESSION, cpo_session(booking, last_updated=ago(5)))
    heard = told_the_app(bap)
    period = {"start_date_time": ago(30), "dimensions": [{"type": "ENERGY", "volume": 1}]}

    with bap.capture(execute=True):
        stale = ocpi.put(SESSION, cpo_session(booking, status="ACTIVE", last_updated=ago(20)))
        patched = ocpi.patch(SESSION, {"charging_periods": [period], "last_updated": ago(4)})

    assert [stale.json()["status_code"], patched.json()["status_code"]] == [1000, 1000]
    session = ChargingSession.objects.get(ocpi_key="IN*CPA*S-1")
    assert (session.status, session.data["meter_id"]) == (ChargingSession.Status.COMPLETED, "METER-7")
    assert period in session.data["charging_periods"]
    assert (session.kwh, session.total_cost_incl_vat) == (Decimal("20"), Decimal("448.40"))
    assert_billed_once(made)
    assert told_the_app(bap) == heard
    read = ocpi.get(SESSION).json()
    assert (read["status_code"], read["data"]["meter_id"]) == (1000, "METER-7")
    assert "made_of_cdr" not in read["data"]


def test_the_cpos_completed_session_without_an_end_takes_the_cdrs(
    bap: Any,  # noqa: F811
    network: Any,  # noqa: F811
    ocpi: OcpiTestClient,
) -> None:
    made = made_of_its_cdr(bap, ocpi)
    booking = Booking.objects.get(pk=made.booking_id)
    put = cpo_session(booking)
    put.pop("end_date_time")

    with bap.capture(execute=True):
        assert ocpi.put(SESSION, put).json()["status_code"] == 1000

    session = ChargingSession.objects.get(ocpi_key="IN*CPA*S-1")
    assert "made_of_cdr" not in session.data
    assert session.end_date_time == made.end_date_time


def other_booking_started(booking: Booking, network: Partner) -> tuple[Booking, Command]:  # noqa: F811
    """Another booking of the driver's charging at the same EVSE, reserved, with a START_SESSION of its own
    (REF-B) that no session has answered yet."""
    assert booking.token is not None and booking.evse is not None
    now = timezone.now()
    held = Reservation.objects.create(
        evse=booking.evse, token=booking.token, status=Reservation.Status.RESERVED, start_at=now,
        expiry_at=now + timedelta(hours=1),
    )  # fmt: skip
    other = Booking.objects.create(
        order_id="ORDER-B", driver=booking.driver, token=booking.token, evse=booking.evse, connector_id="1",
        reservation=held, state=Booking.State.CHARGING,
    )  # fmt: skip
    start_b = Command.objects.create(
        partner=network, type="START_SESSION", status="ACCEPTED", booking=other, token=booking.token,
        evse=booking.evse, reservation=held, authorization_reference="REF-B",
    )  # fmt: skip
    return other, start_b


def test_the_cpos_session_naming_another_bookings_start_takes_no_tie_to_it(
    bap: Any,  # noqa: F811
    network: Partner,  # noqa: F811
    ocpi: OcpiTestClient,
) -> None:
    """The takeover keeps the made session's authorization_reference (the start its CDR billed): the CPO's naming
    booking B's start had tied that start, and its reservation, to this session; B's CDR without a session_id then
    followed its start here, was held as a second bill of this charge, and B was never billed."""
    made = made_of_its_cdr(bap, ocpi)
    booking = Booking.objects.get(pk=made.booking_id)
    other, start_b = other_booking_started(booking, network)

    with bap.capture(execute=True):
        response = ocpi.put(SESSION, {**cpo_session(booking), "authorization_reference": "REF-B"})

    assert response.json()["status_code"] == 1000
    start_b.refresh_from_db()
    assert start_b.session_id is None
    assert Reservation.objects.get(pk=other.reservation_id).status == Reservation.Status.RESERVED
    session = ChargingSession.objects.get(ocpi_key="IN*CPA*S-1")
    assert session.data["meter_id"] == "METER-7"  # taken, with the start the CDR billed
    assert session.authorization_reference == made.authorization_reference
    assert session.reservation_id == made.reservation_id
    # B's CDR without a session_id finds no session of its start: put off for it, then billed on B.
    assert session_of_charge(network.pk, "IN", "CPA", "", "REF-B") is None
    assert_billed_once(made)


def test_the_cpos_session_naming_another_evse_and_token_keeps_the_billed_ones(
    bap: Any,  # noqa: F811
    network: Partner,  # noqa: F811
    ocpi: OcpiTestClient,
) -> None:
    made = made_of_its_cdr(bap, ocpi)
    booking = Booking.objects.get(pk=made.booking_id)
    put = cpo_session(booking)
    other_evse = Evse.objects.filter(location_id=booking.evse.location_id).exclude(pk=booking.evse_id).first()
    assert other_evse is not None
    put.update(evse_uid=other_evse.uid, connector_id="2", cdr_token={**put["cdr_token"], "uid": "OTHER-UID"})

    with bap.capture(execute=True):
        assert ocpi.put(SESSION, put).json()["status_code"] == 1000

    session = ChargingSession.objects.get(ocpi_key="IN*CPA*S-1")
    assert session.data["meter_id"] == "METER-7"
    assert (session.evse_uid, session.connector_id, session.token_uid) == (
        made.evse_uid,
        made.connector_id,
        made.token_uid,
    )
    assert (session.evse_id, session.token_id) == (made.evse_id, made.token_id)
    assert_billed_once(made)


def test_a_retried_takeover_or_a_later_put_keeps_the_billed_start_and_takes_the_cpos_figures(
    bap: Any,  # noqa: F811
    network: Partner,  # noqa: F811
    ocpi: OcpiTestClient,
) -> None:
    """The takeover's mark stays: a newer PUT naming another start had tied that start here. Figures after the
    takeover are the CPO's word on its session (kept for good, a corrected bill had left the app shown the voided
    one's), so the same PUT again (its last_updated is not stale) or a PATCH sets them."""
    made = made_of_its_cdr(bap, ocpi)
    booking = Booking.objects.get(pk=made.booking_id)
    put = cpo_session(booking)
    with bap.capture(execute=True):
        ocpi.put(SESSION, put)
    heard = told_the_app(bap)
    _, start_b = other_booking_started(booking, network)
    running = {"kwh": 19.5, "total_cost": {"excl_vat": 370, "incl_vat": 436.60}, "last_updated": ago(4)}
    newer = {**put, "authorization_reference": "REF-B", "last_updated": ago(3)}

    answers: list[int] = []
    figures: list[tuple[Decimal, Decimal | None, Decimal | None]] = []
    with bap.capture(execute=True):
        for send, body in ((ocpi.put, put), (ocpi.patch, running), (ocpi.put, newer)):
            answers.append(send(SESSION, body).json()["status_code"])
            session = ChargingSession.objects.get(ocpi_key="IN*CPA*S-1")
            figures.append((session.kwh, session.total_cost_excl_vat, session.total_cost_incl_vat))

    assert answers == [1000, 1000, 1000]
    assert figures == [(Decimal("19.5"), Decimal("370"), Decimal("436.60"))] * 3
    assert iso(session.last_updated) == newer["last_updated"]  # applied, not stale
    assert session.authorization_reference == made.authorization_reference
    start_b.refresh_from_db()
    assert start_b.session_id is None
    assert_billed_once(made)
    assert told_the_app(bap) == heard


@pytest.mark.parametrize("version", ["2.2.1", "2.1.1", "2.3.0"])
def test_a_taken_over_session_reads_back_without_our_mark(
    bap: Any,  # noqa: F811
    network: Partner,  # noqa: F811
    ocpi: OcpiTestClient,
    version: str,
) -> None:
    made = made_of_its_cdr(bap, ocpi)
    booking = Booking.objects.get(pk=made.booking_id)
    with bap.capture(execute=True):
        ocpi.put(SESSION, cpo_session(booking))
    assert ChargingSession.objects.get(ocpi_key="IN*CPA*S-1").data.get("billed_of_cdr") == "CDR-1"

    read = ocpi.get(SESSION.replace("2.2.1", version)).json()

    assert read["status_code"] == 1000
    assert read["data"]["meter_id"] == "METER-7"
    assert not {"made_of_cdr", "billed_of_cdr"} & set(read["data"])


def cpo_session_211(booking: Booking, *, status: str = "COMPLETED") -> dict[str, Any]:
    """The CPO's own Session S-1 of the booking's charge in OCPI 2.1.1: no authorization_reference (its start is
    found by our records), the driver's contract as `auth_id`, the location whole with its EVSE and connector."""
    put = cpo_session(booking, status=status)
    assert booking.evse is not None and booking.token is not None
    session = {
        "id": "S-1", "start_datetime": put["start_date_time"], "kwh": put["kwh"], "auth_id": booking.token.contract_id,
        "auth_method": "AUTH_REQUEST", "meter_id": put["meter_id"], "currency": "INR", "total_cost": 370,
        "location": {"id": booking.evse.location.location_id,
                     "evses": [{"uid": booking.evse.uid, "connectors": [{"id": "1"}]}]},
        "charging_periods": put["charging_periods"], "status": status, "last_updated": put["last_updated"],
    }  # fmt: skip
    if "end_date_time" in put:
        session["end_datetime"] = put["end_date_time"]
    return session


@pytest.mark.parametrize("version", ["2.2.1", "2.1.1"])
def test_the_cpos_session_of_a_charge_whose_cdr_named_none_takes_the_made_ones_row_and_key(
    bap: Any,  # noqa: F811
    network: Partner,  # noqa: F811
    ocpi: OcpiTestClient,
    version: str,
) -> None:
    """A CDR naming no session (optional in 2.2.1, never in 2.1.1) made the booking's session under its row
    (`CDR*<pk>`). The CPO's own session of that charge, found by its start (2.2.1: its authorization_reference;
    2.1.1: the made one's contract, EVSE and time), takes the made one's place and key: it had been stored as a
    second session of the booking (2.1.1: of no booking), the app told of it once more."""
    made = made_of_its_cdr(bap, ocpi, session_id="")
    booking = Booking.objects.get(pk=made.booking_id)
    heard = told_the_app(bap)
    body = cpo_session(booking) if version == "2.2.1" else cpo_session_211(booking)

    with bap.capture(execute=True):
        response = ocpi.put(SESSION.replace("2.2.1", version), body)

    assert (response.status_code, response.json()["status_code"]) == (200, 1000)
    (session,) = ChargingSession.objects.all()
    assert (session.pk, session.ocpi_key, session.session_id) == (made.pk, "IN*CPA*S-1", "S-1")
    assert session.data["meter_id"] == "METER-7"
    assert (session.kwh, session.total_cost_incl_vat) == (Decimal("20"), Decimal("448.40"))
    assert session.authorization_reference == made.authorization_reference
    assert Cdr.objects.get(cdr_id="CDR-1").charging_session_id == made.pk
    assert Command.objects.get(booking=booking, type="START_SESSION").session_id == made.pk
    assert Booking.objects.get(pk=booking.pk).state == Booking.State.SETTLED
    assert DriverReceipt.objects.count() == 1
    assert told_the_app(bap) == heard
    read = ocpi.get(SESSION).json()
    assert (read["status_code"], read["data"]["id"]) == (1000, "S-1")
    assert not {"made_of_cdr", "billed_of_cdr"} & set(read["data"])


@pytest.mark.parametrize("version", ["2.2.1", "2.1.1"])
def test_the_cpos_active_session_of_a_charge_whose_cdr_named_none_is_not_taken(
    bap: Any,  # noqa: F811
    network: Partner,  # noqa: F811
    ocpi: OcpiTestClient,
    version: str,
) -> None:
    """The CDR closed the charge: an ACTIVE session of it, late, is answered 1000 and stored nowhere."""
    made = made_of_its_cdr(bap, ocpi, session_id="")
    booking = Booking.objects.get(pk=made.booking_id)
    heard = told_the_app(bap)
    body = cpo_session(booking, status="ACTIVE") if version == "2.2.1" else cpo_session_211(booking, status="ACTIVE")

    with bap.capture(execute=True):
        response = ocpi.put(SESSION.replace("2.2.1", version), body)

    assert response.json()["status_code"] == 1000
    (session,) = ChargingSession.objects.all()
    assert (session.ocpi_key, session.data) == (made.ocpi_key, made.data)
    assert told_the_app(bap) == heard


def test_a_2_1_1_session_of_the_drivers_next_charge_is_not_taken_for_the_made_one(
    bap: Any,  # noqa: F811
    network: Partner,  # noqa: F811
    ocpi: OcpiTestClient,
) -> None:
    """A short charge (its CDR named no session: 2.1.1), then the driver's next one at the same EVSE begun a minute
    after it ended, within 5 minutes of its start: that session is not the made one's (the two charges don't
    overlap), and is stored as a session of its own, not dropped as a late ACTIVE state of the made one."""
    made = made_of_its_cdr(bap, ocpi, session_id="", began=9, ended=7)
    booking = Booking.objects.get(pk=made.booking_id)
    body = {**cpo_session_211(booking, status="ACTIVE"), "id": "S-2", "start_datetime": ago(6)}

    with bap.capture(execute=True):
        response = ocpi.put("/ocpi/emsp/2.1.1/sessions/IN/CPA/S-2", body)

    assert (response.status_code, response.json()["status_code"]) == (201, 1000)
    assert ChargingSession.objects.get(pk=made.pk).data == made.data
    assert ChargingSession.objects.get(ocpi_key="IN*CPA*S-2").status == ChargingSession.Status.ACTIVE


@needs_postgres
@pytest.mark.django_db(transaction=True)
def test_the_cpos_session_put_while_its_cdr_makes_it_takes_its_place(
    bap: Any,  # noqa: F811
    network: Any,  # noqa: F811
    ocpi: OcpiTestClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The PUT comes while the CDR's worker is making the session (it holds the session key's advisory lock, the
    start's and the booking's rows): the PUT waits for the key, then finds the made session and takes its place.
    No deadlock, one session, one bill."""
    booking, stored, a_out, b_out = put_while_its_cdr_makes_the_session(bap, ocpi, monkeypatch, session_id="S-1")

    assert "error" not in a_out and "error" not in b_out, (a_out, b_out)
    assert b_out["result"].json()["status_code"] == 1000
    session = ChargingSession.objects.get(booking=booking)
    assert session.ocpi_key == "IN*CPA*S-1" and "made_of_cdr" not in session.data
    assert session.data["meter_id"] == "METER-7"
    assert session.kwh == Decimal("20")
    assert Cdr.objects.get(pk=stored.pk).charging_session_id == session.pk
    assert DriverReceipt.objects.count() == 1


@needs_postgres
@pytest.mark.django_db(transaction=True)
def test_the_cpos_session_put_while_a_cdr_naming_none_makes_it_takes_its_row(
    bap: Any,  # noqa: F811
    network: Partner,  # noqa: F811
    ocpi: OcpiTestClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The PUT comes while the worker of a CDR naming no session is making it (it holds the start's and the
    booking's rows): the PUT waits for the start's row, then finds the made session and takes its row and key.
    No deadlock, one session, one bill."""
    booking, stored, a_out, b_out = put_while_its_cdr_makes_the_session(bap, ocpi, monkeypatch)

    assert "error" not in a_out and "error" not in b_out, (a_out, b_out)
    assert (b_out["result"].status_code, b_out["result"].json()["status_code"]) == (200, 1000)
    (session,) = ChargingSession.objects.all()
    assert (session.booking_id, session.ocpi_key) == (booking.pk, "IN*CPA*S-1")
    assert session.data["meter_id"] == "METER-7" and session.kwh == Decimal("20")
    assert Cdr.objects.get(pk=stored.pk).charging_session_id == session.pk
    assert DriverReceipt.objects.count() == 1


def test_after_a_takeover_a_corrected_bill_and_the_cpos_corrected_session_are_shown(
    bap: Any,  # noqa: F811
    network: Partner,  # noqa: F811
    ocpi: OcpiTestClient,
) -> None:
    """CDR-1 billed the charge through the made session, the CPO's session took its place, then a credit voided
    CDR-1 and CDR-2 billed 15 kWh: the CPO's corrected session had been kept at CDR-1's 20 kWh and 448.40 for
    good, the app shown the voided bill."""
    from tests.billing.test_cdr_booking_links import credit_for

    made = made_of_its_cdr(bap, ocpi)
    booking = Booking.objects.get(pk=made.booking_id)
    with bap.capture(execute=True):
        ocpi.put(SESSION, cpo_session(booking))
    first = Cdr.objects.get(cdr_id="CDR-1")
    corrected = {
        **cdr_of(booking, "CDR-2", session_id="S-1", excl=300, incl=354),
        "total_energy": 15,
        "start_date_time": ago(50),
        "end_date_time": ago(6),
    }
    with bap.capture(execute=True):
        ocpi.post(CDRS, credit_for(first, "CREDIT-1"))
        ocpi.post(CDRS, corrected)
        for cdr in Cdr.objects.filter(processed_at__isnull=True):
            cdr_process(cdr.pk, now=timezone.now() + audit.SESSION_GRACE + timedelta(minutes=3))
    put = {**cpo_session(booking, last_updated=ago(1)), "kwh": 15, "total_cost": {"excl_vat": 300, "incl_vat": 354}}
    with bap.capture(execute=True):
        assert ocpi.put(SESSION, put).json()["status_code"] == 1000
    session = ChargingSession.objects.get(ocpi_key="IN*CPA*S-1")
    assert (session.kwh, session.total_cost_incl_vat) == (Decimal("15"), Decimal("354"))
    assert session.authorization_reference == made.authorization_reference


def test_a_2_1_1_session_of_the_drivers_previous_charge_is_not_taken_for_the_made_one(
    bap: Any,  # noqa: F811
    network: Partner,  # noqa: F811
    ocpi: OcpiTestClient,
) -> None:
    """The booked charge ran 9 to 2 minutes ago (its 2.1.1 CDR made CDR*<row>); the driver's charge before, S-0,
    ended 12 minutes ago at the same EVSE: matched with 5 minutes' slack on the made one's start, it had taken the
    made row (the booking shown S-0's times with the bill), and the real session was stored with no booking."""
    made = made_of_its_cdr(bap, ocpi, session_id="", began=9, ended=2)
    booking = Booking.objects.get(pk=made.booking_id)
    earlier = {
        **cpo_session_211(booking),
        "id": "S-0",
        "start_datetime": ago(14),
        "end_datetime": ago(12),
        "kwh": 0.4,
        "meter_id": "EARLIER",
    }
    with bap.capture(execute=True):
        assert ocpi.put("/ocpi/emsp/2.1.1/sessions/IN/CPA/S-0", earlier).json()["status_code"] == 1000
    assert ChargingSession.objects.get(pk=made.pk).ocpi_key == made.ocpi_key
    own = {**cpo_session_211(booking), "id": "S-1", "start_datetime": ago(9), "end_datetime": ago(2)}
    with bap.capture(execute=True):
        assert ocpi.put("/ocpi/emsp/2.1.1/sessions/IN/CPA/S-1", own).json()["status_code"] == 1000
    assert ChargingSession.objects.get(pk=made.pk).ocpi_key == "IN*CPA*S-1"


def put_while_its_cdr_makes_the_session(
    bap: Any,  # noqa: F811
    ocpi: OcpiTestClient,
    monkeypatch: pytest.MonkeyPatch,
    **cdr_fields: Any,
) -> tuple[Booking, Cdr, dict[str, Any], dict[str, Any]]:
    """The CPO's session PUT sent while the worker of the booking's CDR (past its grace) is making a session of
    it, held inside `session_from_cdr`; both run to their end. The booking, the CDR and each thread's outcome."""
    wallet_driver()
    booking = started(bap)
    cdr = {**cdr_of(booking, "CDR-1", **cdr_fields), "start_date_time": ago(50), "end_date_time": ago(6)}
    with bap.capture(execute=True):
        ocpi.post(CDRS, cdr)
    stored = Cdr.objects.get(cdr_id="CDR-1")
    reached, real = threading.Event(), audit.session_from_cdr

    def slow(*args: Any) -> ChargingSession:
        reached.set()
        _until(threading.Event())
        return real(*args)

    monkeypatch.setattr(audit, "session_from_cdr", slow)
    put = cpo_session(booking)
    later = timezone.now() + audit.SESSION_GRACE + timedelta(minutes=3)
    a, a_out = _run(lambda: cdr_process(stored.pk, now=later))
    assert reached.wait(10)
    b, b_out = _run(lambda: OcpiTestClient(CPO_TOKEN).put(SESSION, put))
    a.join(30)
    b.join(30)
    return booking, stored, a_out, b_out
