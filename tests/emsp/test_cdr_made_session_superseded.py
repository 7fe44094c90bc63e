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
from emsp.models import Booking, ChargingSession, Command
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


def made_of_its_cdr(bap: Any, ocpi: OcpiTestClient) -> ChargingSession:  # noqa: F811
    """A booking's charge whose CDR (naming S-1) came and whose session did not: after the grace, the CDR made the
    session S-1 and billed the booking (463.27 INR from the wallet's hold)."""
    wallet_driver()
    booking = started(bap)
    cdr = {**cdr_of(booking, "CDR-1", session_id="S-1"), "start_date_time": ago(50), "end_date_time": ago(6)}
    with bap.capture(execute=True):
        assert ocpi.post(CDRS, cdr).json()["status_code"] == 1000
    stored = Cdr.objects.get(cdr_id="CDR-1")
    assert stored.charging_session_id is None  # put off for its session
    with bap.capture(execute=True):
        cdr_process(stored.pk, now=timezone.now() + audit.SESSION_GRACE + timedelta(minutes=3))
    session = ChargingSession.objects.get(ocpi_key="IN*CPA*S-1")
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
    wallet_driver()
    booking = started(bap)
    cdr = {**cdr_of(booking, "CDR-1", session_id="S-1"), "start_date_time": ago(50), "end_date_time": ago(6)}
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

    assert "error" not in a_out and "error" not in b_out, (a_out, b_out)
    assert b_out["result"].json()["status_code"] == 1000
    session = ChargingSession.objects.get(booking=booking)
    assert session.ocpi_key == "IN*CPA*S-1" and "made_of_cdr" not in session.data
    assert session.data["meter_id"] == "METER-7"
    assert session.kwh == Decimal("20")
    assert Cdr.objects.get(pk=stored.pk).charging_session_id == session.pk
    assert DriverReceipt.objects.count() == 1
