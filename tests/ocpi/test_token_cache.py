"""The per-process token cache (ocpi/transport.py `partner_for_token`, cached=True) hands each request its own
copy of the partner: what one request changes on it, the next does not see."""

from __future__ import annotations

import pytest

from emsp.models import Partner
from ocpi.transport import partner_for_token
from tests.conftest import CPO_TOKEN

pytestmark = pytest.mark.django_db


def test_each_cached_answer_is_a_copy(partner: Partner, django_assert_num_queries) -> None:
    partner_for_token([CPO_TOKEN], allow_token_a=False, cached=True)  # read from the database and cached
    with django_assert_num_queries(0):  # the cache answers
        second, _, _ = partner_for_token([CPO_TOKEN], allow_token_a=False, cached=True)
        second.name = "changed by a request"
        second._state.fields_cache["x"] = object()
        second._state.db = "elsewhere"
        third, _, _ = partner_for_token([CPO_TOKEN], allow_token_a=False, cached=True)
    assert second is not third
    assert second.pk == third.pk == partner.pk
    assert third.name == partner.name
    assert "x" not in third._state.fields_cache
    assert third.party_keys() == partner.party_keys()
    assert not third._state.adding and third._state.db == "default"
