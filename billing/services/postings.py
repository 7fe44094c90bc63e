"""The ledger entries of each money event (issue 12): which accounts move, by how much, and under which
idempotency key. Each function posts in the caller's transaction, so the entry commits with the state change
that caused it or not at all; posting the same event twice returns the first entry (the key).

The events of one charge we collect:

    authorisation  holds:<p> / holds:<p>:authorised           the amount held at the provider (or wallet)
    charge         driver receivable / cpo payable, fees, VAT, rounding     the final bill (from the CDR)
    capture        clearing:<p> / driver receivable, and the hold released  money taken
    release        the hold (or its rest) released                          nothing (more) taken
    finder_fee     expense:finder-fees / bap payable (or bap receivable)    the app's share
    credit         cpo payable (or expense:disputes) / refunds:pending      a credit decided for the driver
    refund         refunds:pending / clearing:<p> (wallet, bap receivable)  the credit paid back

Settlement payments (`manage.py settlement_payment`, event `settlement_payout` or `remittance`): `payout` (we
paid a CPO or an app its payable), `driver_payout` (we paid a driver what their receivable holds in credit, a
refund their provider could not make), `remittance` (an app paid us).

`legs_*` functions build the legs without posting them, for batch posting with `ledger.post_many`
(bench/bench_ledger.py); they look accounts up by code (opened on first use), from memory inside
`ledger.cached_accounts()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from billing.models import DriverReceipt, LedgerAccount, LedgerEntry, Payment
from billing.money import round_money
from billing.services import accounts
from billing.services.ledger import LedgerKeyReused, Leg, balance, from_minor, post, to_minor

ZERO = Decimal("0")


@dataclass(frozen=True)
class Bill:
    """A final bill in the currency's minor unit: what the payer owes and where it goes. `total` is what the
    driver is asked for; `rounding` is what rounding the total added (or took, negative)."""

    currency: str
    cpo: Decimal  # the CPO's CDR total incl. its VAT
    fee: Decimal  # our fee excl. VAT
    fee_vat: Decimal
    fee_vat_rate: Decimal
    total: Decimal

    @property
    def rounding(self) -> Decimal:
        return self.total - self.cpo - self.fee - self.fee_vat


def bill_of(receipt: DriverReceipt, *, fee_vat_rate: Decimal, policy: str) -> Bill:
    """The receipt's figures rounded to the currency: each part rounded on its own, the total as the receipt
    states it (rounded once, on the exact sum); the difference is booked as rounding."""
    currency = receipt.currency

    def money(amount: Decimal) -> Decimal:
        return round_money(amount, currency, policy)

    return Bill(
        currency=currency,
        cpo=money(receipt.cpo_cost_excl_vat + receipt.cpo_vat),
        fee=money(receipt.fee_excl_vat),
        fee_vat=money(receipt.fee_vat),
        fee_vat_rate=fee_vat_rate,
        total=money(receipt.total_incl_vat),
    )


def _legs(*pairs: tuple[LedgerAccount, Decimal]) -> list[Leg]:
    """Legs of the non-zero amounts (a zero line says nothing; the ledger refuses it)."""
    return [Leg(account, amount) for account, amount in pairs if amount != 0]


def legs_charge(*, bill: Bill, payer: LedgerAccount, cpo_party: str) -> list[Leg]:
    """The bill: the payer (a driver's or an app's receivable) is debited the total; the CPO is owed its CDR
    total, we earn our fee and owe its VAT, the rounding is ours."""
    currency = bill.currency
    return _legs(
        (payer, bill.total),
        (accounts.cpo_payable(cpo_party, currency), -bill.cpo),
        (accounts.revenue_fees(currency), -bill.fee),
        (accounts.tax_payable(bill.fee_vat_rate, currency), -bill.fee_vat),
        (accounts.revenue_rounding(currency), -bill.rounding),
    )


def legs_authorisation(*, provider: str, currency: str, amount: Decimal) -> list[Leg]:
    held, authorised = accounts.holds(provider, currency)
    return _legs((held, amount), (authorised, -amount))


def legs_capture(
    *, provider: str, payer: LedgerAccount, amount: Decimal, held: Decimal, source: LedgerAccount | None = None
) -> list[Leg]:
    """`amount` taken from what was `held`: the money moves from the payer to the provider's clearing account
    (or out of the driver's wallet, `source`), and the whole hold is released."""
    currency = payer.currency
    hold, authorised = accounts.holds(provider, currency)
    return _legs(
        (source or accounts.clearing(provider, currency), amount),
        (payer, -amount),
        (authorised, held),
        (hold, -held),
    )


def authorisation(payment: Payment, amount_minor: int) -> LedgerEntry:
    return post(
        event="authorisation",
        legs=legs_authorisation(
            provider=payment.provider,
            currency=payment.currency,
            amount=from_minor(amount_minor, payment.currency),
        ),
        memo=f"{payment.provider} authorised",
        reference=f"payment:{payment.pk}",
        idempotency_key=f"payment:{payment.pk}:authorised",
    )


def charge(*, receipt: DriverReceipt, payer: LedgerAccount, cpo_party: str, bill: Bill) -> LedgerEntry | None:
    """The bill; a bill of zero (a free charge) moves no money and posts nothing."""
    legs = legs_charge(bill=bill, payer=payer, cpo_party=cpo_party)
    if not legs:
        return None
    return post(
        event="charge",
        legs=legs,
        memo=f"CDR {receipt.cdr.cdr_id}: CPO cost, our fee and VAT",
        reference=f"cdr:{receipt.cdr_id}",
        idempotency_key=f"cdr:{receipt.cdr_id}:charge",
    )


def capture(payment: Payment, *, payer: LedgerAccount, amount_minor: int, held_minor: int) -> LedgerEntry:
    currency = payment.currency
    source = accounts.driver_wallet(payment.driver_id, currency) if payment.provider == "wallet" else None
    return post(
        event="capture",
        legs=legs_capture(
            provider=payment.provider,
            payer=payer,
            amount=from_minor(amount_minor, currency),
            held=from_minor(held_minor, currency),
            source=source,
        ),
        memo=f"{payment.provider} captured",
        reference=f"payment:{payment.pk}",
        idempotency_key=f"payment:{payment.pk}:capture",
    )


def release(payment: Payment, *, held_minor: int) -> LedgerEntry | None:
    """An authorisation ended with nothing taken (cancelled, expired, or a bill of zero)."""
    if held_minor == 0:
        return None
    held, authorised = accounts.holds(payment.provider, payment.currency)
    amount = from_minor(held_minor, payment.currency)
    return post(
        event="release",
        legs=_legs((authorised, amount), (held, -amount)),
        memo=f"{payment.provider} authorisation released",
        reference=f"payment:{payment.pk}",
        idempotency_key=f"payment:{payment.pk}:release",
    )


def finder_fee(
    *, bap_id: str, currency: str, amount: Decimal, bap_collected: bool, reference: str
) -> LedgerEntry | None:
    """The app's finder fee on a bill: an app that collected keeps it (what it owes us shrinks); else we owe it."""
    if amount == 0:
        return None
    other = accounts.bap_receivable(bap_id, currency) if bap_collected else accounts.bap_payable(bap_id, currency)
    return post(
        event="finder_fee",
        legs=_legs((accounts.finder_fees(currency), amount), (other, -amount)),
        memo=f"finder fee of {bap_id}",
        reference=reference,
        idempotency_key=f"{reference}:finder_fee",
    )


def credit(*, currency: str, amount: Decimal, borne_by: LedgerAccount, reference: str, key: str) -> LedgerEntry:
    """A credit decided for a driver (a CPO's credit CDR, or a dispute credit): `borne_by` (the CPO's payable,
    or our dispute expense) pays it; the driver is owed it until the refund is paid."""
    return post(
        event="credit",
        legs=_legs((borne_by, amount), (accounts.refunds_pending(currency), -amount)),
        memo="credit to the driver",
        reference=reference,
        idempotency_key=key,
    )


def refund(*, currency: str, amount: Decimal, paid_from: LedgerAccount, reference: str, key: str) -> LedgerEntry:
    """A decided credit paid back: from the provider's clearing account (a card refund), into the driver's
    wallet, or off what a collecting app owes us (the app refunds its driver)."""
    return post(
        event="refund",
        legs=_legs((accounts.refunds_pending(currency), amount), (paid_from, -amount)),
        memo="refund paid",
        reference=reference,
        idempotency_key=key,
    )


def wallet_top_up(*, driver_id: int, currency: str, amount: Decimal, source: LedgerAccount, key: str) -> LedgerEntry:
    return post(
        event="wallet_top_up",
        legs=_legs((source, amount), (accounts.driver_wallet(driver_id, currency), -amount)),
        memo="wallet top-up",
        reference=f"driver:{driver_id}",
        idempotency_key=key,
    )


def payout(*, payable: LedgerAccount, amount: Decimal, reference: str, key: str) -> LedgerEntry:
    """We paid a CPO or an app what its payable account holds (or part of it), from our bank."""
    return post(
        event="settlement_payout",
        legs=_legs((payable, amount), (accounts.bank(payable.currency), -amount)),
        memo=f"paid {payable.code}",
        reference=reference,
        idempotency_key=key,
    )


def driver_payout(*, receivable: LedgerAccount, amount: Decimal, reference: str, key: str) -> LedgerEntry:
    """We paid a driver (a bank transfer, UPI) what their receivable holds in credit, or part of it: a refund the
    provider could not make was credited there (billing/finance.py `driver_credits`). The receivable is debited
    back towards zero, the bank credited. The account is locked first, so two payments never both take the same
    credit; more than the credit is refused (ValueError). The key already posted returns its entry if it paid
    the same amount, and is refused for another amount (the bank reference was used for a different payment):
    the ledger compares them (ledger.LedgerKeyReused), the credit is not weighed again for a key posted before."""
    currency = receivable.currency
    if not isinstance(amount, Decimal) or not amount.is_finite() or amount <= 0:
        raise ValueError("a payment to a driver is a positive amount")
    receivable = LedgerAccount.objects.select_for_update().get(pk=receivable.pk)
    to_minor(amount, currency)  # more decimals than the currency has are refused before any comparison
    if not LedgerEntry.objects.filter(idempotency_key=key).exists():
        owed = -balance(receivable)
        if owed <= 0:
            raise ValueError(f"{receivable.code} is not in credit: nothing is owed to the driver in {currency}")
        if amount > owed:
            raise ValueError(f"the driver is owed {owed} {currency} ({receivable.code}): {amount} {currency} is more")
    try:
        return post(
            event="settlement_payout",
            legs=_legs((receivable, amount), (accounts.bank(receivable.currency), -amount)),
            memo=f"paid {receivable.code}",
            reference=reference,
            idempotency_key=key,
        )
    except LedgerKeyReused as reused:
        paid = [minor for account, minor in reused.posted if account.pk == receivable.pk]
        what = f"{from_minor(sum(paid), currency)} {currency}" if paid else f"another payment ({reused.entry.memo})"
        raise ValueError(f"this reference was booked before for {what}, not {amount} {currency}") from reused


def remittance(*, receivable: LedgerAccount, amount: Decimal, reference: str, key: str) -> LedgerEntry:
    """A collecting app (or a provider's payout) paid us: the bank receives, the receivable shrinks."""
    return post(
        event="remittance",
        legs=_legs((accounts.bank(receivable.currency), amount), (receivable, -amount)),
        memo=f"received from {receivable.code}",
        reference=reference,
        idempotency_key=key,
    )
