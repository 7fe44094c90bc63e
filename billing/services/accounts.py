"""The chart of accounts: which ledger account holds whose money (issue 12). Every posting names its accounts
through these functions, so a code is spelt one way everywhere (the console, reports and reconciliation read
the same codes).

Signs: a line debits (+) or credits (−). An ASSET's balance is normally a debit (positive), a LIABILITY's and a
REVENUE's a credit (negative).

| code                          | kind      | holds                                                          |
|-------------------------------|-----------|----------------------------------------------------------------|
| driver:<id>:receivable        | ASSET     | what a driver owes us for charges we collect                    |
| driver:<id>:wallet            | LIABILITY | a prepaid driver's balance, held for them                       |
| bap:<bap_id>:receivable       | ASSET     | what a collecting app (BAP) owes us: bills less its finder fee  |
| bap:<bap_id>:payable          | LIABILITY | finder fees we owe an app for charges we collected              |
| cpo:<CC*PID>:payable          | LIABILITY | what we owe a CPO (its CDR totals incl. its VAT, less credits)  |
| revenue:fees                  | REVENUE   | our fee, excl. VAT                                              |
| revenue:rounding              | REVENUE   | the currency rounding of a driver's total                       |
| tax:VAT-<rate>:payable        | LIABILITY | VAT on our fee, per rate, owed to the tax authority             |
| expense:finder-fees           | EXPENSE   | apps' finder fees                                               |
| expense:disputes              | EXPENSE   | credits we grant drivers and bear ourselves                     |
| expense:provider-fees         | EXPENSE   | what payment providers keep of a payout                         |
| refunds:pending               | LIABILITY | refunds decided and not yet paid back to the driver             |
| clearing:<provider>           | ASSET     | money captured at a payment provider, not yet paid out to us   |
| holds:<provider>              | ASSET     | authorised amounts held at a provider (memo pair, nets to zero  |
| holds:<provider>:authorised   | LIABILITY |   with the next line; captured or released, both go back to 0)  |
| bank:operating                | ASSET     | our bank account: provider payouts in, CPO/app payouts out      |
"""

from __future__ import annotations

from decimal import Decimal

from billing.models import LedgerAccount
from billing.services.ledger import account

ASSET = LedgerAccount.Kind.ASSET
LIABILITY = LedgerAccount.Kind.LIABILITY
REVENUE = LedgerAccount.Kind.REVENUE
EXPENSE = LedgerAccount.Kind.EXPENSE


def driver_receivable(driver_id: int, currency: str) -> LedgerAccount:
    return account(f"driver:{driver_id}:receivable", currency, ASSET, f"Driver {driver_id}: receivable")


def driver_wallet(driver_id: int, currency: str) -> LedgerAccount:
    return account(f"driver:{driver_id}:wallet", currency, LIABILITY, f"Driver {driver_id}: prepaid wallet")


def bap_receivable(bap_id: str, currency: str) -> LedgerAccount:
    return account(f"bap:{bap_id}:receivable", currency, ASSET, f"App {bap_id}: collections due to us")


def bap_payable(bap_id: str, currency: str) -> LedgerAccount:
    return account(f"bap:{bap_id}:payable", currency, LIABILITY, f"App {bap_id}: finder fees due")


def cpo_payable(party: str, currency: str) -> LedgerAccount:
    """`party` is the CPO's `CC*PID` (e.g. `IN*CPA`), upper case: the party of its CDRs."""
    return account(f"cpo:{party.upper()}:payable", currency, LIABILITY, f"CPO {party.upper()}: payable")


def revenue_fees(currency: str) -> LedgerAccount:
    return account("revenue:fees", currency, REVENUE, "Our fees (excl. VAT)")


def revenue_rounding(currency: str) -> LedgerAccount:
    return account("revenue:rounding", currency, REVENUE, "Currency rounding of drivers' totals")


def tax_payable(rate_percent: Decimal, currency: str) -> LedgerAccount:
    rate = format(rate_percent.normalize(), "f")
    return account(f"tax:VAT-{rate}:payable", currency, LIABILITY, f"VAT {rate}% on our fees")


def finder_fees(currency: str) -> LedgerAccount:
    return account("expense:finder-fees", currency, EXPENSE, "Apps' finder fees")


def dispute_expense(currency: str) -> LedgerAccount:
    return account("expense:disputes", currency, EXPENSE, "Credits to drivers we bear")


def provider_fees(currency: str) -> LedgerAccount:
    return account("expense:provider-fees", currency, EXPENSE, "Payment providers' fees")


def refunds_pending(currency: str) -> LedgerAccount:
    return account("refunds:pending", currency, LIABILITY, "Refunds decided, not yet paid back")


def clearing(provider: str, currency: str) -> LedgerAccount:
    return account(f"clearing:{provider}", currency, ASSET, f"{provider}: captured, not yet paid out")


def holds(provider: str, currency: str) -> tuple[LedgerAccount, LedgerAccount]:
    """The memo pair of authorisations at `provider` (or `wallet`): debit the first, credit the second."""
    return (
        account(f"holds:{provider}", currency, ASSET, f"{provider}: authorised, held"),
        account(f"holds:{provider}:authorised", currency, LIABILITY, f"{provider}: authorisations outstanding"),
    )


def bank(currency: str) -> LedgerAccount:
    return account("bank:operating", currency, ASSET, "Our bank account")
