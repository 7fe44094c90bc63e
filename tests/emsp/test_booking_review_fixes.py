"""Bookings and reservations, from a review: a RESERVE_NOW whose answer is lost is an unknown outcome (the
reservation cancelled at the CPO, in case it was made), a start or reservation queued for a booking that has
ended is not sent, a driver who started in time is no no-show, and a window already over is not reserved after
a beat outage."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from urllib3.exceptions import NewConnectionError

from emsp import outbound
from emsp.models import Booking, Command, Evse, Partner, Reservation
from emsp.services import booking_checks, bookings, commands
from tests.factories import TokenFactory, stored_location
from tests.fakes import FakePeer, envelope

pytestmark = pytest.mark.django_db

CPO = "http://127.0.0.1:9/ocpi/cpo/2.2.1"
Capture = Callable[..., AbstractContextManager[Any]]
REAL_SEND = outbound.send  # taken before the `peer` fixture replaces it: a few tests make real connections


@pytest.fixture
def evse(partner: Partner) -> Evse:
    """A RESERVABLE EVSE: a booking for now sends RESERVE_NOW at once."""
    return stored_location(partner).evses.order_by("uid").first()


@pytest.fixture
def capture(django_capture_on_commit_callbacks: Capture) -> Capture:
    return lambda execute=True: django_capture_on_commit_callbacks(execute=execute)


@pytest.fixture(autouse=True)
def _answers(peer: FakePeer) -> Iterator[None]:
    for name in ("RESERVE_NOW", "START_SESSION", "STOP_SESSION", "CANCEL_RESERVATION"):
        peer.route("POST", f"{CPO}/commands/{name}", (200, envelope({"result": "ACCEPTED", "timeout": 30})))
    peer.route("GET", f"{CPO}/sessions", (200, envelope([])))
    yield


def confirm(evse: Evse, capture: Capture, **kwargs: Any) -> Booking:
    with capture():
        booking = bookings.booking_confirm(evse=evse, connector_id="1", token=TokenFactory(), **kwargs)
    booking.refresh_from_db()
    return booking


def reserve_of(booking: Booking) -> Command:
    return Command.objects.get(booking=booking, type=Command.Type.RESERVE_NOW)


# --- 1. a RESERVE_NOW whose answer is lost -----------------------------------------------------------------


def read_timeout(call: dict[str, Any]) -> Any:
    """The CPO took the command (and reserved), its answer never came back."""
    raise outbound.OutboundError("ReadTimeoutError: read timeout")


def test_a_reservation_whose_answer_is_lost_is_cancelled_at_the_cpo_and_a_late_result_still_counts(
    peer: FakePeer, evse: Evse, capture: Capture
) -> None:
    peer.route("POST", f"{CPO}/commands/RESERVE_NOW", read_timeout)
    booking = confirm(evse, capture)
    reserve = reserve_of(booking)
    assert reserve.status == Command.Status.TIMEOUT  # an unknown outcome, not FAILED
    assert "may have reserved" in reserve.error
    assert booking.state == Booking.State.CANCELLED
    assert booking.reservation.status == Reservation.Status.CANCELLED
    (cancel,) = peer.requests_to("CANCEL_RESERVATION")
    assert cancel["json"]["reservation_id"] == booking.reservation.reservation_id
    # The CPO's result comes after all: it counts (the CPO made the reservation), nothing reopens the booking.
    with capture():
        late = commands.command_result_received(reserve, {"result": "ACCEPTED"})
    assert late.status == Command.Status.SUCCEEDED
    booking.refresh_from_db()
    assert booking.state == Booking.State.CANCELLED


def test_a_cancel_that_came_before_the_lost_reservation_was_made_is_sent_again_by_the_checks(
    peer: FakePeer, evse: Evse, capture: Capture
) -> None:
    """The reviewer's run: the reservation's result comes after our cancel, which the CPO answered
    UNKNOWN_RESERVATION; the booking checks cancel once more (before the fix: never, at +2 and +4 min)."""
    peer.route("POST", f"{CPO}/commands/RESERVE_NOW", read_timeout)
    booking = confirm(evse, capture)
    first = Command.objects.get(booking=booking, type=Command.Type.CANCEL_RESERVATION)
    with capture():
        commands.command_result_received(first, {"result": "UNKNOWN_RESERVATION"})
        commands.command_result_received(reserve_of(booking), {"result": "ACCEPTED"})
    with capture():
        booking_checks.booking_reconcile(booking=booking.pk, now=timezone.now() + timedelta(minutes=2))
        booking_checks.booking_reconcile(booking=booking.pk, now=timezone.now() + timedelta(minutes=4))
    assert len(peer.requests_to("CANCEL_RESERVATION")) == 2
    assert Command.objects.filter(booking=booking, type=Command.Type.CANCEL_RESERVATION).count() == 2


def test_a_server_error_from_the_cpo_is_an_unknown_outcome_too(peer: FakePeer, evse: Evse, capture: Capture) -> None:
    peer.route("POST", f"{CPO}/commands/RESERVE_NOW", (503, b"<html>upstream timed out</html>"))
    booking = confirm(evse, capture)
    assert reserve_of(booking).status == Command.Status.TIMEOUT
    assert booking.state == Booking.State.CANCELLED
    assert len(peer.requests_to("CANCEL_RESERVATION")) == 1


@pytest.mark.parametrize(
    "answer", [(200, envelope(status_code=4002)), (200, envelope(status_code=3000)), (502, envelope(status_code=4000))]
)
def test_an_ocpi_answer_that_leaves_the_outcome_open_is_an_unknown_outcome(
    peer: FakePeer, evse: Evse, capture: Capture, answer: tuple[int, Any]
) -> None:
    """A hub's timeout on the forwarded request (4002), its generic error (4000), the CPO's server error (3000):
    the command may have reached the CPO."""
    peer.route("POST", f"{CPO}/commands/RESERVE_NOW", answer)
    booking = confirm(evse, capture)
    assert reserve_of(booking).status == Command.Status.TIMEOUT
    assert len(peer.requests_to("CANCEL_RESERVATION")) == 1


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _plain_http_server() -> tuple[socket.socket, int]:
    """A server that answers plain HTTP where TLS is expected: the handshake fails before any request is sent."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)

    def answer() -> None:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        with conn:
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    threading.Thread(target=answer, daemon=True).start()
    return server, int(server.getsockname()[1])


@pytest.mark.parametrize(
    "refusal", ["refused", "wrapped", "rejected", "http-400", "tls-handshake", "http-500-ocpi-2001", "hub-4003"]
)
def test_a_reservation_the_cpo_never_got_or_refused_is_failed_without_a_cancel(
    peer: FakePeer, evse: Evse, capture: Capture, settings: Any, refusal: str
) -> None:
    settings.ALLOW_PRIVATE_NETWORKS = True
    port = _closed_port()
    tls_server, tls_port = _plain_http_server()

    def tls_handshake(call: dict[str, Any]) -> Any:  # no TLS session, so no HTTP byte was written
        return REAL_SEND("POST", f"https://127.0.0.1:{tls_port}/commands/RESERVE_NOW", json=call["json"], timeout=2)

    def refused(call: dict[str, Any]) -> Any:  # a real connection to a port nobody listens on
        return REAL_SEND("POST", f"http://127.0.0.1:{port}/commands/RESERVE_NOW", json=call["json"], timeout=2)

    def wrapped(call: dict[str, Any]) -> Any:  # as outbound.send words a refused connection
        cause = NewConnectionError(None, "Failed to establish a new connection: [Errno 111] Connection refused")  # type: ignore[arg-type]
        raise outbound.OutboundError(f"NewConnectionError: {cause}") from cause

    answers = {
        "refused": refused,
        "wrapped": wrapped,
        "rejected": (200, envelope({"result": "REJECTED", "timeout": 30})),
        "http-400": (400, envelope(status_code=2001)),
        "tls-handshake": tls_handshake,
        "http-500-ocpi-2001": (500, envelope(status_code=2001)),  # the OCPI status says more: a refusal
        "hub-4003": (200, envelope(status_code=4003)),  # the hub: the CPO is not connected to it
    }
    peer.route("POST", f"{CPO}/commands/RESERVE_NOW", answers[refusal])
    try:
        booking = confirm(evse, capture)
    finally:
        tls_server.close()
    assert reserve_of(booking).status == Command.Status.FAILED
    assert booking.state == Booking.State.CANCELLED
    assert booking.reservation.status in (Reservation.Status.FAILED, Reservation.Status.CANCELLED)
    assert not peer.requests_to("CANCEL_RESERVATION")
    assert not Command.objects.filter(type=Command.Type.CANCEL_RESERVATION).exists()


def test_a_real_read_timeout_is_an_unknown_outcome(peer: FakePeer, evse: Evse, capture: Capture, settings: Any) -> None:
    """A CPO that takes the connection and the request and never answers (urllib3's ReadTimeoutError)."""
    settings.ALLOW_PRIVATE_NETWORKS = True
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    port = server.getsockname()[1]
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(server.accept()[0]), daemon=True).start()

    def silent(call: dict[str, Any]) -> Any:
        return REAL_SEND("POST", f"http://127.0.0.1:{port}/commands/RESERVE_NOW", json=call["json"], timeout=0.3)

    peer.route("POST", f"{CPO}/commands/RESERVE_NOW", silent)
    try:
        booking = confirm(evse, capture)
    finally:
        for sock in [*accepted, server]:
            sock.close()
    assert reserve_of(booking).status == Command.Status.TIMEOUT
    assert booking.state == Booking.State.CANCELLED
    assert len(peer.requests_to("CANCEL_RESERVATION")) == 1


def test_an_accepted_result_after_a_failed_reservation_is_kept_and_the_checks_release_it(
    peer: FakePeer, evse: Evse, capture: Capture
) -> None:
    """A CommandResponse we could not read (FAILED): the CPO's later result says it reserved after all."""
    peer.route("POST", f"{CPO}/commands/RESERVE_NOW", (200, envelope("ACCEPTED")))
    booking = confirm(evse, capture)
    reserve = reserve_of(booking)
    assert reserve.status == Command.Status.FAILED
    assert booking.state == Booking.State.CANCELLED
    assert not peer.requests_to("CANCEL_RESERVATION")
    with capture():
        late = commands.command_result_received(reserve, {"result": "ACCEPTED"})
    assert (late.status, late.result_type) == (Command.Status.FAILED, "ACCEPTED")
    with capture():
        booking_checks.booking_reconcile(booking=booking.pk, now=timezone.now() + timedelta(minutes=2))
    assert len(peer.requests_to("CANCEL_RESERVATION")) == 1


# --- 4. a start or reservation queued for a booking that has ended -----------------------------------------


def test_a_cancel_before_the_queued_reservation_is_sent_stops_it(peer: FakePeer, evse: Evse, capture: Capture) -> None:
    with capture(execute=False) as queued:
        booking = bookings.booking_confirm(evse=evse, connector_id="1", token=TokenFactory())
    with capture():
        bookings.booking_cancel(booking, reason="changed my mind")
    for callback in queued:  # the send task runs only now
        callback()
    reserve = reserve_of(booking)
    assert reserve.status == Command.Status.FAILED
    assert reserve.error.startswith(commands.NOT_SENT) and "CANCELLED" in reserve.error
    assert not peer.requests_to("RESERVE_NOW")
    assert not peer.requests_to("CANCEL_RESERVATION")
    assert Reservation.objects.get(pk=booking.reservation_id).status == Reservation.Status.CANCELLED


def test_a_start_queued_for_a_booking_the_operator_cancelled_is_not_sent(
    peer: FakePeer, partner: Partner, capture: Capture
) -> None:
    evse = stored_location(partner, capabilities=["REMOTE_START_STOP_CAPABLE"]).evses.first()
    booking = confirm(evse, capture)
    with capture(execute=False) as queued:
        bookings.booking_start(booking)
    with capture():
        bookings.cancel_by_provider(booking, "the charger went out of order")
    for callback in queued:
        callback()
    start = Command.objects.get(booking=booking, type=Command.Type.START_SESSION)
    assert start.status == Command.Status.FAILED and start.error.startswith(commands.NOT_SENT)
    assert not peer.requests_to("START_SESSION")


def test_a_cancel_while_the_reservation_is_on_its_way_cancels_it_at_the_cpo(
    peer: FakePeer, evse: Evse, capture: Capture
) -> None:
    """RESERVE_NOW posted, its answer not stored yet (SENT): the CPO may be making it."""
    with capture(execute=False):
        booking = bookings.booking_confirm(evse=evse, connector_id="1", token=TokenFactory())
    Command.objects.filter(pk=reserve_of(booking).pk).update(status=Command.Status.SENT)
    with capture():
        bookings.booking_cancel(booking, reason="changed my mind")
    assert len(peer.requests_to("CANCEL_RESERVATION")) == 1


# --- 5. a driver who started in time is no no-show ---------------------------------------------------------


def test_a_driver_who_started_on_the_reservation_keeps_it_until_the_session_is_reported(
    peer: FakePeer, evse: Evse, capture: Capture
) -> None:
    booking = confirm(evse, capture)
    with capture():
        commands.command_result_received(reserve_of(booking), {"result": "ACCEPTED"})
    with capture():
        bookings.booking_start(booking)
    start = Command.objects.get(booking=booking, type=Command.Type.START_SESSION)
    assert start.reservation_id == booking.reservation_id and start.status == Command.Status.ACCEPTED
    reservation = Reservation.objects.get(pk=booking.reservation_id)
    with capture():
        assert bookings.bookings_expire_no_shows(now=reservation.arrive_by + timedelta(seconds=1)) == 0
    reservation.refresh_from_db()
    assert reservation.status == Reservation.Status.RESERVED
    assert not peer.requests_to("CANCEL_RESERVATION")
    assert Booking.objects.get(pk=booking.pk).state == Booking.State.STARTING
    with pytest.raises(bookings.EvseUnavailable):  # the hold still stands
        bookings.booking_confirm(evse=evse, connector_id="1", token=TokenFactory())


def test_a_start_sent_on_the_reservation_keeps_it_whatever_the_booking_says(
    peer: FakePeer, evse: Evse, capture: Capture
) -> None:
    booking = confirm(evse, capture)
    with capture():
        commands.command_result_received(reserve_of(booking), {"result": "ACCEPTED"})
    reservation = Reservation.objects.get(pk=booking.reservation_id)
    commands.command_start_session(token=booking.token, evse=evse, reservation=reservation, booking=booking)
    with capture():
        assert bookings.bookings_expire_no_shows(now=reservation.arrive_by + timedelta(seconds=1)) == 0
    assert Reservation.objects.get(pk=reservation.pk).status == Reservation.Status.RESERVED


def test_a_no_show_still_ends_the_booking_and_the_reservation(peer: FakePeer, evse: Evse, capture: Capture) -> None:
    booking = confirm(evse, capture)
    with capture():
        commands.command_result_received(reserve_of(booking), {"result": "ACCEPTED"})
    reservation = Reservation.objects.get(pk=booking.reservation_id)
    with capture():
        assert bookings.bookings_expire_no_shows(now=reservation.arrive_by + timedelta(seconds=1)) == 1
    reservation.refresh_from_db()
    assert reservation.status == Reservation.Status.EXPIRED
    assert Booking.objects.get(pk=booking.pk).state == Booking.State.EXPIRED
    (cancel,) = Command.objects.filter(type=Command.Type.CANCEL_RESERVATION)
    assert cancel.booking_id == booking.pk


# --- 6. a window already over after a beat outage ----------------------------------------------------------


def test_after_a_beat_outage_a_window_past_its_arrive_by_is_not_reserved_and_ends_as_a_no_show(
    peer: FakePeer, evse: Evse, capture: Capture
) -> None:
    start = (timezone.now() + timedelta(hours=2)).replace(microsecond=0)
    booking = confirm(evse, capture, window=(start, start + timedelta(hours=1)))
    reservation = Reservation.objects.get(pk=booking.reservation_id)
    assert reservation.reserve_at is not None and reservation.arrive_by is not None
    back = reservation.arrive_by + timedelta(minutes=1)  # the beat is back after the driver's arrive-by time
    with capture():
        assert bookings.reservations_send_due(now=back) == 0
    assert not Command.objects.exists()
    with capture():
        assert bookings.bookings_expire_no_shows(now=back) == 1
    reservation.refresh_from_db()
    assert (reservation.status, reservation.reserve_at) == (Reservation.Status.EXPIRED, None)
    assert Booking.objects.get(pk=booking.pk).state == Booking.State.EXPIRED
    assert not Command.objects.exists()  # nothing was asked of the CPO, so nothing to cancel there
    assert not peer.calls


def test_a_window_already_open_is_still_reserved_while_the_driver_may_come(
    peer: FakePeer, evse: Evse, capture: Capture
) -> None:
    start = (timezone.now() + timedelta(hours=2)).replace(microsecond=0)
    booking = confirm(evse, capture, window=(start, start + timedelta(hours=1)))
    reservation = Reservation.objects.get(pk=booking.reservation_id)
    assert reservation.arrive_by is not None
    with capture():
        assert bookings.reservations_send_due(now=reservation.arrive_by - timedelta(minutes=1)) == 1
    assert len(peer.requests_to("RESERVE_NOW")) == 1


def _self_signed(directory: Any) -> tuple[str, str]:
    """A certificate for 127.0.0.1 and its key, as PEM files (the CPO's TLS server below)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cpo.pem", directory / "cpo.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(cert_file), str(key_file)


def test_a_tls_fault_after_the_command_went_out_is_an_unknown_outcome(
    peer: FakePeer, evse: Evse, capture: Capture, settings: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """The handshake succeeds, the CPO reads the whole RESERVE_NOW, then the TLS stream breaks: urllib3 calls that
    an SSLError too, but the command reached the CPO."""
    import os
    import ssl

    settings.ALLOW_PRIVATE_NETWORKS = True
    cert, key = _self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    monkeypatch.setitem(outbound._pool.connection_pool_kw, "ca_certs", cert)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    port = server.getsockname()[1]
    received: list[bytes] = []

    def serve() -> None:
        try:
            conn = context.wrap_socket(server.accept()[0], server_side=True)
        except OSError:
            return
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(
                next(
                    v for k, _, v in (h.partition(b":") for h in head.split(b"\r\n")) if k.lower() == b"content-length"
                )
            )
            while len(body) < length:
                body += conn.recv(65536)
            received.append(body)
            os.write(conn.fileno(), b"\x17\x03\x03\x00\x10garbage-garbage!")  # a record no TLS session decrypts

    threading.Thread(target=serve, daemon=True).start()
    peer.route(
        "POST",
        f"{CPO}/commands/RESERVE_NOW",
        lambda call: REAL_SEND("POST", f"https://127.0.0.1:{port}/commands/RESERVE_NOW", json=call["json"], timeout=3),
    )
    try:
        booking = confirm(evse, capture)
    finally:
        server.close()
    assert received  # the CPO has the command
    assert reserve_of(booking).status == Command.Status.TIMEOUT
    assert len(peer.requests_to("CANCEL_RESERVATION")) == 1
