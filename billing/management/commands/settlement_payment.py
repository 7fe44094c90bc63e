"""`manage.py settlement_payment --party cpo:IN*CPA --paid 1234.50 --currency INR --reference UTR-1`: a
settlement payment that left or reached our bank, posted to the ledger once per reference.

- `--party cpo:<CC*PID> --paid X`: we paid a CPO (its payable shrinks);
- `--party bap:<bap_id> --received X`: a collecting app paid us what it owed (its receivable shrinks);
- `--party bap:<bap_id> --paid X`: we paid an app its finder fees (its payable shrinks).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from billing.services import accounts, postings
from billing.services.ledger import UnbalancedEntry, balance


class Command(BaseCommand):
    help = "Post a settlement payment to or from a CPO or an app, once per --reference."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--party", required=True, help="cpo:<CC*PID> or bap:<bap_id>")
        direction = parser.add_mutually_exclusive_group(required=True)
        direction.add_argument("--paid", help="what we paid the party")
        direction.add_argument("--received", help="what the party paid us (apps only)")
        parser.add_argument("--currency", required=True)
        parser.add_argument("--reference", required=True, help="the bank's reference (UTR, SEPA id): booked once")

    def handle(self, *args: Any, **options: Any) -> None:
        kind, _, who = options["party"].partition(":")
        reference = options["reference"].strip()
        if not who or not who.isprintable() or kind not in ("cpo", "bap"):
            raise CommandError("--party is cpo:<CC*PID> or bap:<bap_id>")
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
        key = f"settlement-payment:{options['party']}:{reference}"
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
        except (UnbalancedEntry, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"{account.code} {currency}: balance now {balance(account)}")
