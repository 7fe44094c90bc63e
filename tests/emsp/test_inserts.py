"""insert_if_absent: one INSERT … ON CONFLICT DO NOTHING where get_or_create took a SELECT and a savepoint."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from beckn.models import BecknTransaction
from emsp.inserts import insert_if_absent

pytestmark = pytest.mark.django_db

KEY = ("bap_id", "transaction_id")


def journey(**values: object) -> BecknTransaction:
    return BecknTransaction(
        bap_id="bap.example", transaction_id="t-1", bap_uri="https://bap.example/beckn",
        callback_uri="https://bap.example/beckn", domain="ev-charging:beckn", **values,
    )  # fmt: skip


def test_a_new_row_is_saved_in_one_statement_as_save_would_store_it() -> None:
    txn = journey(customer={"name": "Asha"})
    with CaptureQueriesContext(connection) as seen:
        assert insert_if_absent(txn, KEY) is True
    assert len(seen.captured_queries) == 1 and "ON CONFLICT" in seen.captured_queries[0]["sql"]
    assert txn.pk is not None and not txn._state.adding
    stored = BecknTransaction.objects.get(pk=txn.pk)
    # Defaults, auto_now(_add) and the encrypted field's own preparation applied, as save() would.
    assert (stored.customer, stored.billing, stored.context_location) == ({"name": "Asha"}, {}, {})
    assert stored.created_at is not None and stored.updated_at is not None
    with connection.cursor() as cursor:  # stored encrypted, not as the plain JSON
        cursor.execute("SELECT customer FROM beckn_beckntransaction WHERE id = %s", [txn.pk])
        assert "Asha" not in str(cursor.fetchone()[0])


def test_a_taken_key_inserts_nothing_and_leaves_the_object_unsaved() -> None:
    first = journey(item_id="first")
    insert_if_absent(first, KEY)
    second = journey(item_id="second")
    with transaction.atomic():  # no IntegrityError, so nothing to roll back to: no savepoint needed
        assert insert_if_absent(second, KEY) is False
    assert second.pk is None and second._state.adding
    assert list(BecknTransaction.objects.values_list("item_id", flat=True)) == ["first"]
