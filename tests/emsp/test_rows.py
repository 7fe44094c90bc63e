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
