"""A booking's money, from the terms offered at init to the refund of a credit (issue 12).

Who collects is agreed per app (BapAgreement): by default we collect (the BPP), through the provider of the
currency (billing/payments/gateway.py) or from a prepaid driver's wallet; an app with `collects` set collects
itself and settles with us per its window.

When we collect through a provider:
1. init: a Payment (PENDING) and a hosted checkout for the quote plus a margin
   (PAYMENT_AUTHORISATION_MARGIN_PERCENT): the driver authorises it on the provider's page (`payments[].url`);
2. the provider's webhook says AUTHORISED: the hold is booked (postings.authorisation); confirm is accepted
   only once the payment is authorised;
3. the CDR comes: the bill is booked (postings.charge, in the CDR's transaction) and the capture is queued;
4. capture of the bill, up to the authorised amount: the provider releases the rest. **A bill above the hold**
   is captured up to the hold and the rest is asked for with a new checkout (a `balance` payment) — we never
   take more than the driver authorised;
5. a cancel before charging releases the hold (our cancellation terms charge no fee); a credit (a CPO's credit
   CDR, or one granted in a dispute) is taken off a balance still asked for (its page replaced by one for the
   rest), else refunded through the provider.

Prepaid wallet: confirm holds the quote plus margin on the wallet (refused if the balance less what is already
held would go below the driver's `wallet_limit`); the bill is taken from the wallet in the CDR's transaction.

Every call to a provider is a PaymentOperation written PENDING before the call, with the idempotency key that
goes to the provider: a crash or a retry repeats the same key and never moves money twice.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from decimal import ROUND_CEILING, Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Exists, F, OuterRef, Q, QuerySet, Sum
from django.utils import timezone

from billing.models import (
    BapAgreement,
    Cdr,
    CdrAudit,
    Dispute,
    DriverReceipt,
    LedgerAccount,
    LedgerEntry,
    LedgerLine,
    PartnerTerms,
    Payment,
    PaymentOperation,
    ProviderWebhook,
    Quote,
)
from billing.money import minor_units, round_money
from billing.payments import gateway as gateways
from billing.services import accounts, ledger, postings
from billing.services.driver_pricing import emsp_fee, partner_terms
from billing.services.ledger import balance, from_minor, to_minor
from emsp import events
from emsp.celery import run_after_commit
from emsp.models import Booking, ChargingSession, Driver
from emsp.rows import first_where

log = logging.getLogger(__name__)

HUNDRED = Decimal("100")
ZERO = Decimal("0")
REFERENCE_PREFIX = "pay-"


class PaymentRefused(Exception):
    """The payment can't go on as asked (wallet too low, not authorised yet, an amount that isn't the bill)."""


# --- terms ---------------------------------------------------------------------------------------------


def agreement_for(bap_id: str) -> BapAgreement:
    """The app's agreement, or the defaults (we collect, no finder fee, weekly settlement)."""
    return first_where(BapAgreement, "t.bap_id = %s", [bap_id]) or BapAgreement(
        bap_id=bap_id, collects=settings.PAYMENT_DEFAULT_BAP_COLLECTS
    )


def authorisation_minor(amount: Decimal, currency: str) -> int:
    """What we ask the driver to authorise for a quoted `amount`: the quote plus the margin, rounded up to the
    currency's minor unit (a charge may run above its estimate; what it doesn't use is released)."""
    margin = Decimal(settings.PAYMENT_AUTHORISATION_MARGIN_PERCENT) / HUNDRED
    held = (amount * (1 + margin)).quantize(Decimal(1).scaleb(-minor_units(currency)), rounding=ROUND_CEILING)
    return to_minor(held, currency)


def reference_of(payment: Payment) -> str:
    """Our reference of a payment at the provider (metadata / notes): comes back in its webhooks."""
    return f"{REFERENCE_PREFIX}{payment.key}"


# The keys of balance payments made before they were derived (`bill-<cdr pk>`): still found by their webhooks.
_OLD_BILL_KEY = re.compile(r"bill-\d{1,27}")


def _payment_of_reference(reference: str) -> Payment | None:
    key = reference.removeprefix(REFERENCE_PREFIX)
    if not reference.startswith(REFERENCE_PREFIX):
        return None
    if not (len(key) == 32 and key.isalnum()) and not _OLD_BILL_KEY.fullmatch(key):
        return None
    return Payment.objects.filter(key=key).first()


def _derived_key(payment: Payment, what: str) -> str:
    """A key of the same shape as a new payment's (32 hex), derived from another payment's random key and what the
    new one is for: the same bill gets the same payment when billed again (get_or_create), and its webhooks find
    it by reference (a `bill-<cdr>` key had matched none: the driver paid the page, the hold was never captured)."""
    return hashlib.sha256(f"{payment.key}:{what}".encode()).hexdigest()[:32]


def _balance_payment(charge: Payment, what: str, billed: int) -> tuple[Payment, bool]:
    """The `balance` payment for a bill the charge payment can't take (`what`: which one), or for what is left of
    a balance payment a credit lowered (`charge` is then that one, `what` LOWERED), made once: (it, made now)."""
    return Payment.objects.get_or_create(
        key=_derived_key(charge, what),
        defaults={
            "booking": charge.booking,
            "driver": charge.driver,
            "bap_id": charge.bap_id,
            "provider": charge.provider,
            "currency": charge.currency,
            "type": Payment.Type.POST_FULFILLMENT,
            "purpose": "balance",
            "billed_minor": billed,
        },
    )


# A balance payment a credit lowered is replaced by one of this `what` (_balance_lowered): the payments that
# replaced a page one after another are found from it by their keys (_last_lowered).
LOWERED = "lowered"


def _last_lowered(payment: Payment) -> Payment | None:
    """The last of the balance payments that replaced `payment`'s page one after another (each a credit lowering
    the one before), or None."""
    last, current = None, payment
    for _ in range(100):  # one a credit: far more than a charge ever has
        following = Payment.objects.filter(key=_derived_key(current, LOWERED)).first()
        if following is None:
            break
        last = current = following
    return last


def _still_asking(payment: Payment) -> bool:
    """A balance payment whose page asks the driver for its bill and has taken nothing: pending, or failed at its
    page (a declined card: the driver may still pay it)."""
    return (
        payment.status in (Payment.Status.PENDING, Payment.Status.FAILED)
        and payment.authorised_minor == 0
        and (payment.billed_minor or 0) > 0
    )


def _withdrawn_page(payment: Payment) -> bool:
    """A balance payment a credit lowered or cancelled, or whose bill a page it replaced took (_withdraw): released
    with nothing ever held. Its page is closed at the provider after the commit, so the driver may still pay it
    until then (or if the provider can't be reached)."""
    return payment.purpose == "balance" and payment.status == Payment.Status.RELEASED and payment.authorised_minor == 0


def _withdraw(payment: Payment, why: str) -> None:
    """The payment asks for nothing any more: released with nothing taken, no bill and no page shown to the app,
    and its page closed at the provider after the commit (billing.tasks.expire_checkout: Stripe's session
    expired, Razorpay's link cancelled). Paid before it closes, it is taken over (_balance_taken_over)."""
    Payment.objects.filter(pk=payment.pk).update(
        status=Payment.Status.RELEASED, billed_minor=0, url="", failure=why[:300], updated_at=timezone.now()
    )
    payment.status, payment.billed_minor, payment.url, payment.failure = Payment.Status.RELEASED, 0, "", why[:300]
    _tell_app(payment)
    run_after_commit("billing.tasks.expire_checkout", payment.pk)


# A withdrawn page (_withdraw) asks for nothing, but the provider's page stays open until it is closed there
# (checkout_expire, run by billing.tasks.expire_checkout after the commit): the driver could still pay it (it then
# takes only what is still owed, or is released: _balance_taken_over) and be left wondering why. What the provider
# said goes in front of the payment's `failure` (which says why the page was withdrawn) for staff in the admin: no
# PaymentOperation (its kinds move money), no migration. A repeat finds the note and calls no one.
PAGE_NOTE = "provider page "
PAGE_WORDS = {
    gateways.PAGE_CLOSED: "closed",
    gateways.PAGE_ALREADY_CLOSED: "already closed",
    gateways.PAGE_PAID: "paid before it could be closed",
}


def _withdrawn_pages() -> QuerySet[Payment]:
    """The rows of _withdrawn_page whose page was opened."""
    withdrawn = Payment.objects.filter(purpose="balance", status=Payment.Status.RELEASED, authorised_minor=0)
    return withdrawn.exclude(checkout_id="")


def checkout_expire(payment_id: int, *, attempt: int | str = 0) -> str:
    """Close a withdrawn balance payment's page at its provider. A page the driver paid first is left to its
    webhook; a refusal (no such page) is noted, not raised; a retryable provider error is raised for the task's
    retry, whose `attempt` makes the key its own (the sweep's runs have keys of their own too)."""
    payment = _withdrawn_pages().filter(pk=payment_id).first()
    if payment is None:
        return "not a withdrawn page"
    if payment.failure.startswith(PAGE_NOTE):
        return "noted before"
    try:
        expiry = gateways.gateway(payment.provider).expire_checkout(
            checkout_id=payment.checkout_id, idempotency_key=f"{payment.key}:expire:{attempt}"
        )
    except gateways.GatewayError as error:
        if error.retryable:
            raise
        log.warning("payment %s: %s refused to close page %s: %s", payment.pk, payment.provider,
                    payment.checkout_id, error)  # fmt: skip
        _page_noted(payment, f"not closed at {payment.provider}: {str(error)[:120]}")
        return "refused"
    log.info("payment %s: page %s %s at %s (%s)", payment.pk, payment.checkout_id, PAGE_WORDS[expiry.outcome],
             payment.provider, expiry.status)  # fmt: skip
    _page_noted(payment, f"{PAGE_WORDS[expiry.outcome]} at {payment.provider} ({expiry.status})")
    return expiry.outcome


# A withdrawn page not yet closed ten minutes on lost its task (a worker killed after the commit, the broker down)
# or the task gave up on a provider error: the beat's sweep hands it out again, each page at most every ten minutes,
# and for a week (a Stripe session lapses within a day; a Razorpay link we open has no end, and paid after a week it
# is still taken over, nothing doubled).
PAGE_SWEEP_EVERY = timedelta(minutes=10)
PAGE_SWEEP_FOR = timedelta(days=7)


def withdrawn_pages_unclosed(now: Any = None, limit: int = 200) -> list[int]:
    """Withdrawn pages (_withdrawn_pages) whose provider was not told to close them: no note from checkout_expire
    PAGE_SWEEP_EVERY after the last change. Each is stamped as it is handed out (its next turn waits as long)."""
    now = now or timezone.now()
    unclosed = _withdrawn_pages().exclude(failure__startswith=PAGE_NOTE)
    due = unclosed.filter(updated_at__lt=now - PAGE_SWEEP_EVERY, updated_at__gte=now - PAGE_SWEEP_FOR)
    ids = list(due.order_by("updated_at", "pk").values_list("pk", flat=True)[:limit])
    # A sweep run at the same time takes none of them twice: the compare-and-set on the stamp each one read.
    return [pk for pk in ids if due.filter(pk=pk).update(updated_at=now)]


def _page_noted(payment: Payment, note: str) -> None:
    """`note` in front of the payment's failure text, unless it changed meanwhile (its page paid: the webhook
    cleared the text; another run noted it first)."""
    text = "; ".join(filter(None, [PAGE_NOTE + note, payment.failure]))[:300]
    _withdrawn_pages().filter(pk=payment.pk, failure=payment.failure).update(failure=text)


# --- init and confirm ----------------------------------------------------------------------------------


def payment_open(
    *, quote: Quote, driver: Driver, bap_id: str, journey: str, proposed_by_app: str = "", return_url: str = ""
) -> Payment:
    """The payment of an order being initialised (`journey`: its Beckn transaction): the app's (when it asked
    to collect and may), the driver's wallet (prepaid), or a provider's hosted checkout for the quote plus the
    margin. An init repeated for the same journey and amount gets the same payment and page back."""
    agreement = agreement_for(bap_id)
    currency = quote.currency
    amount = authorisation_minor(quote.price, currency)
    # The app collects where we agreed it does, unless it asks us to (collected_by BPP); an app asking to
    # collect without such an agreement gets our terms back (core 1.1.0 Payment: the BPP may overwrite them).
    if agreement.collects and proposed_by_app != "BPP":
        kind: dict[str, Any] = {
            "collected_by": Payment.CollectedBy.BAP,
            "type": Payment.Type.POST_FULFILLMENT,
            "provider": "bap",
        }
    elif driver.wallet_balance is not None:
        kind = {"provider": "wallet", "type": Payment.Type.PRE_ORDER}
    else:
        kind = {"provider": gateways.provider_for(currency), "type": Payment.Type.PRE_ORDER}
    # One released, or whose release is decided (no order was confirmed with it while its quote held:
    # unbooked_holds_release), is not offered again: its page is paid, its hold going, and a confirm refuses it.
    offered = (
        Payment.objects.filter(journey=journey, driver=driver, currency=currency, booking__isnull=True, **kind)
        .exclude(status__in=(Payment.Status.FAILED, Payment.Status.RELEASED))
        .exclude(operations__kind=PaymentOperation.Kind.RELEASE)
    )
    earlier = offered.order_by("-pk").first()
    if earlier is not None:
        # Locked until the init commits (and read again, with its operations, once had): the beat's sweep
        # (unbooked_holds_release, skip_locked) passes over a hold an init is handing the app, and an init that
        # waited for a sweep deciding its release sees that release. Read unlocked, the sweep could decide it
        # between this read and the init's commit: the app was given a hold being released, its confirm refused.
        with transaction.atomic():
            earlier = offered.select_for_update().filter(pk=earlier.pk).first()
            if earlier is not None and earlier.operations.filter(kind=PaymentOperation.Kind.RELEASE).exists():
                earlier = None
    if earlier is not None and (earlier.provider in ("bap", "wallet") or earlier.requested_minor == amount):
        if earlier.status == Payment.Status.PENDING and earlier.provider not in ("bap", "wallet") and not earlier.url:
            _checkout(earlier, amount_minor=amount, return_url=return_url, description=f"EV charge, quote {quote.pk}")
        return earlier
    payment = Payment.objects.create(driver=driver, bap_id=bap_id, journey=journey[:300], currency=currency, **kind)
    if payment.provider not in ("bap", "wallet"):
        _checkout(payment, amount_minor=amount, return_url=return_url, description=f"EV charge, quote {quote.pk}")
    return payment


def hold_minor(payment: Payment, quote: Quote | None) -> int:
    """What the payment holds, or will ask the driver to authorise for the quote."""
    if payment.authorised_minor or quote is None:
        return payment.authorised_minor
    return authorisation_minor(quote.price, payment.currency)


def _checkout(payment: Payment, *, amount_minor: int, return_url: str, description: str) -> None:
    checkout = _open_page(payment, amount_minor=amount_minor, return_url=return_url, description=description)
    Payment.objects.filter(pk=payment.pk).update(
        checkout_id=checkout.checkout_id, url=checkout.url, requested_minor=amount_minor
    )
    payment.checkout_id, payment.url, payment.requested_minor = checkout.checkout_id, checkout.url, amount_minor


def _open_page(payment: Payment, *, amount_minor: int, return_url: str, description: str) -> gateways.Checkout:
    """The provider's hosted page for `amount_minor`. Asked again with the same key (a run killed before it saved
    the page), the provider answers the page it made: Stripe replays the session for the key, Razorpay's adapter
    finds its link by our reference and the key in its notes."""
    return gateways.gateway(payment.provider).checkout(
        amount_minor=amount_minor,
        currency=payment.currency,
        reference=reference_of(payment),
        description=description,
        return_url=return_url or f"{settings.PUBLIC_BASE_URL}/payments/return",
        idempotency_key=f"{payment.key}:checkout:{amount_minor}",
    )


@dataclass(frozen=True)
class Reported:
    """What an app says of a payment (Beckn order.payments[], checked by beckn/parsing.py::parse_payments): who
    collects, its status, amount and transaction id."""

    status: str
    amount: Decimal | None
    currency: str
    transaction_id: str
    collected_by: str = ""


def payment_confirm(*, payment: Payment, booking: Booking, quote: Quote, reported: Reported | None) -> Payment:
    """Bind the payment to the confirmed booking, in the booking's transaction. We collect: the provider must
    have authorised it, or the wallet must hold it. The app collects: what it reports paid must be the quote.
    A payment pays for one booking: one already bound to another (a second confirm of the journey at the same
    moment, which found it unbound before the first committed) is refused, and that second booking with it."""
    with transaction.atomic():
        payment = Payment.objects.select_for_update().get(pk=payment.pk)
        if payment.booking_id is not None and payment.booking_id != booking.pk:
            raise PaymentRefused(
                f"payment {reference_of(payment)} already pays for another order: init the order again for a new one"
            )
        if payment.provider == "wallet":
            _wallet_hold(payment, authorisation_minor(quote.price, payment.currency))
        elif payment.collected_by == Payment.CollectedBy.BAP:
            if reported is not None and reported.status == "PAID":
                _check_reported(reported, expected=round_money(quote.price, quote.currency), currency=quote.currency)
                payment.status = Payment.Status.COLLECTED_BY_BAP
                payment.bap_transaction_id = reported.transaction_id[:100]
        elif payment.status not in (Payment.Status.PENDING, Payment.Status.AUTHORISED):
            raise PaymentRefused(
                f"payment {reference_of(payment)} is {payment.status.lower()}: init the order again for a new one"
            )
        elif payment.operations.filter(kind=PaymentOperation.Kind.RELEASE).exists():
            # Its release is decided (unbooked_holds_release, or its authorisation came after its quote expired)
            # and runs after that commit: the hold is going, so no booking may count on it.
            raise PaymentRefused(
                f"payment {reference_of(payment)} is being released (no order was confirmed with it in time): "
                "init the order again for a new one"
            )
        payment.booking = booking
        payment.save()
    return payment


def ready_to_charge(booking: Booking) -> None:
    """Charging starts only once what we collect is held: authorised at the provider, or on the wallet."""
    payment = Payment.objects.filter(booking=booking, purpose="charge").order_by("pk").first()
    if payment is None or payment.collected_by == Payment.CollectedBy.BAP:
        return
    if payment.status != Payment.Status.AUTHORISED:
        where = f" at {payment.url}" if payment.url and payment.status == Payment.Status.PENDING else ""
        raise PaymentRefused(
            f"the payment is {payment.get_status_display().lower()}: the driver authorises it{where} before charging"
        )


def payment_reported(*, booking: Booking, reported: Reported) -> Payment:
    """An app that collects reports a payment it took (Beckn update of order.payments): PAID for the bill once
    the CDR is in (the quote before). We don't collect it ourselves, so nothing moves in the ledger here: the app
    owes us the bill (bap receivable) until it settles per its window."""
    with transaction.atomic():
        payment = Payment.objects.select_for_update().filter(booking=booking, purpose="charge").order_by("pk").first()
        if payment is None:
            raise PaymentRefused("this order has no payment terms")
        if payment.collected_by != Payment.CollectedBy.BAP:
            raise PaymentRefused("we collect this payment: the driver pays on our payment page")
        if reported.status != "PAID":
            raise PaymentRefused("report a payment once it is PAID")
        if payment.status == Payment.Status.COLLECTED_BY_BAP and payment.bap_transaction_id == reported.transaction_id:
            return payment  # the same report again
        if payment.billed_minor is None and booking.quote is None:
            raise PaymentRefused("the amount due is not known yet: report the payment after the final bill")
        expected = (
            from_minor(payment.billed_minor, payment.currency)
            if payment.billed_minor is not None
            else round_money(booking.quote.price, payment.currency)
        )
        _check_reported(reported, expected=expected, currency=payment.currency)
        payment.status = Payment.Status.COLLECTED_BY_BAP
        payment.bap_transaction_id = reported.transaction_id[:100]
        payment.save()
        _tell_app(payment)
    return payment


def _check_reported(reported: Reported, *, expected: Decimal, currency: str) -> None:
    if reported.currency and reported.currency.upper() != currency:
        raise PaymentRefused(f"the payment is in {currency}, not {reported.currency}")
    if reported.amount is None:
        raise PaymentRefused("a PAID payment states its amount (params.amount)")
    if reported.amount != expected:
        raise PaymentRefused(f"the amount due is {expected} {currency}, not {reported.amount}")
    if not reported.transaction_id:
        raise PaymentRefused("a PAID payment states its transaction id (params.transaction_id)")


def _wallet_hold(payment: Payment, amount_minor: int) -> None:
    """Hold `amount_minor` on a prepaid wallet: refused when the balance, less what other charges hold, would go
    below the driver's limit. The driver row is locked so two confirms can't both take the last of it."""
    driver = Driver.objects.select_for_update().get(pk=payment.driver_id)
    in_wallet = wallet_balance(driver.pk, payment.currency)
    held = (
        Payment.objects.filter(driver=driver, provider="wallet", status=Payment.Status.AUTHORISED)
        .exclude(pk=payment.pk)
        .aggregate(held=Sum("authorised_minor"))["held"]
        or 0
    )
    available = to_minor(in_wallet, payment.currency) - held
    floor = to_minor(round_money(driver.wallet_limit, payment.currency), payment.currency)
    if available - amount_minor < floor:
        raise PaymentRefused(
            f"the wallet holds {from_minor(available, payment.currency)} {payment.currency} free; this charge "
            f"needs {from_minor(amount_minor, payment.currency)} authorised"
        )
    payment.status = Payment.Status.AUTHORISED
    payment.authorised_minor = amount_minor
    payment.save()
    postings.authorisation(payment, amount_minor)


# --- wallets -------------------------------------------------------------------------------------------


def wallet_balance(driver_id: int, currency: str) -> Decimal:
    """A prepaid driver's balance, from the ledger (the wallet account is a liability: its credit balance)."""
    return -balance(accounts.driver_wallet(driver_id, currency))


def wallet_top_up(*, driver: Driver, amount: Decimal, key: str, source: LedgerAccount | None = None) -> Decimal:
    """Add `amount` to a prepaid wallet (paid into our bank, or captured at a provider: `source`), once per
    `key`. Returns the new balance, also kept on the driver for the console and real-time authorization."""
    if not isinstance(amount, Decimal) or not amount.is_finite() or amount <= 0:
        raise PaymentRefused("a top-up is a positive amount")
    currency = driver.currency
    with transaction.atomic():
        locked = Driver.objects.select_for_update().get(pk=driver.pk)
        postings.wallet_top_up(
            driver_id=driver.pk,
            currency=currency,
            amount=amount,  # more decimals than the currency has are refused, not rounded away
            source=source or accounts.bank(currency),
            key=key,
        )
        return _sync_wallet(locked)


def _sync_wallet(driver: Driver) -> Decimal:
    """Keep Driver.wallet_balance equal to the ledger's wallet balance (the ledger is the record)."""
    new = wallet_balance(driver.pk, driver.currency)
    Driver.objects.filter(pk=driver.pk).update(wallet_balance=new)
    driver.wallet_balance = new
    return new


# --- webhooks ------------------------------------------------------------------------------------------


# Keys of a payment provider's event that say who paid (Razorpay's payment entity: email, contact, vpa; Stripe's
# billing_details, customer_details, receipt_email, shipping): the event is kept as the replay guard and for the
# console, without them.
_PAYER_KEYS = re.compile(r"e[_-]?mail|contact|phone|vpa|name|address|shipping|billing_details|customer_details", re.I)


def payer_details_removed(value: Any) -> Any:
    """A provider's webhook event without the payer's personal data (the same shape, those values masked)."""
    if isinstance(value, dict):
        return {
            k: "[redacted]" if isinstance(k, str) and _PAYER_KEYS.search(k) and v else payer_details_removed(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [payer_details_removed(v) for v in value]
    return value


def storable(value: Any) -> Any:
    """A verified event as a JSON column holds it: a NUL character (JSON's \\u0000, which PostgreSQL's jsonb
    refuses: a DataError on every delivery of a signed event, in a field we don't even read) written as the six
    characters `\\u0000`, and a lone surrogate (JSON's `\\ud800` unpaired, which jsonb refuses too, and no UTF-8
    text) made U+FFFD, in keys and values."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate; a pair Python kept apart is joined
            value = value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        return value.replace("\x00", "\\u0000")
    if isinstance(value, dict):
        return {storable(k): storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [storable(v) for v in value]
    return value


class ReplayedWebhook(Exception):
    """An event id we have already received: not applied again."""


def webhook_receive(event: gateways.WebhookEvent) -> str:
    """Apply a verified provider event once and say what it did. The event's row and its effects commit
    together: an event that fails to apply leaves no row, so the provider's redelivery applies it; a replay of
    an applied event is refused."""
    with transaction.atomic():
        try:
            with transaction.atomic():
                record = ProviderWebhook.objects.create(
                    provider=event.provider,
                    event_id=event.event_id[:100],
                    type=event.provider_type[:100],
                    payload=storable(payer_details_removed(dict(event.raw))),
                )
        except IntegrityError:
            raise ReplayedWebhook(f"{event.provider} event {event.event_id} was received before") from None
        outcome = _apply(event)
        ProviderWebhook.objects.filter(pk=record.pk).update(processed_at=timezone.now(), outcome=outcome[:300])
    return outcome


def _apply(event: gateways.WebhookEvent) -> str:
    payment = _payment_of_reference(event.reference)
    if payment is not None and payment.provider != event.provider:
        return f"ignored: payment {reference_of(payment)} is not at {event.provider}"
    if payment is None and event.payment_id:
        payment = Payment.objects.filter(provider=event.provider, provider_payment_id=event.payment_id).first()
    if payment is None and event.checkout_id:
        payment = Payment.objects.filter(provider=event.provider, checkout_id=event.checkout_id).first()
    if payment is None:
        return "no payment of ours"
    payment = Payment.objects.select_for_update().get(pk=payment.pk)
    if event.currency and event.currency.upper() != payment.currency:
        return f"ignored: currency {event.currency} is not the payment's {payment.currency}"
    other = payment.provider_payment_id and event.payment_id and event.payment_id != payment.provider_payment_id
    if other and event.type in (gateways.RELEASED, gateways.FAILED, gateways.REFUND_FAILED):
        # Another attempt at the same checkout (Razorpay refunds a late-authorised failed attempt on its own):
        # not the payment we hold, which stays as it is.
        return f"ignored: about {event.payment_id}, not the payment held ({payment.provider_payment_id})"
    if event.type == gateways.AUTHORISED:
        withdrawn = _withdrawn_page(payment)
        if payment.status not in (Payment.Status.PENDING, Payment.Status.FAILED) and not withdrawn:
            return f"already {payment.status}"
        if event.amount_minor <= 0:
            return "ignored: authorised nothing"
        if payment.requested_minor and event.amount_minor != payment.requested_minor:
            log.error("payment %s: %s authorised %s, we asked %s", payment.pk, event.provider,
                      event.amount_minor, payment.requested_minor)  # fmt: skip
            return f"ignored: authorised {event.amount_minor}, not the {payment.requested_minor} asked for"
        payment.status = Payment.Status.AUTHORISED
        payment.authorised_minor = event.amount_minor
        payment.provider_payment_id = event.payment_id[:100]
        payment.failure = ""
        payment.save()
        postings.authorisation(payment, event.amount_minor)
        if withdrawn:
            _balance_taken_over(payment)
        _tell_app(payment)
        if payment.purpose == "balance":  # the rest of a bill (of a withdrawn page: what it took over): take it now
            _queue_capture(payment)
        elif payment.booking_id and ended_without_charge(payment.booking):
            # Authorised after the booking ended (a cancel, a no-show, a start that failed): nothing will be billed
            # on it, and booking_cancelled released only what was authorised by then.
            _operation(payment, PaymentOperation.Kind.RELEASE, payment.authorised_minor, f"{payment.key}:release")
            run_after_commit("billing.tasks.release_payment", payment.pk)
        elif payment.booking_id is None and payment.purpose == "charge" and _quote_expired(payment):
            # Paid at init's page after the order's quote expired, no order confirmed with it: a confirm is
            # refused now (the quote), and the next init opens a payment of its own. Released at once.
            _unbooked_hold_release(payment, "its authorisation came after its quote expired")
            return "authorised; released: no order can be confirmed with it any more"
        return "authorised"
    if event.type == gateways.FAILED:
        if payment.status != Payment.Status.PENDING:
            return f"already {payment.status}"
        payment.status = Payment.Status.FAILED
        payment.failure = f"{event.provider_type}"[:300]
        payment.save()
        _tell_app(payment)
        return "failed"
    if event.type == gateways.RELEASED and payment.status == Payment.Status.AUTHORISED:
        _released(payment)
        return "released"
    if event.type == gateways.REFUND_FAILED:
        return _refund_failed(payment, event)
    # Captures and refunds are ours: their operations booked them when the provider answered.
    return f"noted ({event.type})"


class OperationUnsettled(Exception):
    """An event about a provider operation whose outcome is not booked yet (its call under way, or to be retried):
    it can't be applied now. webhook_receive's transaction rolls back with it (no ProviderWebhook row is kept),
    the endpoint answers 409 (billing/views.py), and the provider's redelivery applies it once the operation is
    booked."""


def _refund_failed(payment: Payment, event: gateways.WebhookEvent) -> str:
    """A refund we made failed at the provider (Stripe's refund.failed, Razorpay's refund.failed): the money is
    back in our balance there and the driver got nothing. Booked paid, its posting is reversed (clearing takes
    the amount back, refunds:pending owes it again) and the amount credited to the driver's account, as a refund
    the provider can't make is (payment_refund); the payment's refunded amount is lowered (not for the rest of a
    capture, which never counted in it). The refund's operation stays SUCCEEDED (a retry under its key would get
    the failed refund back), with the failure in its error and the payment's failure text, and logged. Once per
    refund: the reversal is posted once, and a second event about it (refund.updated and refund.failed both
    come) finds it. The payment's row is locked (_apply).

    Not booked yet (the operation PENDING: its call's answer was lost, a retry to come), the operation is closed
    here with the amount credited to the driver's account (the event had been stored and never applied again,
    and the retry, finding the failed refund by its key, booked it paid); one whose call is running right now
    is left to it and the event refused for the provider's redelivery (OperationUnsettled). A refund made by a
    release (Razorpay refunds a payment its account captured itself) or within a capture (the rest above the
    bill) is booked nowhere as paid: its failure leaves the money with us, owed to the driver
    (_unbooked_refund_failed)."""
    refunds = payment.operations.filter(kind=PaymentOperation.Kind.REFUND)
    operation = refunds.filter(provider_reference=event.refund_id).first() if event.refund_id else None
    if operation is None and event.refund_key:
        operation = refunds.filter(idempotency_key=event.refund_key).first()
    what = f"refund {event.refund_id or event.refund_key or '?'} of {reference_of(payment)} failed at {event.provider}"
    if operation is None:
        return _refund_failed_elsewhere(payment, event, what)
    if operation.status == PaymentOperation.Status.PENDING:
        return _refund_failed_unbooked(payment, operation, event, what)
    paid = LedgerEntry.objects.filter(idempotency_key=f"{operation.idempotency_key}:paid").first()
    credited = LedgerEntry.objects.filter(idempotency_key=f"{operation.idempotency_key}:account").exists()
    if operation.status == PaymentOperation.Status.SUCCEEDED and paid is None and credited:
        # Its operation found the refund failed (or could not make it) and credited the driver's account.
        return "refund failed: booked before"
    if operation.status != PaymentOperation.Status.SUCCEEDED or paid is None:
        log.error("%s: its operation %s booked no refund paid (%s); nothing changed", what, operation.pk,
                  operation.status)  # fmt: skip
        return f"refund failed: operation {operation.pk} booked no refund paid"
    if LedgerEntry.objects.filter(reverses=paid).exists():
        return "refund failed: booked before"
    clearing = accounts.clearing(payment.provider, payment.currency)
    amount_minor = -sum(paid.lines.filter(account=clearing).values_list("amount_minor", flat=True))
    ledger.reverse(paid, memo=f"{what}: the money came back")
    _refund_to(
        accounts.driver_receivable(payment.driver_id or 0, payment.currency),
        from_minor(amount_minor, payment.currency),
        paid.reference,
        suffix=f"failed:{operation.pk}:account",
    )
    note = f"{what}: {from_minor(amount_minor, payment.currency)} {payment.currency} credited to the driver's account"
    PaymentOperation.objects.filter(pk=operation.pk).update(error=note[:500])
    if not operation.idempotency_key.endswith(CAPTURE_REST_SUFFIX):
        payment.refunded_minor = max(0, payment.refunded_minor - amount_minor)
        if payment.status in (Payment.Status.REFUNDED, Payment.Status.PARTIALLY_REFUNDED):
            payment.status = Payment.Status.PARTIALLY_REFUNDED if payment.refunded_minor else Payment.Status.CAPTURED
    payment.failure = note[:300]
    payment.save()
    _tell_app(payment)
    log.error("%s", note)
    return f"refund failed: {from_minor(amount_minor, payment.currency)} credited to the driver's account"


def _refund_reference(operation: PaymentOperation) -> str:
    """The reference a refund operation books under: its credit's (`<payment key>|<credit>:refund`), or the
    payment's for the rest of a capture (_capture_rest_owed)."""
    if operation.idempotency_key.endswith(CAPTURE_REST_SUFFIX):
        return f"payment:{operation.payment_id}"
    return operation.idempotency_key.partition("|")[2].removesuffix(":refund")


def _refund_failed_unbooked(
    payment: Payment, operation: PaymentOperation, event: gateways.WebhookEvent, what: str
) -> str:
    """A refund reported failed while its operation is PENDING: the call that made it lost its answer (a timeout
    the provider went through with), its retry not run yet. Nothing was booked paid: what it owes (still on
    refunds:pending) is credited to the driver's account now, under the key its own run would credit it with
    (`<key>:account`, so the two can't both post), and the operation closed SUCCEEDED with the failure noted,
    never asked again (the provider holds the key's refund as failed). Its row is taken only if no run holds it
    (skip_locked: the run holds it, then waits for the payment's row this webhook holds); else the event is
    refused for the provider's redelivery, which finds the run's booking."""
    locked = (
        PaymentOperation.objects.select_for_update(skip_locked=True)
        .filter(pk=operation.pk, status=PaymentOperation.Status.PENDING)
        .first()
    )
    if locked is None:
        raise OperationUnsettled(f"{what}: its operation {operation.pk} is being run; to be applied once booked")
    amount = from_minor(locked.amount_minor, payment.currency)
    _refund_to_account(payment, locked, amount)
    note = f"{what} before its answer was booked: {amount} {payment.currency} credited to the driver's account"
    PaymentOperation.objects.filter(pk=locked.pk).update(
        status=PaymentOperation.Status.SUCCEEDED,
        finished_at=timezone.now(),
        provider_reference=event.refund_id[:100],
        error=note[:500],
    )
    payment.failure = note[:300]
    payment.save()
    _tell_app(payment)
    log.error("%s", note)
    return f"refund failed: {amount} credited to the driver's account"


def _refund_to_account(payment: Payment, operation: PaymentOperation, amount: Decimal) -> None:
    """What a refund operation could not give back at the provider, credited to the driver's account (their
    receivable) instead; once per operation (`<key>:account`)."""
    postings.refund(
        currency=payment.currency,
        amount=amount,
        paid_from=accounts.driver_receivable(payment.driver_id or 0, payment.currency),
        reference=_refund_reference(operation),
        key=f"{operation.idempotency_key}:account",
    )


def _refund_failed_elsewhere(payment: Payment, event: gateways.WebhookEvent, what: str) -> str:
    """A failed refund no refund operation made: one made by a capture (the rest above the bill, Razorpay) or by
    a release (Razorpay refunds in full a payment its account captured itself), found by our key in its notes or
    (a release) by its id. Neither booked any money paid out: the failure leaves it in our provider balance,
    owed to the driver. An operation not booked yet refuses the event for the provider's redelivery."""
    if event.refund_key:
        captures = payment.operations.filter(
            kind=PaymentOperation.Kind.CAPTURE, idempotency_key=event.refund_key.removesuffix(":rest")
        )
        capture = captures.first() if event.refund_key.endswith(":rest") else None
        if capture is not None and capture.status == PaymentOperation.Status.SUCCEEDED:
            return _unbooked_refund_failed(payment, event, f"{event.refund_key}:failed",
                                           f"{what} (the rest above the bill)")  # fmt: skip
        if capture is not None and capture.status == PaymentOperation.Status.PENDING:
            raise OperationUnsettled(f"{what}: its capture {capture.pk} is not booked yet")
    releases = payment.operations.filter(kind=PaymentOperation.Kind.RELEASE)
    release = releases.filter(provider_reference=event.refund_id).first() if event.refund_id else None
    if release is None and event.refund_key:
        release = releases.filter(idempotency_key=event.refund_key).first()
    if release is not None and release.status == PaymentOperation.Status.PENDING:
        raise OperationUnsettled(f"{what}: its release {release.pk} is not booked yet")
    if release is not None and release.status == PaymentOperation.Status.SUCCEEDED:
        # The release of a payment ours still held AUTHORISED (release() refunds only a captured one): it booked
        # the hold released, nothing taken or paid out, so the money the failure leaves is booked nowhere.
        return _unbooked_refund_failed(
            payment,
            event,
            f"{release.idempotency_key}:failed",
            f"{what} (the release of a payment {event.provider} had captured)",
            most=release.amount_minor,
        )
    log.error("%s: no refund of ours booked it; nothing changed", what)
    return "refund failed: no refund of ours booked it"


def _unbooked_refund_failed(
    payment: Payment, event: gateways.WebhookEvent, key: str, what: str, most: int | None = None
) -> str:
    """A refund booked nowhere as paid failed (the rest above the bill a capture refunded, a release's refund of a
    payment the provider had captured): that money is in our clearing balance, unbooked. It is owed to the
    driver (as _capture_rest_owed books it: taken into clearing, owed on refunds:pending) and credited to their
    account; the ledger stays balanced per currency. Once per refund (`key`). `most`: what the refund can have
    given back at most (the release's hold)."""
    if LedgerEntry.objects.filter(idempotency_key=f"{key}:owed").exists():
        return "refund failed: booked before"
    amount_minor = event.amount_minor if most is None else min(event.amount_minor, most)
    if amount_minor <= 0:
        log.error("%s: of no amount; nothing changed", what)
        return "refund failed: of no amount"
    amount = from_minor(amount_minor, payment.currency)
    reference = f"payment:{payment.pk}"
    postings.credit(
        currency=payment.currency,
        amount=amount,
        borne_by=accounts.clearing(payment.provider, payment.currency),
        reference=reference,
        key=f"{key}:owed",
    )
    postings.refund(
        currency=payment.currency,
        amount=amount,
        paid_from=accounts.driver_receivable(payment.driver_id or 0, payment.currency),
        reference=reference,
        key=f"{key}:account",
    )
    note = f"{what}: {amount} {payment.currency} credited to the driver's account"
    Payment.objects.filter(pk=payment.pk).update(failure=note[:300])
    payment.failure = note[:300]
    log.error("%s", note)
    return f"refund failed: {amount} credited to the driver's account"


def _balance_taken_over(payment: Payment) -> None:
    """A withdrawn balance page the driver paid all the same (a credit lowered it while the driver was paying, or
    the driver paid the old link): it takes the bill its last replacement still asks for, and that one is
    withdrawn in turn, so the driver pays once and what the page held above the bill is released at the capture
    (or refunded, where the provider captures whole holds). A replacement already paid leaves it nothing: it is
    released (_queue_capture of no bill). Locks only forward along the chain, as a replacement's own webhook never
    looks back: the two can't wait on each other. A replacement a credit withdrew while this waited for its lock
    has a replacement of its own, which is looked at next."""
    current = payment
    while (last := _last_lowered(current)) is not None:
        last = Payment.objects.select_for_update().get(pk=last.pk)
        if _still_asking(last):
            if payment.authorised_minor >= (last.billed_minor or 0):
                Payment.objects.filter(pk=payment.pk).update(billed_minor=last.billed_minor)
                payment.billed_minor = last.billed_minor
                _withdraw(last, f"paid at {reference_of(payment)}, a page this one replaced")
            return
        if not _withdrawn_page(last):
            return  # paid (or being paid) at its own page
        current = last


def _tell_app(payment: Payment) -> None:
    if payment.booking_id is not None:
        events.publish(events.BookingPaymentChanged(payment.booking, payment.status))


# --- the bill ------------------------------------------------------------------------------------------


def bill(receipt: DriverReceipt) -> None:
    """Book a CDR's bill, in the CDR's transaction: the charge (or the credit of a credit CDR), the app's finder
    fee, and the collection: the wallet pays now, a provider capture is queued, an app owes it per its terms."""
    cdr = receipt.cdr
    terms = partner_terms(cdr.partner)
    booking = cdr.charging_session.booking if cdr.charging_session_id and cdr.charging_session.booking_id else None
    payment = _charge_payment(booking)
    bap_id = payment.bap_id if payment is not None else ""
    bill_ = postings.bill_of(receipt, fee_vat_rate=terms.fee_vat_percent, policy=terms.rounding)
    party = f"{cdr.country_code}*{cdr.party_id}"
    if cdr.credit:
        _credit_cdr(receipt, bill_, party, payment)
        return
    bap_collects = payment is not None and payment.collected_by == Payment.CollectedBy.BAP
    payer = (
        accounts.bap_receivable(bap_id, bill_.currency)
        if bap_collects
        else accounts.driver_receivable(receipt.driver_id or 0, bill_.currency)
    )
    postings.charge(receipt=receipt, payer=payer, cpo_party=party, bill=bill_)  # nothing for a bill of zero
    if bap_id:
        fee = round_money(bill_.total * agreement_for(bap_id).finder_fee_percent / HUNDRED, bill_.currency)
        postings.finder_fee(
            bap_id=bap_id, currency=bill_.currency, amount=fee, bap_collected=bap_collects, reference=f"cdr:{cdr.pk}"
        )
    if payment is None:
        return  # a charge outside a Beckn order (an RFID card): the driver's account is invoiced
    billed = to_minor(bill_.total, bill_.currency)
    if payment.billed_minor is not None and payment.collected_by == Payment.CollectedBy.BPP:
        # Only a CDR whose charge's earlier CDRs were voided by credit CDRs reaches here: the audit holds any
        # other second bill of a charge (audit.py, `duplicate_session_cdr`).
        _bill_again(payment, receipt, payer, billed)
        return
    if payment.collected_by == Payment.CollectedBy.BPP and payment.status == Payment.Status.RELEASED:
        # The hold was released before the bill came (the booking ended, cancelled or failed, and a session the
        # charger began all the same was billed): nothing is left to capture, so the bill is asked for as the rest
        # of a bill above its hold is, with a payment of its own. The released charge payment is not billed: it
        # took nothing, and the app, shown the bill on it too, read the driver as owing it twice. (A repeat of
        # this bill comes here again, and finds the CDR's own payment made.)
        _bill_again(payment, receipt, payer, billed)
        return
    Payment.objects.filter(pk=payment.pk).update(billed_minor=billed)
    payment.billed_minor = billed
    if payment.provider == "wallet" and payment.status == Payment.Status.AUTHORISED:
        _capture_wallet(payment, payer)
    elif payment.collected_by == Payment.CollectedBy.BPP and payment.status == Payment.Status.AUTHORISED:
        _queue_capture(payment)


def _bill_again(charge: Payment, receipt: DriverReceipt, payer: LedgerAccount, billed: int) -> None:
    """A bill the booking's charge payment can't take: a further one (the corrected CDR a CPO sends after a
    credit CDR voided the first: the audit holds a second CDR no credit voided), or one that came after the
    charge payment's hold was released. Its own `balance` payment, once per CDR. Taken first out of what the
    driver's account holds in credit (_beyond_the_account_credit: a refund the provider could not make, credited
    there); then, from a wallet, taken at once as far as the wallet holds it; at a provider, a checkout the app
    gets with on_update for the rest, as for the rest of a bill above its hold. A bill the credit covers asks
    nothing: its payment is released with no bill and no page. What no payment takes stays on the driver's
    receivable.

    The driver's row is locked before the credit is read, and held to the commit: two bills of one driver (two
    bookings' corrected CDRs at once) are weighed one after the other, the second seeing the first's page, so the
    credit is taken once."""
    if billed <= 0:
        return
    driver = Driver.objects.select_for_update().get(pk=charge.driver_id) if charge.driver_id else None
    if Payment.objects.filter(key=_derived_key(charge, f"bill-{receipt.cdr_id}")).exists():
        return  # this CDR was billed already
    asked = _beyond_the_account_credit(charge, payer, billed) if driver is not None else billed
    payment, created = _balance_payment(charge, f"bill-{receipt.cdr_id}", asked)
    if not created:
        return
    if asked <= 0:
        note = f"not asked: the driver's account credit covers the bill of {from_minor(billed, charge.currency)}"
        Payment.objects.filter(pk=payment.pk).update(status=Payment.Status.RELEASED, failure=note)
        payment.status, payment.failure = Payment.Status.RELEASED, note
        log.info("payment %s: %s", payment.pk, note)
        _tell_app(payment)
        return
    if charge.provider != "wallet" or driver is None:
        run_after_commit("billing.tasks.open_balance_checkout", payment.pk)
        return
    held = to_minor(max(ZERO, wallet_balance(driver.pk, payment.currency)), payment.currency)
    take = min(asked, held)
    if take > 0:
        postings.capture(payment, payer=payer, amount_minor=take, held_minor=0)
        payment.status, payment.captured_minor = Payment.Status.CAPTURED, take
        payment.save()
        _sync_wallet(driver)
        _tell_app(payment)


def _beyond_the_account_credit(charge: Payment, receivable: LedgerAccount, billed: int) -> int:
    """What of a new bill (minor units, already booked on the driver's `receivable`) the driver's account does not
    hold in credit: what the receivable says they owe, less what their other payments still collect of it (pages
    still asking, holds billed and not captured yet, a bill whose hold lapsed before its capture), at most the
    bill. The account in credit (a refund the provider could not make: 463.27 credited there) had been left so
    while a new page asked the driver the whole corrected bill. The other payments are read before the balance:
    one that collects meanwhile (a capture booked between the two reads) makes the page ask less, never more,
    than is owed; the rest stays on the receivable. The caller holds the driver's row."""
    others = Payment.objects.filter(
        driver_id=charge.driver_id, currency=charge.currency, collected_by=Payment.CollectedBy.BPP
    ).exclude(provider__in=("wallet", "bap"))
    pages = others.filter(
        purpose="balance",
        status__in=(Payment.Status.PENDING, Payment.Status.FAILED, Payment.Status.AUTHORISED),
        captured_minor=0,
        billed_minor__gt=0,
    )
    collecting = pages.aggregate(total=Sum("billed_minor"))["total"] or 0
    held = others.filter(purpose="charge", status=Payment.Status.AUTHORISED, billed_minor__gt=0)
    collecting += held.aggregate(total=Sum("billed_minor"))["total"] or 0
    for lapsed in others.filter(_BILL_RELEASED_UNCAPTURED):  # credits already credited to the account come off
        credited = _bill_refunds(lapsed).filter(status=PaymentOperation.Status.SUCCEEDED)
        collecting += (lapsed.billed_minor or 0) - (credited.aggregate(total=Sum("amount_minor"))["total"] or 0)
    owed = to_minor(balance(receivable), charge.currency) - collecting
    return min(billed, max(0, owed))


def _queue_capture(payment: Payment) -> None:
    """The capture of a billed payment (a release when the bill is zero), as an operation written with the
    bill: if its task is lost, the beat's sweep finds the operation and runs it."""
    amount = min(payment.billed_minor or 0, payment.authorised_minor)
    if amount == 0:
        _operation(payment, PaymentOperation.Kind.RELEASE, payment.authorised_minor, f"{payment.key}:release")
        run_after_commit("billing.tasks.release_payment", payment.pk)
        return
    _operation(payment, PaymentOperation.Kind.CAPTURE, amount, f"{payment.key}:capture")
    run_after_commit("billing.tasks.capture_payment", payment.pk)


def _charge_payment(booking: Booking | None) -> Payment | None:
    if booking is None:
        return None
    return Payment.objects.filter(booking=booking, purpose="charge").order_by("pk").first()


def _credit_cdr(receipt: DriverReceipt, bill_: postings.Bill, party: str, payment: Payment | None) -> None:
    """A CPO's credit CDR: what it gives back (its total, negative) is owed to the driver, borne by the CPO;
    with it, its share of what we took on the original (our fee and that fee's VAT, and the finder fee the app
    earned on it): a voided charge carries no fee of ours (mod_cdrs: a credit CDR voids its original, and a
    corrected CDR follows with its own bill and fee)."""
    amount = -bill_.cpo
    if amount <= 0:
        return
    currency, reference = bill_.currency, f"cdr:{receipt.cdr_id}"
    original = receipt.cdr.credited_cdr
    # A credit the CPO agreed to bear in a dispute has already been taken off its payable and refunded: its
    # credit CDR for the same charge gives back only what goes beyond it.
    covered = min(amount, dispute_credit_uncovered(original, exclude=receipt.cdr)) if original is not None else ZERO
    if amount - covered > 0:
        postings.credit(
            currency=currency,
            amount=amount - covered,
            borne_by=accounts.cpo_payable(party, currency),
            reference=reference,
            key=f"{reference}:credit",
        )
    amount -= covered
    if payment is None and original is not None and original.charging_session_id:
        session = original.charging_session
        payment = _charge_payment(session.booking if session.booking_id else None)
    given_back = amount + _our_part_given_back(receipt, original, bill_, reference)
    refund_due(payment=payment, amount=given_back, reference=reference, driver_id=receipt.driver_id, currency=currency)


def dispute_credit_uncovered(original: Cdr, *, exclude: Cdr | None = None) -> Decimal:
    """What the CPO has borne for this CDR in dispute credits (taken off its payable, refunded to the driver)
    that none of its processed credit CDRs has covered yet: a later credit CDR for the same charge nets
    against it."""
    currency = original.currency
    payable = accounts.cpo_payable(f"{original.country_code}*{original.party_id}", currency)
    credited = Dispute.objects.filter(cdr=original, state=Dispute.State.CREDITED).values_list("pk", flat=True)
    keys = [f"dispute:{pk}:credit" for pk in credited]
    if not keys:
        return ZERO

    def on_payable(*idempotency_keys: str) -> int:
        lines = LedgerLine.objects.filter(account=payable, entry__idempotency_key__in=idempotency_keys)
        return sum(lines.values_list("amount_minor", flat=True))

    borne, netted = on_payable(*keys), 0
    # Credits that refunded: one held for review (token_differs, over_credit, …) posted nothing and covers nothing;
    # counted, it had let the CPO's next credit CDR of the same overcharge refund the driver a second time.
    credits = Cdr.objects.filter(credited_cdr=original, credit=True, processed_at__isnull=False).filter(
        Q(audit__status=CdrAudit.Status.CREDIT) | Q(audit__isnull=True)
    )
    for credit in credits.exclude(pk=exclude.pk if exclude is not None else None):
        gives_back = round_money(-(credit.total_cost_incl_vat or credit.total_cost_excl_vat), currency)
        netted += max(0, to_minor(gives_back, currency) - on_payable(f"cdr:{credit.pk}:credit"))
    return from_minor(max(0, borne - netted), currency)


def dispute_credit_netted(receipt: DriverReceipt) -> Decimal:
    """What of a credit CDR's CPO part (>= 0) its receipt did not refund, because a dispute credit the CPO bore
    for the same charge had refunded it to the driver before (_credit_cdr nets it against that credit): the
    credit note states it as refunded before, and the rest as returned now. Read from what the ledger booked
    to the CPO's payable (`cdr:<pk>:credit`, `dispute:<pk>:credit`), so it is what was netted when the credit
    was processed, however much later the note is issued. 0 for a receipt that is no credit, or whose charge
    had no dispute credit the CPO bore."""
    cdr = receipt.cdr
    original = cdr.credited_cdr if cdr.credit and cdr.credited_cdr_id else None
    if original is None:
        return ZERO
    credited = Dispute.objects.filter(cdr=original, state=Dispute.State.CREDITED).values_list("pk", flat=True)
    keys = [f"dispute:{pk}:credit" for pk in credited]
    if not keys:
        return ZERO
    currency = receipt.currency
    payable = LedgerLine.objects.filter(
        account=accounts.cpo_payable(f"{original.country_code}*{original.party_id}", currency)
    )
    borne = sum(payable.filter(entry__idempotency_key__in=keys).values_list("amount_minor", flat=True))
    if borne <= 0:
        return ZERO
    terms = partner_terms(cdr.partner)
    amount = -postings.bill_of(receipt, fee_vat_rate=terms.fee_vat_percent, policy=terms.rounding).cpo
    if amount <= 0:
        return ZERO
    posted = sum(payable.filter(entry__idempotency_key=f"cdr:{cdr.pk}:credit").values_list("amount_minor", flat=True))
    return from_minor(min(max(0, to_minor(amount, currency) - posted), borne), currency)


def fee_given_back(receipt: DriverReceipt) -> tuple[Decimal, Decimal]:
    """Our fee and its VAT (both >= 0) that a credit CDR's receipt gives back to the driver on top of the CPO's
    part, as _our_part_given_back booked them: the credit note prints this, so it states what the ledger refunds
    (read from the credit's own entries once it was billed, however many credits of the same charge came since;
    worked out as its processing would before). (0, 0) for a receipt that is no credit, or whose original has no
    receipt of the same driver."""
    cdr = receipt.cdr
    original = cdr.credited_cdr if cdr.credit and cdr.credited_cdr_id else None
    original_receipt = DriverReceipt.objects.filter(cdr=original).first() if original is not None else None
    if original is None or original_receipt is None or original_receipt.driver_id != receipt.driver_id:
        return ZERO, ZERO
    currency = cdr.currency
    reference = f"cdr:{cdr.pk}"
    if LedgerEntry.objects.filter(reference=reference).exists():  # billed: what its entries gave back
        fee, fee_vat = (_booked_minor(f"{reference}:credit:{part}") for part in ("fee", "fee-vat"))
        return from_minor(fee, currency), from_minor(fee_vat, currency)
    return _fee_given_back(receipt, original, original_receipt, currency, partner_terms(original.partner))


def _booked_minor(*keys: str) -> int:
    """What the entries of these keys took from the account that bore them (their debit lines: a credit's
    borne_by), in minor units; 0 for keys never posted."""
    lines = LedgerLine.objects.filter(entry__idempotency_key__in=keys, amount_minor__gt=0)
    return sum(lines.values_list("amount_minor", flat=True))


def _other_credits(receipt: DriverReceipt, original: Cdr) -> list[DriverReceipt]:
    """The receipts of the original's other credit CDRs billed so far (a credit held for review has none; a
    receipt is made and billed in one transaction, and the credits of one charge are weighed one at a time)."""
    others = DriverReceipt.objects.filter(cdr__credited_cdr=original, cdr__credit=True).exclude(cdr_id=receipt.cdr_id)
    return list(others.select_related("cdr").order_by("pk"))


def _fee_given_back(
    receipt: DriverReceipt,
    original: Cdr,
    original_receipt: DriverReceipt,
    currency: str,
    terms: PartnerTerms,
    others: list[DriverReceipt] | None = None,
) -> tuple[Decimal, Decimal]:
    """What this credit gives back of our fee and its VAT: what the original's credits billed so far, this one
    with them, give back in all (all of it once their net voids the original: a voided charge leaves none of our
    fee; else the difference to our fee on the lowered price), less what the others gave back (their entries).
    Each credit had weighed only itself against the original, so partial credits that together voided a charge
    never gave back the flat part (-300 and -80 of 380: 5.00 of fee and 0.90 of VAT kept). A single credit gives
    back what it always did."""
    others = _other_credits(receipt, original) if others is None else others
    fee, fee_vat = _fee_given_back_in_all(receipt, original, original_receipt, currency, terms, others)
    keys = [f"cdr:{other.cdr_id}:credit" for other in others]
    before = (_booked_minor(*[f"{key}:{part}" for key in keys]) for part in ("fee", "fee-vat"))
    fee, fee_vat = (max(ZERO, x - from_minor(b, currency)) for x, b in zip((fee, fee_vat), before, strict=True))
    return fee, fee_vat


def _fee_given_back_in_all(
    receipt: DriverReceipt,
    original: Cdr,
    original_receipt: DriverReceipt,
    currency: str,
    terms: PartnerTerms,
    others: list[DriverReceipt],
) -> tuple[Decimal, Decimal]:
    """Our fee and its VAT on the original that this credit and the `others` give back together."""
    left = (  # the CPO's price after the credits
        original.total_cost_excl_vat
        + receipt.cdr.total_cost_excl_vat
        + sum((other.cdr.total_cost_excl_vat for other in others), ZERO)
    )
    if left <= 0:  # voided: none of our fee stays
        fee, fee_vat = original_receipt.fee_excl_vat, original_receipt.fee_vat
    else:  # lowered: our fee as it would be on the lower price
        lower = emsp_fee(terms, left, currency)
        fee, fee_vat = original_receipt.fee_excl_vat - lower.excl_vat, original_receipt.fee_vat - lower.vat
    fee, fee_vat = (round_money(max(ZERO, x), currency, terms.rounding) for x in (fee, fee_vat))
    return fee, fee_vat


def _our_part_given_back(receipt: DriverReceipt, original: Cdr | None, bill_: postings.Bill, reference: str) -> Decimal:
    """Our fee and its VAT on the original that the credit takes away (all of it once the original's credits
    together void it; else the difference to our fee on the lowered price, less what earlier credits gave back),
    credited to the driver; the app's finder fee taken back in the share of the bill the credits give back, less
    what earlier credits took back. What is given back on top of the CPO's part."""
    original_receipt = DriverReceipt.objects.filter(cdr=original).first() if original is not None else None
    if original is None or original_receipt is None or original_receipt.driver_id != receipt.driver_id:
        return ZERO
    currency = bill_.currency
    terms = partner_terms(original.partner)
    others = _other_credits(receipt, original)
    fee, fee_vat = _fee_given_back(receipt, original, original_receipt, currency, terms, others)
    for value, account, part in (
        (fee, accounts.revenue_fees(currency), "fee"),
        (fee_vat, accounts.tax_payable(terms.fee_vat_percent, currency), "fee-vat"),
    ):
        if value > 0:
            postings.credit(
                currency=currency, amount=value, borne_by=account, reference=reference, key=f"{reference}:credit:{part}"
            )
    # The app's finder fee on the original (postings.finder_fee: finder fees expense, the app's account), taken
    # back in the share of the bill the credits give back in all, less what the others took back: the whole fee
    # once they void the charge (each had taken back its own share, rounded: a cent could stay).
    lines = list(
        LedgerLine.objects.filter(entry__idempotency_key=f"cdr:{original.pk}:finder_fee").select_related("account")
    )
    expense = next((line for line in lines if line.account.code == "expense:finder-fees"), None)
    app = next((line for line in lines if line.account.code.startswith("bap:")), None)
    if expense is not None and app is not None and expense.amount_minor > 0:
        in_all = _fee_given_back_in_all(receipt, original, original_receipt, currency, terms, others)
        cpo_back = -bill_.cpo + sum(
            (-postings.bill_of(o, fee_vat_rate=terms.fee_vat_percent, policy=terms.rounding).cpo for o in others), ZERO
        )
        back = cpo_back + sum(in_all, ZERO)
        total = original_receipt.total_incl_vat
        share = min(Decimal(1), back / total) if total > 0 else ZERO
        taken = round_money(from_minor(expense.amount_minor, currency) * share, currency, terms.rounding)
        before = LedgerLine.objects.filter(
            entry__idempotency_key__in=[f"cdr:{o.cdr_id}:finder_fee" for o in others], account=expense.account
        )
        taken -= from_minor(-sum(before.values_list("amount_minor", flat=True)), currency)
        code = app.account.code
        if taken > 0:
            postings.finder_fee(
                bap_id=code.removeprefix("bap:").rsplit(":", 1)[0],
                currency=currency,
                amount=-taken,
                bap_collected=code.endswith(":receivable"),
                reference=reference,
            )
    return fee + fee_vat


def _capture_wallet(payment: Payment, payer: LedgerAccount) -> None:
    amount = payment.billed_minor or 0
    postings.capture(payment, payer=payer, amount_minor=amount, held_minor=payment.authorised_minor)
    Payment.objects.filter(pk=payment.pk).update(status=Payment.Status.CAPTURED, captured_minor=amount)
    payment.status, payment.captured_minor = Payment.Status.CAPTURED, amount
    _sync_wallet(Driver.objects.select_for_update().get(pk=payment.driver_id))
    _tell_app(payment)


# --- provider operations (run by tasks, outside the request) -------------------------------------------


def _operation(payment: Payment, kind: str, amount_minor: int, key: str) -> PaymentOperation:
    operation, _ = PaymentOperation.objects.get_or_create(
        idempotency_key=key, defaults={"payment": payment, "kind": kind, "amount_minor": amount_minor}
    )
    return operation


def _execute(
    operation: PaymentOperation,
    call: Callable[[PaymentOperation, Payment], gateways.GatewayResult | None],
    book: Callable[[PaymentOperation, Payment, gateways.GatewayResult], None],
    refused: Callable[[PaymentOperation, Payment, gateways.GatewayError], None] | None = None,
) -> PaymentOperation:
    """Run one PENDING provider operation exactly once, however many workers try it at once: its row is locked
    across the provider call (another runner waits, then finds it done), the call carries the operation's
    idempotency key, and its result is booked (`book`) in the same transaction that marks it SUCCEEDED. A
    refusal marks it FAILED (the exceptions queue shows it), after `refused` booked what the refusal says (in the
    same transaction; it may reword the operation's error); a retryable error is recorded and raised after the
    transaction, for the task's retry. `call` may answer None: nothing to ask the provider, book as done."""
    error: gateways.GatewayError | None = None
    # The try is counted before the call, in its own commit: a worker killed during the call rolls its
    # transaction back, and the next try must still know it repeats one (`repeated`: look at the provider's
    # records first; Stripe replays a stored 500 for a key for 24 h).
    PaymentOperation.objects.filter(pk=operation.pk, status=PaymentOperation.Status.PENDING).update(
        attempts=F("attempts") + 1
    )
    with transaction.atomic():
        operation = PaymentOperation.objects.select_for_update().get(pk=operation.pk)
        if operation.status != PaymentOperation.Status.PENDING:
            return operation
        payment = Payment.objects.select_for_update().get(pk=operation.payment_id)
        try:
            result = call(operation, payment)
        except gateways.GatewayError as exc:
            error, result = exc, None
        if error is not None:
            operation.error = str(error)[:500]
            if not error.retryable:
                operation.status, operation.finished_at = PaymentOperation.Status.FAILED, timezone.now()
                if refused is not None:
                    refused(operation, payment, error)
            operation.save()
        else:
            operation.error = ""  # an earlier try's error; `book` may note what it found instead
            book(operation, payment, result or gateways.GatewayResult(reference="", amount_minor=0, status="none"))
            operation.status, operation.finished_at = PaymentOperation.Status.SUCCEEDED, timezone.now()
            if result is not None:
                operation.provider_reference = result.reference[:100]
            operation.save()
    if error is not None and error.retryable:
        raise error
    return operation


def payment_capture(payment_id: int) -> Payment:
    """Capture a billed, authorised payment: the bill up to the hold (the provider releases the rest); a bill
    of zero releases the hold instead; the rest of a bill above the hold gets its own checkout (a `balance`
    payment). Safe to run again and at once: see _execute."""
    payment = Payment.objects.get(pk=payment_id)
    if payment.status in (Payment.Status.RELEASED, Payment.Status.FAILED):
        # The authorisation ended (expired, released by the provider) before the capture: nothing to capture. The
        # exceptions queue shows the failed capture, and the bill is asked for again (_collect_after_lapse).
        with transaction.atomic():
            payment.operations.filter(
                kind=PaymentOperation.Kind.CAPTURE, status=PaymentOperation.Status.PENDING
            ).update(
                status=PaymentOperation.Status.FAILED,
                error=f"the authorisation was {payment.status.lower()} before the capture: the bill is asked for "
                "with a balance payment",
                finished_at=timezone.now(),
            )
            _collect_after_lapse(payment)
        payment.refresh_from_db()
        return payment
    if payment.status != Payment.Status.AUTHORISED:
        # Settled meanwhile (captured, then maybe refunded): a capture still PENDING has nothing left to ask the
        # provider; it is closed as done (through _execute, so a run in flight is waited for), else the sweep
        # would find it again every beat.
        for operation in payment.operations.filter(
            kind=PaymentOperation.Kind.CAPTURE, status=PaymentOperation.Status.PENDING
        ):
            _execute(operation, lambda operation, payment: None, lambda operation, payment, result: None)
        return payment
    if payment.billed_minor is None:
        return payment
    amount = min(payment.billed_minor, payment.authorised_minor)
    if amount == 0:
        return payment_release(payment_id)
    operation = _operation(payment, PaymentOperation.Kind.CAPTURE, amount, f"{payment.key}:capture")

    def call(operation: PaymentOperation, payment: Payment) -> gateways.GatewayResult | None:
        if payment.status != Payment.Status.AUTHORISED:
            return None  # settled meanwhile
        return gateways.gateway(payment.provider).capture(
            payment_id=payment.provider_payment_id,
            amount_minor=operation.amount_minor,
            currency=payment.currency,
            idempotency_key=operation.idempotency_key,
            repeated=operation.attempts > 1,
        )

    def book(operation: PaymentOperation, payment: Payment, result: gateways.GatewayResult) -> None:
        if payment.status != Payment.Status.AUTHORISED:
            return
        postings.capture(
            payment, payer=_payer(payment), amount_minor=operation.amount_minor, held_minor=payment.authorised_minor
        )
        payment.status, payment.captured_minor = Payment.Status.CAPTURED, operation.amount_minor
        payment.save()
        # A provider that captures only whole authorisations (Razorpay) may answer that it took more than the
        # bill, when it could not refund the difference in the same call: the capture is booked all the same
        # (the money is taken), and what is above the bill is owed back to the driver and refunded by an
        # operation of its own, with the key the provider's adapter used, so a refund already made is found.
        above = min(result.amount_minor, payment.authorised_minor) - operation.amount_minor if result.reference else 0
        if above > 0:
            _capture_rest_owed(payment, operation, above)
        if payment.purpose == "charge" and (payment.billed_minor or 0) > operation.amount_minor:
            # The rest of a bill above the hold, less the credits decided before the capture: they cover it first.
            owed = (payment.billed_minor or 0) - operation.amount_minor
            owed -= _credits_cover_the_rest(payment, owed)
            if owed > 0:
                rest, made = _balance_payment(payment, "rest", owed)
                if made:
                    run_after_commit("billing.tasks.open_balance_checkout", rest.pk)
        # A refund decided before the capture (a credit that came first) can run now, for what the rest left it.
        for key in payment.operations.filter(
            kind=PaymentOperation.Kind.REFUND, status=PaymentOperation.Status.PENDING
        ).values_list("idempotency_key", flat=True):
            run_after_commit("billing.tasks.refund_payment", key)
        _tell_app(payment)

    def refused(operation: PaymentOperation, payment: Payment, error: gateways.GatewayError) -> None:
        # The hold lapsed at the provider before this capture (Stripe cancelled the PaymentIntent, Razorpay refunded
        # the authorisation uncaptured): nothing was taken, and nothing can be. Booked as a release, as a capture
        # that finds the payment RELEASED is (its RELEASED webhook may come later, or never be read as one), and the
        # bill asked for again with a balance payment; the capture stays FAILED on the exceptions queue.
        if error.code != gateways.LAPSED or payment.status != Payment.Status.AUTHORISED:
            return
        _released(payment)
        operation.error = (
            f"the authorisation lapsed before the capture: the bill is asked for with a balance payment ({error})"[:500]
        )
        _collect_after_lapse(payment)

    _execute(operation, call, book, refused)
    payment.refresh_from_db()
    return payment


CAPTURE_REST_SUFFIX = ":capture:rest"  # the key of the refund of what a capture took above the bill


def _capture_rest_owed(payment: Payment, capture: PaymentOperation, above: int) -> None:
    """What the provider took above the bill, in the capture's transaction: owed back to the driver (taken into
    our clearing account, on refunds:pending until paid) and queued as its own refund operation."""
    key = f"{capture.idempotency_key}:rest"
    postings.credit(
        currency=payment.currency,
        amount=from_minor(above, payment.currency),
        borne_by=accounts.clearing(payment.provider, payment.currency),
        reference=f"payment:{payment.pk}",
        key=f"{key}:owed",
    )
    _operation(payment, PaymentOperation.Kind.REFUND, above, key)
    run_after_commit("billing.tasks.refund_payment", key)


# The key suffix of what a credit decided before a capture gave to the rest of the bill above the hold (below).
REST_COVERED_SUFFIX = ":rest-covered"


def _credits_cover_the_rest(charge: Payment, rest: int) -> int:
    """What of the rest of a bill above its hold (minor units) the credits decided before the capture cover, in
    the capture's transaction: their refunds waiting for it (PENDING, the bill's, oldest first) go to the rest
    first, as a credit after the capture lowers the rest page first (_balance_asks_lowered), and only what is left
    of them is refunded at the provider. Each part so used is credited to the driver's account (refunds:pending to
    their receivable, once per operation: `<key>:rest-covered`), and its operation lowered by it, or closed with
    nothing more to give back. (Their runs had refunded the credit out of what the capture took while the rest page
    still asked the same money: on a bill of 100.00 and a hold of 80.00, a credit of 30.00 refunded 30.00 and left
    20.00 asked, where after the capture it cancels the 20.00 and refunds 10.00.) Read under the payment's row
    lock, which a credit of its booking holds while it is weighed (_balance_asks_lowered): one decided meanwhile is
    seen here, or sees the payment captured and lowers the rest page. A refund run waits for the capture (the
    payment AUTHORISED): none holds these rows."""
    covered = 0
    receivable = accounts.driver_receivable(charge.driver_id or 0, charge.currency)
    for operation in _bill_refunds(charge).filter(status=PaymentOperation.Status.PENDING).order_by("pk"):
        used = min(rest - covered, operation.amount_minor)
        if used <= 0:
            break
        amount = from_minor(used, charge.currency)
        postings.refund(
            currency=charge.currency,
            amount=amount,
            paid_from=receivable,
            reference=_refund_reference(operation),
            key=f"{operation.idempotency_key}{REST_COVERED_SUFFIX}",
        )
        left = operation.amount_minor - used
        note = f"{amount} {charge.currency} taken off the rest of the bill above the hold (the driver's account)"
        closed = {"status": PaymentOperation.Status.SUCCEEDED, "finished_at": timezone.now()} if left == 0 else {}
        PaymentOperation.objects.filter(pk=operation.pk).update(amount_minor=left, error=note[:500], **closed)
        covered += used
        log.info("payment %s: refund %s covers %s of the rest above the hold", charge.pk, operation.idempotency_key,
                 amount)  # fmt: skip
    return covered


def _collect_after_lapse(charge: Payment) -> None:
    """A billed charge payment whose hold lapsed (or was released) before its capture: the bill is asked for with
    a `balance` payment of its own and a hosted page the app gets with on_update, as a bill that came after the
    release is (bill()). It had stayed on the driver's receivable with nothing asking for it, and a staff retry
    of the failed capture could not collect it. Once per charge payment (its key derived from the charge's); the
    charge payment then keeps no bill (it took nothing), so the order shows the bill owed once."""
    locked = Payment.objects.select_for_update().get(pk=charge.pk)
    if (
        locked.purpose != "charge"
        or locked.provider == "wallet"
        or locked.collected_by != Payment.CollectedBy.BPP
        or not locked.billed_minor
    ):
        return
    owed = locked.billed_minor - locked.captured_minor
    Payment.objects.filter(pk=locked.pk).update(billed_minor=None)
    owed -= _refunds_taken_off_the_bill(locked)
    if owed <= 0:
        return
    payment, created = _balance_payment(locked, "lapsed", owed)
    if created:
        run_after_commit("billing.tasks.open_balance_checkout", payment.pk)


def _refunds_taken_off_the_bill(charge: Payment) -> int:
    """The credits decided before a capture that found the hold gone (refunds waiting for it: PENDING REFUND
    operations of the charge payment, the bill's, not the rest above a capture), taken off the bill asked again:
    the driver is never asked for what a credit already gave back (the page had asked the whole bill, and the
    waiting refund then went to the driver's account: 463.27 paid for 363.27 owed). Each is booked as a credit
    that lowers a page is, refunds:pending to the driver's account, under the key its own run books what the
    provider can't take back with (`<key>:account`), so the two never both post; the run, queued after the
    commit, finds the payment not captured and closes the operation with nothing more. Its row is not locked
    here: a run holds it and waits for the charge payment's row, which the caller holds. What they take off (minor
    units)."""
    waiting = _bill_refunds(charge).filter(status=PaymentOperation.Status.PENDING)
    taken = 0
    for operation in waiting.order_by("pk"):
        _refund_to_account(charge, operation, from_minor(operation.amount_minor, charge.currency))
        taken += operation.amount_minor
        log.info("payment %s: the credit of refund %s is taken off the bill asked again", charge.pk,
                 operation.idempotency_key)  # fmt: skip
        run_after_commit("billing.tasks.refund_payment", operation.idempotency_key)
    if charge.captured_minor == 0:
        # Those whose run came first (the beat's sweep, after the hold was reported gone), and those of credits
        # decided after that report (_credited_off_a_released_bill): nothing captured to give back, the driver's
        # account credited already (`<key>:account`, no `:paid`). The page asks what is left the same (it had
        # asked the whole bill when the refund ran before the capture).
        done = _bill_refunds(charge).filter(status=PaymentOperation.Status.SUCCEEDED)
        receivable = accounts.driver_receivable(charge.driver_id or 0, charge.currency)
        for operation in done.order_by("pk"):
            key = operation.idempotency_key
            if LedgerEntry.objects.filter(idempotency_key=f"{key}:paid").exists():
                continue
            credited = LedgerLine.objects.filter(entry__idempotency_key=f"{key}:account", account=receivable).aggregate(
                total=Sum("amount_minor")
            )["total"]
            taken += -(credited or 0)
    return taken


def balance_checkout(payment_id: int) -> Payment:
    """The hosted page for the rest of a bill above its hold; the driver's app gets it with on_update. A provider
    that can't be reached raises, for the task's retry; one that refuses the checkout (a non-retryable error:
    the same request would be refused again) ends the payment FAILED with the refusal recorded: the amount stays
    on the driver's receivable and the exceptions queue shows the payment, instead of a retry every beat."""
    payment = Payment.objects.get(pk=payment_id)
    if payment.checkout_id or payment.status != Payment.Status.PENDING:
        return payment
    amount = payment.billed_minor or 0
    try:
        checkout = _open_page(
            payment,
            amount_minor=amount,
            return_url="",
            description=f"Rest of the bill of order {payment.booking.order_id if payment.booking else ''}",
        )
    except gateways.GatewayError as error:
        if error.retryable:
            raise
        failed = Payment.objects.filter(pk=payment.pk, status=Payment.Status.PENDING, checkout_id="").update(
            status=Payment.Status.FAILED, failure=f"checkout refused: {error}"[:300]
        )
        payment.refresh_from_db()
        if failed:
            log.warning("payment %s: %s refused the balance checkout: %s", payment.pk, payment.provider, error)
            _tell_app(payment)
        return payment
    # The page and the on_update that shows it to the app commit together: a run killed in between had saved
    # the page and told nobody, and its redelivery (and the beat's sweep) saw a page opened and asked no one to
    # pay it. Killed before the commit, the run saved nothing: the redelivery opens the page again under the same
    # key, and the provider answers the same page. Only this row is locked (a credit's lowering holds the
    # booking's and the charge payment's rows, then waits for this one): nothing here waits the other way.
    with transaction.atomic():
        payment = Payment.objects.select_for_update().get(pk=payment.pk)
        if payment.checkout_id:
            return payment  # a second delivery of the task, run at the same time, saved it and told the app
        withdrawn = _withdrawn_page(payment)
        # Withdrawn while its page was being opened (a credit covered or lowered its bill): the page just opened
        # asks for nothing, and is closed after the commit (its checkout_id kept for that); the app is shown no
        # url, and was told of the withdrawal by it.
        url = "" if withdrawn else checkout.url
        Payment.objects.filter(pk=payment.pk).update(
            checkout_id=checkout.checkout_id, url=url, requested_minor=amount, updated_at=timezone.now()
        )
        payment.checkout_id, payment.url, payment.requested_minor = checkout.checkout_id, url, amount
        if withdrawn:
            run_after_commit("billing.tasks.expire_checkout", payment.pk)
        else:
            _tell_app(payment)
    return payment


def _payer(payment: Payment) -> LedgerAccount:
    if payment.collected_by == Payment.CollectedBy.BAP:
        return accounts.bap_receivable(payment.bap_id, payment.currency)
    return accounts.driver_receivable(payment.driver_id or 0, payment.currency)


def _released(payment: Payment) -> None:
    postings.release(payment, held_minor=payment.authorised_minor)
    payment.status = Payment.Status.RELEASED
    payment.save()
    if payment.provider == "wallet":
        _sync_wallet(Driver.objects.select_for_update().get(pk=payment.driver_id))
    _tell_app(payment)


def ended_without_charge(booking: Booking) -> bool:
    """Has the booking ended with nothing to bill: no longer active (cancelled, a no-show, a start that failed)
    and no charging session? A completed charge, or a booking cancelled while charging, is billed by its CDR."""
    return not booking.is_active and not ChargingSession.objects.filter(booking=booking).exists()


def booking_cancelled(event: events.BookingCancelled) -> None:
    """A cancel before charging releases the hold (no cancellation fee); after a start the CDR is billed."""
    booking = event.booking
    if ChargingSession.objects.filter(booking=booking).exists():
        return
    # Every payment of the booking locked before its status is read (the booking's row is the caller's, locked or
    # updated: booking → payment, the order everywhere). An authorisation whose webhook holds its row, not
    # committed, is waited for and seen AUTHORISED; one whose webhook comes after this commits finds the booking
    # ended and releases itself (_apply). Read without the lock, the first had been missed: the booking CANCELLED,
    # its payment AUTHORISED, and no release.
    locked = Payment.objects.select_for_update().filter(booking=booking).order_by("pk")
    for payment in [p for p in locked if p.status == Payment.Status.AUTHORISED]:
        if payment.provider == "wallet":
            _released(payment)
        else:
            _operation(payment, PaymentOperation.Kind.RELEASE, payment.authorised_minor, f"{payment.key}:release")
            run_after_commit("billing.tasks.release_payment", payment.pk)


def payment_release(payment_id: int) -> Payment:
    """Cancel an authorisation at the provider and book the hold released (once, see _execute). One the
    provider released itself meanwhile (its RELEASED webhook) is done without a call."""
    payment = Payment.objects.get(pk=payment_id)
    operation = _operation(payment, PaymentOperation.Kind.RELEASE, payment.authorised_minor, f"{payment.key}:release")

    def call(operation: PaymentOperation, payment: Payment) -> gateways.GatewayResult | None:
        if payment.status != Payment.Status.AUTHORISED:
            return None
        return gateways.gateway(payment.provider).release(
            payment_id=payment.provider_payment_id,
            idempotency_key=operation.idempotency_key,
            repeated=operation.attempts > 1,
        )

    def book(operation: PaymentOperation, payment: Payment, result: gateways.GatewayResult) -> None:
        if payment.status == Payment.Status.AUTHORISED:
            _released(payment)

    _execute(operation, call, book)
    payment.refresh_from_db()
    return payment


# --- holds no order was confirmed with ------------------------------------------------------------------

# on_init gives the app the hosted page, so a driver may pay before confirming. A confirm refused (the charger
# went out of order, the quote expired) or never sent leaves the payment AUTHORISED with no booking: no cancel,
# bill or sweep of operations would ever release it, and the driver's money stayed held until the provider let
# it lapse (7 days at Stripe). A confirm needs its journey's quote valid (driver_pricing.quote_usable), and every
# init holds that quote for the driver, QUOTE_TTL (15 minutes) from then (quote_hold): so the hold is released
# once no quote held by the payment's driver and not booked is valid any more, this long after (a confirm that
# checked its quote just before it expired, still under way).
UNBOOKED_HOLD_MARGIN = timedelta(seconds=60)


def _quotes_held(driver_id: Any, now: Any) -> QuerySet[Quote]:
    """Quotes held for the driver (an init's), not booked, valid or expired less than the margin ago."""
    return Quote.objects.filter(
        driver_id=driver_id, accepted_at__isnull=True, valid_until__gte=now - UNBOOKED_HOLD_MARGIN
    )


def _confirm_possible(payment: Payment, now: Any = None) -> bool:
    """Could a confirm still bind this unbooked payment to an order? While its driver holds a quote still valid
    (see UNBOOKED_HOLD_MARGIN). Erring on the side of waiting: a quote of another journey of the same driver keeps
    the hold until it expires too."""
    if payment.driver_id is None:
        return False
    return _quotes_held(payment.driver_id, now or timezone.now()).exists()


def _quote_expired(payment: Payment, now: Any = None) -> bool:
    """Did the quote an init held with this payment expire (more than the margin ago), no other being valid? The
    init holds it from before the payment is made (quote_hold, then payment_open) to QUOTE_TTL after; a payment
    with no such quote to judge by is left to the beat's sweep (unbooked_holds_release)."""
    now = now or timezone.now()
    if payment.driver_id is None or _confirm_possible(payment, now):
        return False
    held = Quote.objects.filter(driver_id=payment.driver_id, accepted_at__isnull=True)
    return held.filter(valid_until__gte=payment.created_at, valid_until__lt=now - UNBOOKED_HOLD_MARGIN).exists()


def _unbooked_holds() -> QuerySet[Payment]:
    """Charge payments we collect, held (AUTHORISED) with no booking, whose release is not decided yet."""
    return (
        Payment.objects.filter(
            purpose="charge",
            booking__isnull=True,
            status=Payment.Status.AUTHORISED,
            collected_by=Payment.CollectedBy.BPP,
        )
        .exclude(provider="bap")
        .exclude(operations__kind=PaymentOperation.Kind.RELEASE)
    )


def _unbooked_hold_release(payment: Payment, why: str) -> None:
    """Release a hold no order was confirmed with (the payment's row locked by the caller): a wallet's at once, a
    provider's by its RELEASE operation (the same key a cancel's would have: one release whoever decides it),
    run after the commit (billing.tasks.release_payment; the stuck-operations sweep if that task is lost). A
    confirm that comes after is refused (payment_confirm), and the next init opens a payment of its own."""
    note = f"released: no order was confirmed with it ({why})"[:300]
    Payment.objects.filter(pk=payment.pk).update(failure=note)
    payment.failure = note
    log.warning("payment %s: %s", payment.pk, note)
    if payment.provider == "wallet":
        _released(payment)
        return
    _operation(payment, PaymentOperation.Kind.RELEASE, payment.authorised_minor, f"{payment.key}:release")
    run_after_commit("billing.tasks.release_payment", payment.pk)


def unbooked_holds_release(now: Any = None, limit: int = 200) -> list[int]:
    """Beat (billing.tasks.release_unbooked_holds): release the holds that no order was confirmed with and none
    can be any more (_confirm_possible), oldest first; the ids released. Each in its own transaction, its row
    locked and read again (skipping one another run holds): run twice, or twice at once, a hold is released
    once, and one bound by a confirm meanwhile is left to its booking."""
    now = now or timezone.now()
    due = _unbooked_holds().exclude(Exists(_quotes_held(OuterRef("driver_id"), now)))
    released = []
    for pk in list(due.order_by("pk").values_list("pk", flat=True)[:limit]):
        with transaction.atomic():
            payment = _unbooked_holds().select_for_update(skip_locked=True).filter(pk=pk).first()
            if payment is None or _confirm_possible(payment, now):
                continue
            _unbooked_hold_release(payment, "its quote expired")
            released.append(pk)
    return released


# --- refunds -------------------------------------------------------------------------------------------

REFUNDABLE = (Payment.Status.AUTHORISED, Payment.Status.CAPTURED, Payment.Status.PARTIALLY_REFUNDED)
# A charge payment billed whose hold was released before its capture (the provider reported it gone): the capture
# still to run asks the bill with a balance page (_collect_after_lapse, which then sets its bill to None). A credit
# is taken off that bill through the payment's refund operations, as one decided before the release is.
_BILL_RELEASED_UNCAPTURED = (
    Q(purpose="charge", status=Payment.Status.RELEASED, captured_minor=0, billed_minor__gt=0)
    & Q(collected_by=Payment.CollectedBy.BPP)
    & ~Q(provider="wallet")
)


def _bill_refunds(payment: Payment) -> QuerySet[PaymentOperation]:
    """A payment's refund operations of credits (not the refund of what a capture took above the bill)."""
    return payment.operations.filter(kind=PaymentOperation.Kind.REFUND).exclude(
        idempotency_key__endswith=CAPTURE_REST_SUFFIX
    )


def _credit_room(payment: Payment) -> int:
    """What more of a booking's credits a payment's refunds may carry (minor units). Once captured: what it took,
    less what was refunded and what waiting refunds promise. A charge payment billed and not captured yet: its whole
    bill, less what its refunds carry already. Authorised, the capture takes the bill up to the hold, its refunds
    then give back what the rest of the bill above the hold left of them (they cover that rest first:
    _credits_cover_the_rest); released, the capture asks the bill less all they carry (_collect_after_lapse).
    (Capped at the hold, the part of a credit above it had gone to the driver's account while the rest page asked
    it all the same: a bill of 100.00 on a hold of 80.00, voided before the capture, still asked 20.00.) A balance
    payment authorised: its bill, up to its hold."""
    refunds = _bill_refunds(payment)
    held_or_released = payment.status in (Payment.Status.AUTHORISED, Payment.Status.RELEASED)
    if payment.purpose == "charge" and payment.captured_minor == 0 and held_or_released:
        return (payment.billed_minor or 0) - (refunds.aggregate(total=Sum("amount_minor"))["total"] or 0)
    promised = refunds.filter(status=PaymentOperation.Status.PENDING).aggregate(total=Sum("amount_minor"))["total"]
    takes = (
        payment.captured_minor
        if payment.status != Payment.Status.AUTHORISED
        else min(payment.billed_minor or 0, payment.authorised_minor)
    )
    return takes - payment.refunded_minor - (promised or 0)


def _credited_off_a_released_bill(charge: Payment, operation: PaymentOperation) -> None:
    """A credit of a charge payment whose hold was released before its capture (_BILL_RELEASED_UNCAPTURED): nothing
    to refund at the provider, so it is done at once as its own run would do it (payment_refund: what the provider
    can't take back, credited to the driver's account under `<key>:account`), and the operation closed. The capture,
    asking the bill again, takes it off the page (_refunds_taken_off_the_bill counts such refunds): found released,
    the payment had been passed over and the credit booked to the account apart, and the page asked the whole bill
    (463.27 for 363.27 owed). A credit processed again finds its operation closed."""
    if operation.status != PaymentOperation.Status.PENDING:
        return
    _refund_to_account(charge, operation, from_minor(operation.amount_minor, charge.currency))
    PaymentOperation.objects.filter(pk=operation.pk, status=PaymentOperation.Status.PENDING).update(
        status=PaymentOperation.Status.SUCCEEDED, finished_at=timezone.now()
    )


def refund_due(
    *, payment: Payment | None, amount: Decimal, reference: str, driver_id: int | None, currency: str = ""
) -> None:
    """A credit the driver is owed (booked on refunds:pending, in `currency`) paid back the way the driver paid:
    taken off what the booking's balance payments still ask at the provider (_balance_asks_lowered), refunded at
    the provider over the booking's captured payments (the charge, then a balance), credited to the wallet, or
    taken off what the collecting app owes us. What lowers a page, and what no payment can carry back — no
    payment of ours (an RFID charge invoiced to the account), or more than was captured — is credited to the
    driver's account (their receivable). A charge payment billed and not captured yet carries a credit up to its
    bill (_credit_room): its refund gives back what the capture takes, and the rest is taken off the bill the
    capture still asks with a balance page (the rest above the hold, or all of a hold that lapsed), never asked
    and then credited to the account."""
    currency = payment.currency if payment is not None else currency
    if payment is not None and payment.provider == "wallet":
        _refund_to(accounts.driver_wallet(payment.driver_id, currency), amount, reference)
        _sync_wallet(Driver.objects.select_for_update().get(pk=payment.driver_id))
        return
    if payment is not None and payment.collected_by == Payment.CollectedBy.BAP:
        _refund_to(accounts.bap_receivable(payment.bap_id, currency), amount, reference)
        return
    rest = to_minor(amount, currency)
    lowered = _balance_asks_lowered(payment, rest, reference) if payment is not None else 0
    rest -= lowered
    if payment is not None:
        carrying = Q(status__in=REFUNDABLE) | _BILL_RELEASED_UNCAPTURED
        booking_payments = (
            Payment.objects.filter(carrying, booking=payment.booking).order_by("pk")
            if payment.booking_id
            else Payment.objects.filter(carrying, pk=payment.pk)
        )
        for each in booking_payments:
            share = min(rest, _credit_room(each))
            if share <= 0:
                continue
            key = f"{each.key}|{reference}:refund"
            operation = _operation(each, PaymentOperation.Kind.REFUND, share, key)
            if each.status == Payment.Status.RELEASED:
                _credited_off_a_released_bill(each, operation)
            else:
                run_after_commit("billing.tasks.refund_payment", key)
            rest -= share
    rest += lowered  # off the bill still asked for: off what the driver owes
    if rest > 0:
        owner = driver_id if driver_id is not None else (payment.driver_id if payment is not None else None)
        if owner is None:
            return  # stays on refunds:pending: the exceptions queue shows it
        _refund_to(accounts.driver_receivable(owner, currency), from_minor(rest, currency), reference, suffix="account")


def _balance_asks_lowered(charge: Payment, credit_minor: int, reference: str) -> int:
    """What of a credit (minor units) is taken off the bills the booking's unpaid balance payments still ask at
    the provider, before any refund: the driver is never asked for what a credit already gave back (it had gone to
    their account while the page asked the whole bill: paid, then owed back by hand). The first asks first; one
    the credit covers asks nothing more, else it asks the rest on a new page (_balance_lowered). One that failed
    at its page (a declined card, an expired page, a refused checkout) opens no new page: its bill is lowered
    where it is, so a page the driver still pays (a declined card tried again) takes no more than is owed. Rows
    locked and read again: a page whose authorisation committed first is refunded over instead (refund_due). A
    credit processed again finds its share booked to the driver's account (the same transaction) and lowers
    nothing.

    The booking's row, then the charge payment's, are locked first: two credits of one booking (a credit CDR and
    a dispute's credit, credits of two of its CDRs) are weighed one after the other, the second seeing the page
    the first opened (read committed: a page inserted after this statement began is no row it waits on, and had
    been missed, its credit booked to the account while the new page asked it too); and a page being made for
    the charge (_collect_after_lapse, the rest above a hold: both hold the charge payment's row) is made first."""
    if not charge.booking_id:
        return 0
    # NO KEY UPDATE: a page being made for the booking (its INSERT checks its booking FOR KEY SHARE) is not held
    # up by it, while it holds the charge payment's row this waits for (FOR UPDATE had deadlocked the two).
    list(Booking.objects.select_for_update(no_key=True).filter(pk=charge.booking_id).values_list("pk", flat=True))
    list(Payment.objects.select_for_update().filter(pk=charge.pk).values_list("pk", flat=True))
    if LedgerEntry.objects.filter(idempotency_key=f"{reference}:refund:account").exists():
        return 0
    asking = (
        Payment.objects.select_for_update()
        .filter(
            booking_id=charge.booking_id,
            purpose="balance",
            status__in=(Payment.Status.PENDING, Payment.Status.FAILED),
            authorised_minor=0,
        )
        .exclude(provider__in=("wallet", "bap"))
        .order_by("pk")
    )
    lowered = 0
    for payment in asking:
        less = min(credit_minor - lowered, payment.billed_minor or 0)
        if less <= 0:
            continue
        if payment.status == Payment.Status.FAILED and less >= (payment.billed_minor or 0):
            # Nothing left to ask: withdrawn (no url), or its page, still open, was shown to pay for nothing.
            _withdraw(payment, f"cancelled: the credit {reference} covers its bill")
        elif payment.status == Payment.Status.FAILED:
            Payment.objects.filter(pk=payment.pk).update(billed_minor=F("billed_minor") - less)
            _tell_app(payment)
        else:
            _balance_lowered(payment, (payment.billed_minor or 0) - less, reference)
        lowered += less
        if lowered >= credit_minor:
            break
    return lowered


def _balance_lowered(payment: Payment, owed: int, reference: str) -> None:
    """An unpaid balance payment lowered by a credit to `owed`. Its page can't be changed or closed at the
    provider (the port has no such call, and the driver may be paying it at this very moment), so the payment is
    withdrawn (_withdraw) and the rest, if any, is asked with a payment of its own and a new page, its key derived
    from this one's (made once; its webhooks find it by its own reference). The old page paid all the same takes
    the bill over, or is released (_balance_taken_over): the driver pays once, no more than is owed."""
    if owed <= 0:
        _withdraw(payment, f"cancelled: the credit {reference} covers its bill")
        return
    replacement, made = _balance_payment(payment, LOWERED, owed)
    _withdraw(payment, f"lowered by the credit {reference}: the rest is asked at {reference_of(replacement)}")
    if made:
        run_after_commit("billing.tasks.open_balance_checkout", replacement.pk)


def _refund_to(account: LedgerAccount, amount: Decimal, reference: str, suffix: str = "") -> None:
    postings.refund(
        currency=account.currency,
        amount=amount,
        paid_from=account,
        reference=reference,
        key=f"{reference}:refund{':' + suffix if suffix else ''}",
    )


def payment_refund(operation_key: str) -> PaymentOperation:
    """Run a queued refund at the provider and book it (refunds:pending → clearing), once (see _execute). A
    refund whose payment was never captured waits for the capture (which queues it again); one whose payment
    can no longer be refunded at the provider (released, failed, already refunded) is credited to the driver's
    account instead, so no operation waits forever."""
    operation = PaymentOperation.objects.select_related("payment").get(idempotency_key=operation_key)
    if operation.status != PaymentOperation.Status.PENDING:
        return operation
    if operation.payment.status == Payment.Status.AUTHORISED:
        return operation
    if operation.idempotency_key.endswith(CAPTURE_REST_SUFFIX):
        return _refund_capture_rest(operation)
    reference = operation.idempotency_key.partition("|")[2].removesuffix(":refund")

    def call(operation: PaymentOperation, payment: Payment) -> gateways.GatewayResult | None:
        amount = min(operation.amount_minor, payment.captured_minor - payment.refunded_minor)
        if amount <= 0 or payment.status not in (Payment.Status.CAPTURED, Payment.Status.PARTIALLY_REFUNDED):
            return None
        return gateways.gateway(payment.provider).refund(
            payment_id=payment.provider_payment_id,
            amount_minor=amount,
            currency=payment.currency,
            idempotency_key=operation.idempotency_key,
            repeated=operation.attempts > 1,
        )

    def book(operation: PaymentOperation, payment: Payment, result: gateways.GatewayResult) -> None:
        # What `call` asked the provider for (the payment row is locked: the same figures), or 0 if it didn't, or
        # if the refund it got back failed or was cancelled at the provider (a retry finds the refund made with
        # our key whatever its status): no refund made, all of it goes to the driver's account.
        not_made = bool(result.reference) and result.status in gateways.REFUND_NOT_MADE
        refunded = (
            min(operation.amount_minor, payment.captured_minor - payment.refunded_minor)
            if result.reference and not not_made
            else 0
        )
        if not_made:
            _refund_not_made(operation, payment, result)
        if refunded:
            postings.refund(
                currency=payment.currency,
                amount=from_minor(refunded, payment.currency),
                paid_from=accounts.clearing(payment.provider, payment.currency),
                reference=reference,
                key=f"{operation.idempotency_key}:paid",
            )
            payment.refunded_minor += refunded
            full = payment.refunded_minor >= payment.captured_minor
            payment.status = Payment.Status.REFUNDED if full else Payment.Status.PARTIALLY_REFUNDED
            payment.save()
            _tell_app(payment)
        rest = operation.amount_minor - refunded
        if rest > 0:  # what the provider can't give back goes to the driver's account
            _refund_to_account(payment, operation, from_minor(rest, payment.currency))

    return _execute(operation, call, book)


def _refund_not_made(operation: PaymentOperation, payment: Payment, result: gateways.GatewayResult) -> None:
    """The refund a refund operation got back failed or was cancelled at the provider: noted on the operation
    (which _execute closes SUCCEEDED: asked again under its key, the provider answers the same failed refund),
    on the payment, and logged. The caller credits the amount to the driver's account."""
    amount = from_minor(operation.amount_minor, payment.currency)
    note = (
        f"refund {result.reference} of {reference_of(payment)} {result.status} at {payment.provider}: {amount} "
        f"{payment.currency} credited to the driver's account"
    )
    operation.error = note[:500]
    payment.failure = note[:300]
    payment.save()
    log.error("%s", note)


def _refund_capture_rest(operation: PaymentOperation) -> PaymentOperation:
    """Refund what a capture took above the bill (see _capture_rest_owed): all of it, whatever credits were
    refunded since (they came out of the bill), paid from clearing. Not the bill's refund: the payment's
    captured and refunded figures stay as they are. A refusal leaves it FAILED on the exceptions queue, the
    amount still owed on refunds:pending; a refund found failed at the provider (the adapter's own try within
    the capture, or this one's lost answer) credits it to the driver's account."""

    def call(operation: PaymentOperation, payment: Payment) -> gateways.GatewayResult | None:
        return gateways.gateway(payment.provider).refund(
            payment_id=payment.provider_payment_id,
            amount_minor=operation.amount_minor,
            currency=payment.currency,
            idempotency_key=operation.idempotency_key,
            repeated=operation.attempts > 1,
        )

    def book(operation: PaymentOperation, payment: Payment, result: gateways.GatewayResult) -> None:
        if result.status in gateways.REFUND_NOT_MADE:  # found failed (a retry): still owed, to the account
            _refund_not_made(operation, payment, result)
            _refund_to_account(payment, operation, from_minor(operation.amount_minor, payment.currency))
            return
        postings.refund(
            currency=payment.currency,
            amount=from_minor(operation.amount_minor, payment.currency),
            paid_from=accounts.clearing(payment.provider, payment.currency),
            reference=f"payment:{payment.pk}",
            key=f"{operation.idempotency_key}:paid",
        )

    return _execute(operation, call, book)


STUCK_AFTER_SECONDS = 600


def operations_stuck(now: Any = None, limit: int = 200) -> list[PaymentOperation]:
    """PENDING operations older than STUCK_AFTER_SECONDS (their task died with its worker, or was never
    queued), the least tried first so a few hopeless ones never starve the rest."""
    since = (now or timezone.now()) - timedelta(seconds=STUCK_AFTER_SECONDS)
    return list(
        PaymentOperation.objects.filter(status=PaymentOperation.Status.PENDING, created_at__lt=since).order_by(
            "attempts", "pk"
        )[:limit]
    )


def balance_checkouts_due(now: Any = None, limit: int = 200) -> list[int]:
    """`balance` payments (the rest of a bill above its hold, a corrected CDR's bill) whose checkout was never
    opened: their task was lost between the commit that made them and the queue (a worker killed), or gave up.
    Nothing else would ever ask the driver for that money."""
    since = (now or timezone.now()) - timedelta(seconds=STUCK_AFTER_SECONDS)
    due = Payment.objects.filter(purpose="balance", status=Payment.Status.PENDING, checkout_id="", created_at__lt=since)
    return list(due.exclude(provider="wallet").order_by("pk").values_list("pk", flat=True)[:limit])


def operation_retry(*, operation: PaymentOperation, user: Any = None) -> PaymentOperation:
    """Staff retry a failed or stuck provider operation from the exceptions queue, or the beat's sweep one whose
    task was lost: the same idempotency key goes to the provider again, so a call that did go through is
    answered, not repeated.

    `operation` may be stale (the sweep loads its batch, then retries one by one, each waiting on a provider):
    what happened since is read again here. Only an operation the caller saw FAILED, and still FAILED, is
    reopened, by a compare-and-set; a PENDING one is run as it is (_execute locks it and does nothing if its own
    task finished it meanwhile); a SUCCEEDED one is never reopened: that would pay a refund twice or put a
    capture back on a payment already captured."""
    fresh = PaymentOperation.objects.get(pk=operation.pk)
    if fresh.status == PaymentOperation.Status.FAILED and operation.status == PaymentOperation.Status.FAILED:
        reopened = PaymentOperation.objects.filter(pk=fresh.pk, status=PaymentOperation.Status.FAILED).update(
            status=PaymentOperation.Status.PENDING, finished_at=None
        )
        if not reopened:  # another retry took it first
            operation.refresh_from_db()
            return operation
    elif fresh.status != PaymentOperation.Status.PENDING:
        # Done since the caller looked (SUCCEEDED), or failed since (a refusal: the exceptions queue shows it).
        operation.refresh_from_db()
        return operation
    log.info("payment operation %s retried by %s", operation.pk, getattr(user, "username", None))
    try:
        if operation.kind == PaymentOperation.Kind.CAPTURE:
            payment_capture(operation.payment_id)
        elif operation.kind == PaymentOperation.Kind.RELEASE:
            payment_release(operation.payment_id)
        elif operation.kind == PaymentOperation.Kind.REFUND:
            payment_refund(operation.idempotency_key)
    except gateways.GatewayError:
        pass  # still PENDING, with the error recorded
    operation.refresh_from_db()
    return operation


# --- disputes ------------------------------------------------------------------------------------------


def dispute_credit(*, cdr_id: int, amount: Decimal, currency: str, reference: str, borne_by_cpo: bool) -> None:
    """A credit granted to a driver from the dispute page: borne by the CPO (its payable shrinks, the CPO
    settlement folds it in) or by us (expense), then refunded the way the driver paid."""
    receipt = DriverReceipt.objects.select_related("cdr__charging_session").filter(cdr_id=cdr_id).first()
    cdr = receipt.cdr if receipt is not None else None
    if cdr is None:
        from billing.models import Cdr

        cdr = Cdr.objects.get(pk=cdr_id)
    party = f"{cdr.country_code}*{cdr.party_id}"
    amount = round_money(amount, currency)
    if amount <= 0:
        return  # less than the currency's smallest unit: nothing to give back
    borne_by = accounts.cpo_payable(party, currency) if borne_by_cpo else accounts.dispute_expense(currency)
    postings.credit(currency=currency, amount=amount, borne_by=borne_by, reference=reference, key=f"{reference}:credit")
    session = cdr.charging_session if cdr.charging_session_id else None
    payment = _charge_payment(session.booking if session is not None and session.booking_id else None)
    refund_due(
        payment=payment,
        amount=amount,
        reference=reference,
        driver_id=receipt.driver_id if receipt else None,
        currency=currency,
    )
