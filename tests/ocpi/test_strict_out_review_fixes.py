"""The strict-out review, fixed: what we send a CPO is spec-valid also where staff, an older row or the partner's
own input put something else in. A reservation's OCPI bookkeeping is read-only in the console (an edited
reservation_id had gone out in RESERVE_NOW and CANCEL_RESERVATION unchecked); every status_message is printable
and bounded (error answers had echoed line breaks and escape sequences); a legacy group_id that is no CiString is
left out; 2.1.1 tokens carry printable ASCII visual_number and issuer."""

from __future__ import annotations

from datetime import timedelta

import orjson
import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.test import Client, RequestFactory, override_settings
from django.urls import reverse
from django.utils import timezone

from emsp.models import Evse, Partner, Reservation, Token
from emsp.services import commands as command_services
from ocpi import transport
from ocpi.rendering import command_as_ocpi, token_as_ocpi
from ocpi.versions.v211 import downgrade_token
from tests.billing.test_console_hardening import change_form
from tests.conftest import OcpiTestClient
from tests.factories import PartnerFactory, TokenFactory, ocpi_location, stored_location

pytestmark = pytest.mark.django_db

BASE = "/ocpi/emsp/2.2.1"


def printable_ascii(value: str) -> bool:
    return value.isascii() and value.isprintable()


# -- 1. a reservation in the console --------------------------------------------------------------------------


def reservation(status: str = Reservation.Status.RESERVED) -> Reservation:
    evse = Evse.objects.filter(location=stored_location(PartnerFactory())).order_by("pk").first()
    now = timezone.now()
    return Reservation.objects.create(
        evse=evse, token=TokenFactory(), status=status, start_at=now, expiry_at=now + timedelta(hours=1)
    )


def test_a_reservations_ocpi_bookkeeping_is_not_changed_in_the_console(admin_client: Client) -> None:
    held = reservation()
    url = reverse("admin:emsp_reservation_change", args=[held.pk])
    told = (held.reservation_id, held.evse_id, held.token_id, held.status, held.start_at, held.expiry_at)
    later = timezone.now() + timedelta(days=3)

    saved = admin_client.post(
        url,
        change_form(admin_client, url, held.pk, reservation_id="RÉSERVATION\t№1 ✓", status="HELD")
        | {"expiry_at_0": later.strftime("%Y-%m-%d"), "expiry_at_1": "10:00:00", "token": str(TokenFactory().pk)},
    )

    assert saved.status_code == 302
    held.refresh_from_db()
    assert (held.reservation_id, held.evse_id, held.token_id, held.status, held.start_at, held.expiry_at) == told
    cancel = command_as_ocpi(command_services.command_cancel_reservation(reservation=held))
    assert cancel["reservation_id"] == told[0] and printable_ascii(cancel["reservation_id"])


def test_reservations_are_neither_added_nor_deleted_in_the_console(admin_client: Client) -> None:
    held = reservation()
    admin_client.raise_request_exception = False

    added = admin_client.post(reverse("admin:emsp_reservation_add"), {"reservation_id": "NEW", "_save": "Save"})
    deleted = admin_client.post(reverse("admin:emsp_reservation_delete", args=[held.pk]), {"post": "yes"})

    assert added.status_code == 403 and deleted.status_code == 403
    assert list(Reservation.objects.values_list("pk", flat=True)) == [held.pk]


def test_the_reservation_page_still_shows_it(admin_client: Client) -> None:
    held = reservation()

    page = admin_client.get(reverse("admin:emsp_reservation_change", args=[held.pk]))

    assert page.status_code == 200
    assert held.reservation_id in page.content.decode()


def test_the_reservation_admins_form_has_nothing_to_edit(rf: RequestFactory) -> None:
    request = rf.get("/")
    request.user = User.objects.create_superuser("root", "r@example.com", "pw-123456-x")
    held = reservation()

    form_class = admin.site._registry[Reservation].get_form(request, held, change=True)

    assert list(form_class.base_fields) == []


# -- 2. status_message: printable, bounded, on every path -----------------------------------------------------


@pytest.mark.parametrize(
    ("message", "sent"),
    [
        ("plain", "plain"),
        ("line\nbreak\ttab\r", "line\\nbreak\\ttab\\r"),
        ("LOC\x1b[31mX", "LOC\\x1b[31mX"),
        ("para\u2028sep\x85", "para\\u2028sep\\x85"),
        ("Électricité ✓", "Électricité ✓"),  # printable UTF-8 is an OCPI string
        ("x" * 255, "x" * 255),
        ("x" * 256, "x" * 254 + "…"),
        ("\n" * 200, "\\n" * 127 + "…"),  # cut after escaping
        ("a" * 251 + "\x1b" + "b" * 10, "a" * 251 + "…"),  # between escapes, never inside one ("\x1…")
    ],
)
def test_the_envelopes_status_message_is_printable_and_at_most_255_characters(message: str, sent: str) -> None:
    body = transport.envelope(status_code=transport.CLIENT_ERROR, message=message)

    assert body["status_message"] == sent
    assert body["status_message"].isprintable() and len(body["status_message"]) <= transport.STATUS_MESSAGE_MAX


def test_a_lone_surrogate_in_a_message_is_escaped_not_a_server_error() -> None:
    response = transport.ocpi_response(status_code=transport.INVALID_PARAMETERS, message="id \ud800 differs")

    assert orjson.loads(response.content)["status_message"] == "id \\ud800 differs"


def test_the_404_of_an_unknown_path_quotes_it_printable(ocpi: OcpiTestClient) -> None:
    body = ocpi.get(f"{BASE}/nothing%0Ahere%09x").json()

    assert body["status_code"] == 2000
    assert body["status_message"].isprintable()
    assert "nothing\\nhere\\tx" in body["status_message"]


def test_an_id_mismatch_quotes_the_partners_id_printable(ocpi: OcpiTestClient) -> None:
    location = ocpi_location("IN", "CPA", "LOC1", evses=1)
    location["id"] = "LOC\r\n\x1b[31mX" + "Y" * 400

    body = ocpi.put(f"{BASE}/locations/IN/CPA/LOC1", location).json()

    assert body["status_code"] == 2001
    assert body["status_message"].isprintable() and len(body["status_message"]) <= 255
    assert body["status_message"].startswith("id in the body (LOC\\r\\n\\x1b[31mXYYY")


def test_a_field_name_with_a_line_break_is_quoted_printable(ocpi: OcpiTestClient) -> None:
    location = ocpi_location("IN", "CPA", "LOC1", evses=1)
    location["bad\nkey"] = "A\x00B"

    body = ocpi.put(f"{BASE}/locations/IN/CPA/LOC1", location).json()

    assert body["status_code"] == 2001
    assert body["status_message"] == "bad\\nkey: a NUL character in a string"


# -- 3. a legacy token row --------------------------------------------------------------------------------------


@pytest.mark.parametrize("group_id", ["GRÜPPE1", "G\t1", " G1", "G1 ", "G\n1", ""])
def test_a_legacy_group_id_that_is_no_cistring_is_left_out(group_id: str) -> None:
    token = TokenFactory(uid="LEGACY01")
    Token.objects.filter(pk=token.pk).update(group_id=group_id)  # as stored before emsp 0029
    token.refresh_from_db()

    assert "group_id" not in token_as_ocpi(token)


def test_a_group_id_that_is_a_cistring_is_sent_as_it_is() -> None:
    token = TokenFactory(uid="GROUPED1", group_id="FLEET-" + "9" * 30)

    assert token_as_ocpi(token)["group_id"] == "FLEET-" + "9" * 30


# -- 4. 2.1.1: string is printable ASCII ----------------------------------------------------------------------


def test_a_211_cpo_is_served_visual_number_and_issuer_in_ascii(ocpi: OcpiTestClient, partner: Partner) -> None:
    TokenFactory(uid="UTF0001", visual_number="Kärtchen 😀 №7", issuer="Électricité ﬁne")
    TokenFactory(uid="UTF0002", visual_number="😀", issuer="東京電力")

    sent = {t["uid"]: t for t in ocpi.get("/ocpi/emsp/2.1.1/tokens").json()["data"]}

    assert sent["UTF0001"]["visual_number"] == "Kartchen No7"
    assert sent["UTF0001"]["issuer"] == "Electricite fine"
    assert "visual_number" not in sent["UTF0002"]
    assert sent["UTF0002"]["issuer"] == "IN EMS"  # our party: the issuer is required


def test_211_ascii_spells_latin_letters_nfkd_leaves_whole() -> None:
    token = TokenFactory(uid="UTF0004", visual_number="Łódź 7", issuer="Ørsted Straße")
    wire = downgrade_token(token_as_ocpi(token))
    assert (wire["visual_number"], wire["issuer"]) == ("Lodz 7", "Orsted Strasse")  # not "odz 7", "rsted Strae"


@override_settings(OCPI_BUSINESS_NAME="Énergie Ouverte ⚡")  # a 2.2.1 string (emsp.E010 takes it)
def test_our_name_in_211_credentials_is_printable_ascii() -> None:
    from ocpi.credentials import our_credentials

    assert our_credentials("t" * 64, "2.1.1")["business_details"]["name"] == "Energie Ouverte"


def test_the_211_token_of_a_command_carries_ascii_too(partner: Partner) -> None:
    token = TokenFactory(uid="UTF0003", visual_number="Ça va", issuer="Ωmega ⚡ Charge")
    wire = downgrade_token(token_as_ocpi(token))

    assert wire["visual_number"] == "Ca va" and wire["issuer"] == "mega Charge"
    assert all(printable_ascii(wire[k]) for k in ("uid", "auth_id", "visual_number", "issuer"))


def test_a_211_visual_number_spelled_longer_by_nfkd_is_cut_to_64() -> None:
    token = {"uid": "U1", "type": "RFID", "contract_id": "C1", "visual_number": "\u2487" * 20, "issuer": "I"}

    wire = downgrade_token(token)

    assert wire["visual_number"] == "(20)" * 16


def test_an_ascii_token_goes_to_211_unchanged(partner: Partner) -> None:
    token = TokenFactory(uid="ASCII01", visual_number="CARD  7", issuer="Open eMSP")

    wire = downgrade_token(token_as_ocpi(token))

    assert wire["visual_number"] == "CARD  7" and wire["issuer"] == "Open eMSP"
