"""emsp/rows.py: model instances from plain-SQL rows, as the ORM builds them (converters applied), and
`first_where`, the plain `filter().first()` of a Beckn select's small lookups."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from billing.models import BapAgreement
from emsp.models import CircuitBreaker, Partner
from emsp.rows import first_where

pytestmark = pytest.mark.django_db


def test_first_where_is_the_orms_filter_first_on_random_rows(partner: Partner) -> None:
    rng = random.Random(11)
    others = [Partner.objects.create(name=f"P{i}", country_code="IN", party_id=f"P{i:02d}") for i in range(3)]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for index, owner in enumerate([partner, *others]):
        for module in ("locations", "tariffs", "commands"):
            state = rng.choice(list(CircuitBreaker.State))
            CircuitBreaker.objects.create(
                partner=owner, module=module, state=state, reason=f"r{index}é",
                retry_at=start + timedelta(seconds=rng.randrange(10**6)) if rng.random() < 0.7 else None,
            )  # fmt: skip
    for owner in [partner, *others]:
        for module in ("locations", "tariffs", "commands", "cdrs"):
            orm = CircuitBreaker.objects.filter(partner=owner, module=module).exclude(state="CLOSED").first()
            plain = first_where(CircuitBreaker, "t.partner_id = %s AND t.module = %s AND t.state <> %s",
                                [owner.pk, module, "CLOSED"])  # fmt: skip
            if orm is None:
                assert plain is None
                continue
            assert plain is not None and not plain._state.adding
            for field in CircuitBreaker._meta.concrete_fields:  # datetimes come back aware, as the ORM's
                assert getattr(plain, field.attname) == getattr(orm, field.attname), field.name


def test_first_where_takes_the_lowest_key_of_several_and_refuses_an_ordered_model() -> None:
    from emsp.models import DeliveryAttempt  # ordered by its Meta

    rows = [BapAgreement.objects.create(bap_id=f"bap-{i}.example", legal_name="x") for i in range(3)]
    assert first_where(BapAgreement, "t.legal_name = %s", ["x"]).pk == min(r.pk for r in rows)
    assert first_where(BapAgreement, "t.bap_id = %s", ["none"]) is None
    assert DeliveryAttempt._meta.ordering
    with pytest.raises(TypeError):
        first_where(DeliveryAttempt, "t.id = %s", [1])


def test_first_where_orders_by_the_columns_given_then_the_key(partner: Partner) -> None:
    """active_hold's read: the overlapping hold that ends first, as `order_by("expiry_at").first()`."""
    from emsp.models import Reservation
    from emsp.services.bookings import active_hold
    from tests.factories import TokenFactory, stored_location

    evse = stored_location(partner).evses.order_by("uid").first()
    token = TokenFactory()
    start = datetime(2026, 5, 1, 10, tzinfo=UTC)
    rng = random.Random(5)
    begins = start - timedelta(minutes=150)
    for i in range(14):  # one after another: active holds of one EVSE never overlap (PostgreSQL enforces it)
        begins += timedelta(minutes=rng.randrange(0, 15))
        ends = begins + timedelta(minutes=rng.randrange(5, 30))
        Reservation.objects.create(
            reservation_id=f"R{i}", evse=evse, connector_id="1", token=token, start_at=begins, expiry_at=ends,
            status=rng.choice([*Reservation.ACTIVE_STATUSES, Reservation.Status.CANCELLED]),
        )  # fmt: skip
        begins = ends
    found = 0
    for offset in range(-150, 150, 7):
        at = start + timedelta(minutes=offset)
        window = (at, at + timedelta(minutes=20))
        orm = (
            Reservation.objects.filter(
                evse=evse, status__in=Reservation.ACTIVE_STATUSES, start_at__lt=window[1], expiry_at__gt=window[0]
            )
            .order_by("expiry_at", "pk")
            .first()
        )
        assert active_hold(evse, *window) == orm
        found += orm is not None
    assert found > 5  # the windows met holds
