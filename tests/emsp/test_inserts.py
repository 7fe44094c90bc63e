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


def _row(model: type, pk: object) -> dict[str, object]:
    """The stored row but its key and the times its defaults and auto_now_add set (each checked to be set)."""
    values = model.objects.filter(pk=pk).values().get()
    stamped = {"created_at", "next_attempt_at", "received_at"}
    assert all(values[k] is not None for k in stamped if k in values)
    return {k: v for k, v in values.items() if k not in {"id", "delivery_ptr_id", *stamped}}


def test_insert_writes_what_create_writes_a_child_of_two_tables_included() -> None:
    from beckn.models import BecknCallback, BecknMessage
    from emsp.inserts import insert
    from emsp.models import Delivery

    txn = journey()
    txn.save()
    message = {"bap_id": "bap.example", "action": "search", "transaction": txn, "body": "{\"x\": \"\\u00e9\"}",
               "ack": {"message": {"ack": {"status": "ACK"}}}, "status": BecknMessage.Status.PROCESSED}  # fmt: skip
    created = BecknMessage.objects.create(message_id="m-orm", **message)
    inserted = insert(BecknMessage(message_id="m-plain", **message))
    assert inserted.pk is not None and inserted.pk != created.pk and not inserted._state.adding
    assert {**_row(BecknMessage, created.pk), "message_id": "-"} == {
        **_row(BecknMessage, inserted.pk),
        "message_id": "-",
    }
    callback = {"channel": Delivery.Channel.BECKN_CALLBACK, "target": "https://bap.example/beckn/on_search",
                "transaction": txn, "request": inserted, "action": "on_search", "message_id": "m-1",
                "url": "https://bap.example/beckn/on_search", "solicited": True, "body": "{}"}  # fmt: skip
    by_orm = BecknCallback.objects.create(**callback)
    plain = insert(BecknCallback(**callback))
    assert plain.pk == plain.delivery_ptr_id and Delivery.objects.filter(pk=plain.pk).exists()
    assert _row(BecknCallback, by_orm.pk) == _row(BecknCallback, plain.pk)
    assert BecknCallback.objects.get(pk=plain.pk).status == Delivery.Status.PENDING  # the parent's default


def test_insert_of_a_taken_key_raises_the_integrity_error_create_raises() -> None:
    from django.db import IntegrityError

    from beckn.models import BecknMessage
    from emsp.inserts import insert

    values = {"bap_id": "bap.example", "action": "search", "message_id": "dup", "body": "{}", "ack": {}}
    insert(BecknMessage(**values))
    with pytest.raises(IntegrityError), transaction.atomic():
        insert(BecknMessage(**values))
    assert BecknMessage.objects.filter(message_id="dup").count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_child_whose_own_row_fails_leaves_no_parent_row() -> None:
    """Out of any transaction, the two tables of a BecknCallback are written together or not at all."""
    from django.db import DataError

    from beckn.models import BecknCallback
    from emsp.inserts import insert
    from emsp.models import Delivery

    if connection.vendor != "postgresql":
        pytest.skip("SQLite does not enforce a varchar's length")
    too_long = "https://bap.example/" + "x" * 600  # the child's url column holds 500
    with pytest.raises(DataError):
        insert(BecknCallback(channel=Delivery.Channel.BECKN_CALLBACK, target="t", action="on_search", url=too_long,
                             message_id="m-orphan", body="{}"))  # fmt: skip
    assert not Delivery.objects.exists() and not BecknCallback.objects.exists()


def test_an_unsaved_related_object_is_refused_as_save_refuses_it() -> None:
    from beckn.models import BecknMessage
    from emsp.inserts import insert

    with pytest.raises(ValueError, match="unsaved related object"):
        insert(BecknMessage(bap_id="b", action="search", message_id="m", body="{}", ack={}, transaction=journey()))


def test_a_model_with_save_listeners_is_saved_by_the_orm() -> None:
    from django.db.models.signals import post_save

    from beckn.models import BecknMessage
    from emsp.inserts import insert

    heard: list[object] = []

    def listener(sender: object, instance: object, created: bool, **kwargs: object) -> None:
        heard.append((instance, created))

    post_save.connect(listener, sender=BecknMessage)
    try:
        message = insert(BecknMessage(bap_id="b", action="search", message_id="m-heard", body="{}", ack={}))
    finally:
        post_save.disconnect(listener, sender=BecknMessage)
    assert heard == [(message, True)] and BecknMessage.objects.filter(pk=message.pk).exists()


@pytest.mark.django_db(transaction=True)
def test_on_postgresql_a_child_of_one_parent_is_one_statement() -> None:
    """Out of a transaction too: no BEGIN and COMMIT around two INSERTs, one INSERT with the parent's in a CTE."""
    from django.test.utils import CaptureQueriesContext

    from beckn.models import BecknCallback
    from emsp.inserts import insert
    from emsp.models import Delivery

    if connection.vendor != "postgresql":
        pytest.skip("SQLite has no INSERT in a WITH clause; there it is two statements in a transaction")
    with CaptureQueriesContext(connection) as queries:
        plain = insert(BecknCallback(channel=Delivery.Channel.BECKN_CALLBACK, target="t", action="on_search",
                                     url="https://bap.example/on_search", message_id="m-one", body="{}"))  # fmt: skip
    assert len(queries.captured_queries) == 1
    assert BecknCallback.objects.get(pk=plain.pk).delivery_ptr_id == Delivery.objects.get().pk == plain.delivery_ptr_id


def test_insert_of_a_taken_key_raises_django_s_integrity_error() -> None:
    """What callers catch when a row of the same key is written at the same moment (billing's cdr_store: a hub
    retrying a CDR)."""
    from django.db import IntegrityError

    from emsp.inserts import insert

    insert(journey())
    with pytest.raises(IntegrityError), transaction.atomic():
        insert(journey())
    assert BecknTransaction.objects.count() == 1
