"""`manage.py wallet_top_up --driver ID --amount 500 --reference BANK-TXN-1`: money a prepaid driver paid us
(a bank transfer, a counter payment) reaches their wallet as a posted ledger entry, once per reference."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing.services import payments
from emsp.models import Driver


class Command(BaseCommand):
    help = "Top up a prepaid driver's wallet (posted to the ledger once per --reference)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--driver", type=int, required=True, help="the driver's id")
        parser.add_argument("--amount", required=True, help="in the driver's currency, e.g. 500.00")
        parser.add_argument("--reference", required=True, help="the payment's own reference: a top-up is booked once")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            amount = Decimal(options["amount"])
        except InvalidOperation:
            raise CommandError(f"--amount {options['amount']!r} is not a number") from None
        driver = Driver.objects.filter(pk=options["driver"]).first()
        if driver is None:
            raise CommandError(f"no driver {options['driver']}")
        if driver.wallet_balance is None:
            raise CommandError(f"{driver} is post-paid: no wallet to top up")
        reference = options["reference"].strip()
        if not reference.isprintable() or not 0 < len(reference) <= 80:
            raise CommandError("--reference is printable text of 1 to 80 characters")
        try:
            balance = payments.wallet_top_up(driver=driver, amount=amount, key=f"top-up:{driver.pk}:{reference}")
        except (payments.PaymentRefused, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"{driver}: wallet {balance} {driver.currency}")
