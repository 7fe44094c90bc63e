"""`manage.py settlement_payment --party cpo:IN*CPA --paid 1234.50 --currency INR --reference UTR-1`: a
settlement payment that left or reached our bank, posted to the ledger once per reference.

- `--party cpo:<CC*PID> --paid X`: we paid a CPO (its payable shrinks);
- `--party bap:<bap_id> --received X`: a collecting app paid us what it owed (its receivable shrinks);
- `--party bap:<bap_id> --paid X`: we paid an app its finder fees (its payable shrinks);
- a reference booked before is told so for the same payment and refused for another amount or account (it
  names one payment; the ledger refuses a key posted before for another entry: ledger.LedgerKeyReused);
- `--party driver:<id> --paid X`: we paid a driver (a bank transfer, UPI) what their account holds in credit,
  a refund their provider could not make (the exceptions queue's "Owed on drivers' accounts"): their receivable
  goes back towards zero. Refused above what the account holds, for a driver owed nothing in the currency, and
  for a reference booked before for another amount (the same amount again is told it was booked before).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from billing.models import LedgerAccount, LedgerEntry
from billing.services import accounts, postings
from billing.services.ledger import LedgerKeyReused, UnbalancedEntry, balance, from_minor
from emsp.models import Driver

# Digits of a driver's id: the idempotency key (120 characters) holds it with an 80-character reference.
DRIVER_ID_DIGITS = 13


class Command(BaseCommand):
    help = (
        "Post a settlement payment to or from a CPO or an app, or to a driver whose account is in credit, once per "
        "--reference."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--party",
            required=True,
            help="cpo:<CC*PID>, bap:<bap_id> or driver:<id> (a driver owed what their account holds in credit)",
        )
        direction = parser.add_mutually_exclusive_group(required=True)
        direction.add_argument("--paid", help="what we paid the party (a driver: at most what they are owed)")
        direction.add_argument("--received", help="what the party paid us (apps only)")
        parser.add_argument("--currency", required=True)
        parser.add_argument("--reference", required=True, help="the bank's reference (UTR, SEPA id): booked once")

    def handle(self, *args: Any, **options: Any) -> None:
        kind, _, who = options["party"].partition(":")
        reference = options["reference"].strip()
        if not who or not who.isprintable() or kind not in ("cpo", "bap", "driver"):
            raise CommandError("--party is cpo:<CC*PID>, bap:<bap_id> or driver:<id>")
        if not reference.isprintable() or not 0 < len(reference) <= 80:
            raise CommandError("--reference is printable text of 1 to 80 characters")
        text = options["paid"] or options["received"]
        try:
            amount = Decimal(text)
        except InvalidOperation:
            raise CommandError(f"{text!r} is not an amount") from None
        if not amount.is_finite() or amount <= 0:
            raise CommandError("the amount is positive")
        currency = options["currency"].strip().upper()
        if kind == "driver":
            self.pay_driver(who, amount=amount, currency=currency, reference=reference, received=options["received"])
            return
        key = f"settlement-payment:{options['party']}:{reference}"
        # The bank's reference names one payment: the same again is told so, another is refused by the ledger (it
        # had been answered with the first payment's entry, silently, and the second payment never booked).
        before = LedgerEntry.objects.filter(idempotency_key=key).exists()
        try:
            with transaction.atomic():
                if kind == "cpo":
                    if options["received"]:
                        raise CommandError("a CPO is paid (--paid), it doesn't pay us here")
                    account = accounts.cpo_payable(who, currency)
                    postings.payout(payable=account, amount=amount, reference=options["party"], key=key)
                elif options["received"]:
                    account = accounts.bap_receivable(who, currency)
                    postings.remittance(receivable=account, amount=amount, reference=options["party"], key=key)
                else:
                    account = accounts.bap_payable(who, currency)
                    postings.payout(payable=account, amount=amount, reference=options["party"], key=key)
        except LedgerKeyReused as reused:
            raise CommandError(booked_before(reference, reused, amount)) from reused
        except (UnbalancedEntry, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        if before:
            self.stdout.write(f"{reference}: booked before, nothing posted now")
        self.stdout.write(f"{account.code} {currency}: balance now {balance(account)}")

    def pay_driver(self, who: str, *, amount: Decimal, currency: str, reference: str, received: str | None) -> None:
        """We paid a driver what their receivable holds in credit (or part of it): postings.driver_payout."""
        if received:
            raise CommandError("a driver is paid (--paid) here, what they pay us is a charge or a wallet top-up")
        if not (who.isascii() and who.isdigit() and len(who) <= DRIVER_ID_DIGITS):
            raise CommandError(f"no driver {who!r}: driver:<id> names a driver by their id")
        driver_id = int(who)
        if not Driver.objects.filter(pk=driver_id).exists():
            raise CommandError(f"no driver {driver_id}")
        code = f"driver:{driver_id}:receivable"
        receivable = LedgerAccount.objects.filter(code=code, currency=currency).first()
        if receivable is None:
            held = sorted(LedgerAccount.objects.filter(code=code).values_list("currency", flat=True))
            raise CommandError(
                f"driver {driver_id} has no account in {currency}"
                + (f": theirs is in {', '.join(held)}" if held else ": nothing is owed to them")
            )
        key = f"settlement-payment:driver:{driver_id}:{reference}"
        try:
            with transaction.atomic():
                # The driver's row, as a new bill takes the account's credit under it (payments._bill_again): the
                # credit is paid out or billed against, never both.
                list(Driver.objects.select_for_update().filter(pk=driver_id).values_list("pk", flat=True))
                before = LedgerEntry.objects.filter(idempotency_key=key).exists()
                postings.driver_payout(receivable=receivable, amount=amount, reference=f"driver:{driver_id}", key=key)
        except (UnbalancedEntry, ValueError) as exc:
            raise CommandError(f"driver {driver_id}: {exc}") from exc
        owed = -balance(receivable)
        if before:
            self.stdout.write(f"{reference}: booked before, nothing posted now")
        self.stdout.write(f"driver {driver_id} {currency}: owed {owed} on their account ({code})")


def booked_before(reference: str, reused: LedgerKeyReused, amount: Decimal) -> str:
    """Why a payment under a reference booked before is refused: another amount, or the same amount to or from
    another account (an app's remittance under the reference of a payout to it)."""
    moved = max((abs(minor) for _, minor in reused.posted), default=0)
    first = from_minor(moved, reused.posted[0][0].currency) if moved else Decimal(0)
    if first != amount:
        return f"{reference}: booked before for {first}, not {amount} (one payment a reference)"
    what = reused.entry.memo or reused.entry.event
    return f"{reference}: booked before for another payment ({what}), not this one (one payment a reference)"
