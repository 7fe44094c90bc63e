"""The page for the rest of a bill above its hold (billing.tasks.open_balance_checkout) and the on_update that
shows it to the app commit together. A worker killed between saving the page and telling the app (the task is
acks_late: it is delivered again) had left a page saved that nobody was told of: the redelivery returned early
(a page opened), the beat's sweep only looks at pages never opened, and the driver was never asked to pay the
rest. Now the redelivery opens the page again under the same key, which both providers (paysim, in one
process, over their SDKs) answer with the same page, and the app is told of it."""

from __future__ import annotations

from typing import Any

import pytest

from beckn.models import BecknCallback
from billing import tasks as billing_tasks
from billing.models import Payment
from billing.payments import gateway as gateways
from billing.services import payments
from emsp.models import Partner
from tests.beckn.conftest import _fresh_registry_cache, bap, network  # noqa: F401 (the Beckn journey's fixtures)
from tests.beckn.test_actions import last
from tests.beckn.test_payments_journey import charge_and_cdr, start
from tests.beckn.test_payments_provider import _earlier_deliveries as _earlier_deliveries
from tests.beckn.test_payments_provider import book_and_authorise
from tests.beckn.test_payments_provider import provider as provider
from tests.paysim.conftest import paysim as paysim
from tests.paysim.conftest import receiver as receiver
from tests.races import Killed

pytestmark = [pytest.mark.django_db, pytest.mark.we_collect]


def test_a_worker_killed_after_the_balance_page_was_opened_still_tells_the_app(
    bap: Any,  # noqa: F811
    network: Partner,  # noqa: F811
    paysim: str,
    receiver: Any,
    provider: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    order_id, _ = book_and_authorise(bap, paysim, receiver, provider, set())
    start(bap, order_id)

    # The checkouts the providers answered, by their idempotency key.
    opened: list[tuple[str, gateways.Checkout]] = []
    real_gateway = gateways.gateway

    class Recording:
        def __init__(self, name: str) -> None:
            self.inner = real_gateway(name)

        def __getattr__(self, attr: str) -> Any:
            return getattr(self.inner, attr)

        def checkout(self, **kwargs: Any) -> gateways.Checkout:
            page = self.inner.checkout(**kwargs)
            opened.append((kwargs["idempotency_key"], page))
            return page

    monkeypatch.setattr(gateways, "gateway", Recording)

    # The driver charged far more than quoted: the hold is captured, the rest asked on a page of its own. The
    # worker opening that page dies as it tells the app.
    import tests.beckn.test_payments_journey as journey

    original = journey.cdr_store

    def bigger(partner: Any, cdr: dict[str, Any]) -> Any:
        return original(partner, {**cdr, "total_cost": {"excl_vat": 600, "incl_vat": 708}, "total_energy": 40})

    monkeypatch.setattr(journey, "cdr_store", bigger)
    real_tell_app = payments._tell_app

    def killed_at_balance(payment: Payment) -> None:
        if payment.purpose == "balance":
            raise Killed
        real_tell_app(payment)

    monkeypatch.setattr(payments, "_tell_app", killed_at_balance)
    with pytest.raises(Killed):
        charge_and_cdr(bap, network, order_id)
    monkeypatch.setattr(payments, "_tell_app", real_tell_app)
    rest = Payment.objects.get(booking__order_id=order_id, purpose="balance")
    assert rest.status == Payment.Status.PENDING and rest.billed_minor

    # The task is delivered again (acks_late), and the beat's sweep runs.
    with bap.capture(execute=True):
        billing_tasks.open_balance_checkout.apply((rest.pk,))
        billing_tasks.retry_stuck_payment_operations.apply()

    rest.refresh_from_db()
    assert rest.url.startswith(paysim) and rest.checkout_id and rest.requested_minor == rest.billed_minor
    updates = BecknCallback.objects.filter(action="on_update", body__contains=rest.url)
    assert updates.exists(), "no on_update carried the page for the rest of the bill"
    order = last(bap, "on_update")["message"]["order"]
    assert [p.get("url") for p in order["payments"] if p.get("url")][-1] == rest.url
    # Opened twice under one key, the provider answered the same page: the driver has one page to pay.
    pages = [page for key, page in opened if key.startswith(f"{rest.key}:checkout:")]
    assert len(pages) == 2 and pages[0] == pages[1]
    assert (rest.checkout_id, rest.url) == (pages[0].checkout_id, pages[0].url)
