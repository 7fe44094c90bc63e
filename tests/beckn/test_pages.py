"""The pages our callbacks link to for people resolve: the terms (STATIC_TERMS, the cancellation terms'
external_ref) and the feedback form of on_rating, which keeps what a driver writes and refuses what isn't text."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.test import Client

from beckn.models import DriverFeedback

pytestmark = pytest.mark.django_db


def test_the_terms_we_link_to_resolve_and_say_what_the_platform_does(settings: object) -> None:
    page = Client().get("/beckn/terms")
    assert page.status_code == 200 and page["Content-Type"].startswith("text/html")
    text = page.content.decode()
    assert settings.LEGAL_ENTITY_NAME in text  # type: ignore[attr-defined]
    assert f"{settings.PAYMENT_AUTHORISATION_MARGIN_PERCENT}&nbsp;%" in text  # type: ignore[attr-defined]
    assert "Cancelling a booking before charging starts is free" in text


def test_the_feedback_form_resolves_and_keeps_a_rating_and_a_comment() -> None:
    client = Client()
    form = client.get("/beckn/feedback?order=ORD-1")
    assert form.status_code == 200 and 'value="ORD-1"' in form.content.decode()
    sent = client.post("/beckn/feedback", {"order_id": "ORD-1", "rating": "4", "comment": "Quick and easy."})
    assert sent.status_code == 200 and "Thank you" in sent.content.decode()
    assert DriverFeedback.objects.values_list("order_id", "rating", "comment").get() == ("ORD-1", 4, "Quick and easy.")


@pytest.mark.parametrize(
    "data",
    [
        {"rating": "9"},
        {"rating": "1e9"},
        {"comment": "bad\x00byte"},
        {"order_id": "ORD\x01", "rating": "3"},
        {"comment": "x" * 5000},
        {},
    ],
)
def test_feedback_that_is_not_text_or_a_rating_is_a_form_error(data: dict[str, str]) -> None:
    answer = Client().post("/beckn/feedback", data)
    assert answer.status_code == 400
    assert not DriverFeedback.objects.exists()


def test_ops_reads_the_feedback_and_nobody_edits_it(login: Callable[[str], Client]) -> None:
    DriverFeedback.objects.create(order_id="ORD-1", rating=2, comment="Charger was slow")
    ops = login("ops")
    page = ops.get("/admin/beckn/driverfeedback/")
    assert page.status_code == 200 and "Charger was slow" in page.content.decode()
    assert ops.get("/admin/beckn/driverfeedback/add/").status_code == 403
