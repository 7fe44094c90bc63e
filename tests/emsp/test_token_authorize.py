"""Real-time authorization in one statement (emsp/services/tokens.py `token_authorize`: the token, its driver's
standing, its partner restriction and the requested EVSEs read together) answers as the straightforward ORM
reading does, on random tokens, drivers, restrictions, uid spellings and LocationReferences."""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

import pytest
from django.forms.models import model_to_dict
from django.utils import timezone

from emsp.models import Evse, Partner, Token, ci_key
from emsp.services import tokens
from tests.factories import DriverFactory, PartnerFactory, TokenFactory, stored_location

pytestmark = pytest.mark.django_db


def reference(
    uid: str, token_type: str | None, partner: Partner, refs: dict[str, Any] | None, now: Any
) -> tuple[dict[str, Any], str, dict[str, Any] | None] | None:
    """What the authorization should answer, read with the ORM one question at a time."""
    # mod_tokens: `type` "Default if omitted: RFID".
    found = Token.objects.filter(uid_key=ci_key(uid), type=token_type or Token.Type.RFID)
    candidates = sorted(found, key=lambda t: t.pk)
    if not candidates:
        return None
    token = candidates[0]
    allowed = token.allowed_status(now, partner)
    location = None
    location_id = str((refs or {}).get("location_id") or "").strip()
    if location_id and allowed == Token.Allowed.ALLOWED:
        location = {"location_id": location_id}
        evse_uids = [u.strip() for u in (refs or {}).get("evse_uids") or [] if u.strip()]
        if evse_uids:
            known = set(
                Evse.objects.filter(
                    location__ocpi_key__in=[f"{key}*{ci_key(location_id)}" for key in partner.party_keys()],
                    uid_key__in=[ci_key(u) for u in evse_uids],
                ).values_list("uid_key", flat=True)
            )
            location["evse_uids"] = [u for u in evse_uids if ci_key(u) in known] if known else evse_uids
    return model_to_dict(token), allowed, location


def test_the_single_statement_answers_as_the_orm_reading_does() -> None:
    rng = random.Random(20261204)
    now = timezone.now()
    partners = [PartnerFactory(), PartnerFactory()]
    for partner in partners:
        for n in range(3):
            stored_location(partner, location_id=f"LOC{n}", evses=2)
    uids = [f"TOK{n}" for n in range(12)]
    for uid in uids:
        driver = DriverFactory(
            is_blocked=rng.random() < 0.15,
            wallet_balance=rng.choice([None, None, Decimal("0"), Decimal("-1.5"), Decimal("12.3456")]),
        )
        for token_type in rng.sample([t.value for t in Token.Type], rng.randint(1, 2)):
            token = TokenFactory(
                uid=uid if rng.random() < 0.7 else uid.lower(),
                type=token_type,
                driver=driver,
                is_blocked=rng.random() < 0.15,
                valid=rng.random() < 0.9,
                expires_at=rng.choice([None, None, now - timezone.timedelta(days=1), now + timezone.timedelta(days=9)]),
            )
            if rng.random() < 0.3:
                token.allowed_partners.set(rng.sample(partners, rng.randint(1, 2)))
    evse_pool = ["LOC0-E1", "loc0-e2", "LOC1-E1", "LOC2-E2", "NOPE", " LOC1-E2 "]
    checked = 0
    for _ in range(300):
        partner = rng.choice(partners)
        uid = rng.choice([*uids, "UNKNOWN"])
        uid = uid.lower() if rng.random() < 0.3 else uid
        token_type = rng.choice([None, None, *[t.value for t in Token.Type]])
        refs = rng.choice(
            [
                None,
                {"location_id": rng.choice(["LOC0", "loc1", "LOC2", "ELSEWHERE"])},
                {
                    "location_id": rng.choice(["LOC0", "loc1", "LOC2"]),
                    "evse_uids": rng.sample(evse_pool, rng.randint(1, 4)),
                },
            ]
        )
        expected = reference(uid, token_type, partner, refs, now)
        if expected is None:
            with pytest.raises(tokens.UnknownToken):
                tokens.token_authorize(
                    uid=uid, token_type=token_type, partner=partner, location_references=refs, now=now
                )
            continue
        got = tokens.token_authorize(uid=uid, token_type=token_type, partner=partner, location_references=refs, now=now)
        assert (model_to_dict(got.token), got.allowed, got.location) == expected
        checked += 1
    assert checked > 100  # a third of the draws name a token we hold (one without a type: an RFID token)
