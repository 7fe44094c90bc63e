"""Database invariants and the outbound HTTP seam."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import IntegrityError, connection, transaction
from django.test import override_settings
from django.utils import timezone

from emsp import outbound
from emsp.models import Partner, Reservation
from emsp.services.tokens import token_issue, token_set_blocked
from ocpi.models import PushDelivery
from tests.factories import DriverFactory, TokenFactory, stored_location

pytestmark = pytest.mark.django_db


@pytest.mark.skipif(connection.vendor != "postgresql", reason="exclusion constraints exist on PostgreSQL only")
def test_two_active_reservations_cannot_overlap_on_one_evse(partner: Partner) -> None:
    evse = stored_location(partner).evses.first()
    now = timezone.now()
    Reservation.objects.create(evse=evse, token=TokenFactory(), start_at=now, expiry_at=now + timedelta(minutes=30))
    with pytest.raises(IntegrityError), transaction.atomic():
        Reservation.objects.create(
            evse=evse, token=TokenFactory(), start_at=now + timedelta(minutes=10), expiry_at=now + timedelta(hours=1)
        )
    # A cancelled reservation no longer holds the window; back-to-back windows are fine.
    Reservation.objects.update(status=Reservation.Status.CANCELLED)
    Reservation.objects.create(evse=evse, token=TokenFactory(), start_at=now, expiry_at=now + timedelta(minutes=30))
    Reservation.objects.create(
        evse=evse, token=TokenFactory(), start_at=now + timedelta(minutes=30), expiry_at=now + timedelta(hours=1)
    )


def test_a_reservation_window_must_end_after_it_starts(partner: Partner) -> None:
    evse = stored_location(partner).evses.first()
    now = timezone.now()
    with pytest.raises(IntegrityError), transaction.atomic():
        Reservation.objects.create(evse=evse, token=TokenFactory(), start_at=now, expiry_at=now)


@override_settings(ALLOW_PRIVATE_NETWORKS=False)
@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8000/x", "http://10.1.2.3/ocpi", "http://[::1]/", "http://169.254.169.254/latest", "ftp://x"],
)
def test_the_seam_refuses_private_targets_unless_allowed(url: str) -> None:
    with pytest.raises(outbound.ForbiddenTarget):
        outbound.send("GET", url)


@override_settings(ALLOW_PRIVATE_NETWORKS=True)
def test_the_seam_reports_an_unreachable_peer_as_an_outbound_error() -> None:
    with pytest.raises(outbound.OutboundError):
        outbound.send("GET", "http://127.0.0.1:9/nothing-listens-here", timeout=1)


def test_issuing_and_blocking_a_token_queues_a_push_to_every_connected_cpo(partner: Partner) -> None:
    other = Partner.objects.create(name="B", country_code="IN", party_id="CPB", state=Partner.State.CONNECTED,
                                   endpoints=partner.endpoints)  # fmt: skip
    Partner.objects.create(name="Gone", country_code="IN", party_id="OLD", state=Partner.State.UNREGISTERED,
                           endpoints=partner.endpoints)  # fmt: skip
    token = token_issue(driver=DriverFactory())
    assert set(PushDelivery.objects.values_list("partner_id", flat=True)) == {partner.pk, other.pk}
    token_set_blocked(token=token, blocked=True)
    blocked = PushDelivery.objects.filter(partner=partner).order_by("pk").last()
    assert blocked.payload["valid"] is False
    assert blocked.path == f"/IN/EMS/{token.uid}?type=RFID"
