"""Billing records: the CPOs' tariffs and CDRs as received (audit, disputes and settlement build on these)."""

from __future__ import annotations

import secrets
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models.functions import Upper
from django.utils import timezone

from billing.money import DEFAULT_POLICY, ROUNDING_POLICIES
from emsp.models import ChargingSession, Partner


class TariffQuerySet(models.QuerySet):
    def select_for_update(self, *args: Any, **kwargs: Any) -> TariffQuerySet:
        """Tariff rows are locked only after the tariff generation's lock (billing/tariff_cache.py), taken here:
        code that locks tariffs can't deadlock with tariff_put or with a statement on the table, whose trigger
        takes the generation's lock first. Call it inside the transaction that locks the rows."""
        from billing import tariff_cache

        tariff_cache.bump()
        return super().select_for_update(*args, **kwargs)


class Tariff(models.Model):
    """An OCPI Tariff (mod_tariffs) of a CPO. Deleted when the CPO DELETEs it; CDRs carry their own copy."""

    partner = models.ForeignKey(Partner, on_delete=models.CASCADE, related_name="tariffs")
    country_code = models.CharField(max_length=2)
    party_id = models.CharField(max_length=3)
    tariff_id = models.CharField(max_length=36)
    ocpi_key = models.CharField(max_length=48, unique=True)
    currency = models.CharField(max_length=3)
    type = models.CharField(max_length=16, blank=True)
    tax_included = models.CharField(
        max_length=3,
        blank=True,
        choices=[("YES", "YES"), ("NO", "NO"), ("N/A", "N/A")],
        help_text="OCPI 2.3.0 TaxIncluded: whether the prices include taxes. Blank for a 2.1.1/2.2.1 tariff, whose "
        "prices are excl. VAT (as NO).",
    )
    start_date_time = models.DateTimeField(null=True, blank=True)
    end_date_time = models.DateTimeField(null=True, blank=True)
    last_updated = models.DateTimeField(db_index=True)
    data = models.JSONField()
    received_at = models.DateTimeField(default=timezone.now)

    objects = TariffQuerySet.as_manager()

    class Meta:
        indexes = [
            # A party's tariffs, in any case: moved with it when it changes connection
            # (emsp/services/partners.py::party_objects_moved).
            models.Index(Upper("country_code"), Upper("party_id"), name="tariff_party_any_case"),
        ]

    def __str__(self) -> str:
        return f"{self.tariff_id} ({self.country_code}*{self.party_id})"


class Cdr(models.Model):
    """A Charge Detail Record (mod_cdrs): immutable once received; corrections arrive as credit CDRs."""

    partner = models.ForeignKey(Partner, on_delete=models.CASCADE, related_name="cdrs")
    country_code = models.CharField(max_length=2)
    party_id = models.CharField(max_length=3)
    cdr_id = models.CharField(max_length=39)
    ocpi_key = models.CharField(max_length=51, unique=True)
    session_id = models.CharField(max_length=36, blank=True, db_index=True)
    charging_session = models.ForeignKey(
        ChargingSession, null=True, blank=True, on_delete=models.SET_NULL, related_name="cdrs"
    )
    start_date_time = models.DateTimeField()
    end_date_time = models.DateTimeField(db_index=True)
    currency = models.CharField(max_length=3)
    total_cost_excl_vat = models.DecimalField(max_digits=14, decimal_places=4)
    total_cost_incl_vat = models.DecimalField(max_digits=14, decimal_places=4, null=True, blank=True)
    total_cost_taxes = models.JSONField(
        default=list,
        blank=True,
        help_text="OCPI 2.3.0 total_cost.taxes as the CPO stated them ({name, percentage?, amount}); empty when it "
        "listed none (2.1.1 and 2.2.1 state no taxes, only incl_vat).",
    )
    total_energy = models.DecimalField(max_digits=14, decimal_places=4, default=Decimal("0"))
    total_time = models.DecimalField(max_digits=12, decimal_places=4, default=Decimal("0"))
    total_parking_time = models.DecimalField(max_digits=12, decimal_places=4, null=True, blank=True)
    location_id = models.CharField(max_length=39, blank=True)
    evse_uid = models.CharField(max_length=39, blank=True)
    token_uid = models.CharField(max_length=36, blank=True)
    credit = models.BooleanField(default=False)
    credit_reference_id = models.CharField(max_length=39, blank=True)
    credited_cdr = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="credits",
        help_text="For a credit CDR: the CDR it corrects.",
    )
    last_updated = models.DateTimeField(db_index=True)
    data = models.JSONField()
    received_at = models.DateTimeField(default=timezone.now, db_index=True)
    carried_to = models.DateField(
        null=True, blank=True, help_text="Settled in the period starting here: still in review when its own closed"
    )
    # Audit and receipt run once (billing/services/audit.py): a worker claims the CDR, and the transaction that
    # stores the audit, the receipt and the booking's settlement sets processed_at.
    claimed_at = models.DateTimeField(null=True, blank=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "CDR"
        indexes = [
            models.Index(fields=["partner", "end_date_time"], name="cdr_partner_end"),
            models.Index(fields=["received_at"], condition=models.Q(processed_at__isnull=True), name="cdr_unprocessed"),
        ]

    def __str__(self) -> str:
        return self.cdr_id


class PartnerTerms(models.Model):
    """Commercial terms with one CPO: how closely we audit its CDRs and what we add for drivers."""

    partner = models.OneToOneField(Partner, on_delete=models.CASCADE, related_name="terms")
    audit_tolerance = models.DecimalField(
        max_digits=10, decimal_places=4, default=Decimal("0.01"), help_text="In the CDR currency, per total."
    )
    fee_flat = models.DecimalField(
        max_digits=10, decimal_places=4, default=Decimal("0"), help_text="Our fee per session, excl. VAT."
    )
    fee_percent = models.DecimalField(
        max_digits=6, decimal_places=3, default=Decimal("0"), help_text="Our markup on the CPO cost excl. VAT, in %."
    )
    fee_vat_percent = models.DecimalField(max_digits=5, decimal_places=2, default=Decimal("18"))
    rounding = models.CharField(
        max_length=10,
        default=DEFAULT_POLICY,
        choices=[(p, p) for p in ROUNDING_POLICIES],
        help_text="How amounts are rounded for drivers and reports (OCPI leaves rounding to contracts).",
    )

    class Meta:
        verbose_name = "partner terms"
        verbose_name_plural = "partner terms"

    def __str__(self) -> str:
        return f"Terms with {self.partner}"


class CdrAudit(models.Model):
    """Our repricing of one CDR and how it compares with the CPO's totals."""

    class Status(models.TextChoices):
        MATCHED = "MATCHED", "Matches our price"
        MISMATCH = "MISMATCH", "Differs beyond the tolerance (dispute opened)"
        REVIEW = "REVIEW", "Needs review (unknown session, tariff or location)"
        UNPRICEABLE = "UNPRICEABLE", "Could not be priced (malformed tariff or periods)"
        CREDIT = "CREDIT", "Credit CDR (nets against the original)"

    cdr = models.OneToOneField(Cdr, on_delete=models.CASCADE, related_name="audit")
    status = models.CharField(max_length=12, choices=Status.choices, db_index=True)
    currency = models.CharField(max_length=3)
    computed_excl_vat = models.DecimalField(max_digits=14, decimal_places=4, null=True, blank=True)
    computed_incl_vat = models.DecimalField(max_digits=14, decimal_places=4, null=True, blank=True)
    difference_excl_vat = models.DecimalField(
        max_digits=14, decimal_places=4, null=True, blank=True, help_text="CPO total minus ours."
    )
    cpo_breakdown = models.JSONField(default=dict)
    our_breakdown = models.JSONField(default=dict)
    flags = models.JSONField(default=list, help_text="e.g. no_session, no_tariff, unknown_location")
    time_zone = models.CharField(max_length=64, blank=True)
    error = models.TextField(blank=True)
    audited_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"Audit of {self.cdr} ({self.status})"


class Dispute(models.Model):
    """A CDR whose amount we do not agree with, worked by staff until it is settled."""

    class State(models.TextChoices):
        OPEN = "OPEN"
        CONTESTED = "CONTESTED", "Contested with the CPO"
        ACCEPTED = "ACCEPTED", "CPO amount accepted"
        CREDITED = "CREDITED", "Resolved with a credit"

    OPEN_STATES = (State.OPEN, State.CONTESTED)

    cdr = models.ForeignKey(Cdr, on_delete=models.CASCADE, related_name="disputes")
    partner = models.ForeignKey(Partner, on_delete=models.CASCADE, related_name="disputes")
    state = models.CharField(max_length=10, choices=State.choices, default=State.OPEN, db_index=True)
    currency = models.CharField(max_length=3)
    cpo_amount = models.DecimalField(max_digits=14, decimal_places=4, help_text="CPO total excl. VAT")
    our_amount = models.DecimalField(max_digits=14, decimal_places=4, help_text="Our total excl. VAT")
    difference = models.DecimalField(max_digits=14, decimal_places=4, help_text="CPO minus ours, excl. VAT")
    credit_amount = models.DecimalField(
        max_digits=14, decimal_places=4, null=True, blank=True, help_text="Credit agreed, excl. VAT"
    )
    opened_at = models.DateTimeField(default=timezone.now, db_index=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["cdr"], condition=models.Q(state__in=["OPEN", "CONTESTED"]), name="dispute_one_open_per_cdr"
            )
        ]

    def __str__(self) -> str:
        return f"Dispute on {self.cdr} ({self.state})"

    @property
    def amount_at_stake(self) -> Decimal:
        return abs(self.difference)


class DisputeEvent(models.Model):
    """Who changed a dispute, when, and why."""

    dispute = models.ForeignKey(Dispute, on_delete=models.CASCADE, related_name="events")
    at = models.DateTimeField(default=timezone.now)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    action = models.CharField(max_length=40)
    from_state = models.CharField(max_length=10, blank=True)
    to_state = models.CharField(max_length=10)
    note = models.TextField(blank=True)

    class Meta:
        ordering = ["at", "pk"]

    def __str__(self) -> str:
        return f"{self.action} by {self.user or 'system'} at {self.at:%Y-%m-%d %H:%M}"


class Quote(models.Model):
    """A price we offered a driver for a planned charge, with its line items."""

    driver = models.ForeignKey("emsp.Driver", null=True, blank=True, on_delete=models.SET_NULL)
    evse = models.ForeignKey("emsp.Evse", on_delete=models.CASCADE, related_name="quotes")
    connector_id = models.CharField(max_length=36)
    tariff_id = models.CharField(max_length=36, blank=True)
    tariff_snapshot = models.JSONField(default=dict)
    currency = models.CharField(max_length=3)
    arrival_at = models.DateTimeField()
    energy_kwh = models.DecimalField(max_digits=10, decimal_places=4, null=True, blank=True)
    duration_minutes = models.PositiveIntegerField(null=True, blank=True)
    parking_minutes = models.PositiveIntegerField(default=0)
    cpo_cost_excl_vat = models.DecimalField(max_digits=14, decimal_places=4)
    cpo_cost_incl_vat = models.DecimalField(max_digits=14, decimal_places=4, null=True, blank=True)
    fee_excl_vat = models.DecimalField(max_digits=14, decimal_places=4)
    fee_vat = models.DecimalField(max_digits=14, decimal_places=4)
    total_incl_vat = models.DecimalField(max_digits=14, decimal_places=4, null=True, blank=True)
    breakdown = models.JSONField(default=dict)
    valid_until = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"Quote {self.pk} {self.total_incl_vat} {self.currency}"

    @property
    def price(self) -> Decimal:
        """What the driver is asked to pay; without VAT figures (a CPO tariff with no VAT given), its parts
        excl. VAT."""
        if self.total_incl_vat is not None:
            return self.total_incl_vat
        # The CPO states no VAT: its price counts as it is, as on the final bill (DriverReceipt), and our fee
        # carries its VAT in both.
        return self.cpo_cost_excl_vat + self.fee_excl_vat + self.fee_vat


class DriverReceipt(models.Model):
    """What a driver pays for one completed charge: CPO cost, our fee, VAT, total, next to the quote."""

    cdr = models.OneToOneField(Cdr, on_delete=models.CASCADE, related_name="receipt")
    driver = models.ForeignKey("emsp.Driver", null=True, blank=True, on_delete=models.SET_NULL, related_name="receipts")
    quote = models.ForeignKey(Quote, null=True, blank=True, on_delete=models.SET_NULL, related_name="receipts")
    currency = models.CharField(max_length=3)
    energy_kwh = models.DecimalField(max_digits=14, decimal_places=4)
    cpo_cost_excl_vat = models.DecimalField(max_digits=14, decimal_places=4)
    cpo_vat = models.DecimalField(max_digits=14, decimal_places=4)
    fee_excl_vat = models.DecimalField(max_digits=14, decimal_places=4)
    fee_vat = models.DecimalField(max_digits=14, decimal_places=4)
    total_incl_vat = models.DecimalField(max_digits=14, decimal_places=4, help_text="Rounded for the currency")
    quoted_total_incl_vat = models.DecimalField(max_digits=14, decimal_places=4, null=True, blank=True)
    breakdown = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)
    # Set in the transaction that stores its numbered document (billing/services/documents.py). The beat's sweep
    # issues what is still without one after a grace period: a task lost with a worker killed between the CDR's
    # commit and the queue, or a queue that was down.
    issued = models.BooleanField(default=False)
    # The sweep's tries (billing/services/documents.py): each queues the receipt again and puts the next one off
    # twice as long as the one before (a minute, two, four, up to a day), so a receipt whose issue keeps failing
    # neither holds the others back nor comes round every minute. Database defaults: processes of the release
    # before insert receipts without them during a rolling upgrade.
    sweeps = models.PositiveSmallIntegerField(default=0, db_default=0)
    next_sweep_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["created_at"], name="driverreceipt_unissued", condition=models.Q(issued=False))]

    def __str__(self) -> str:
        return f"Receipt for {self.cdr} {self.total_incl_vat} {self.currency}"


class Settlement(models.Model):
    """One CPO's period (a month by default), as finance reconciles and closes it."""

    class State(models.TextChoices):
        OPEN = "OPEN", "Open"
        RECONCILED = "RECONCILED", "Reconciled (no open disputes)"
        CLOSED = "CLOSED", "Closed"

    partner = models.ForeignKey(Partner, on_delete=models.CASCADE, related_name="settlements")
    period_start = models.DateField()
    period_end = models.DateField(help_text="Exclusive")
    currency = models.CharField(max_length=3)
    state = models.CharField(max_length=10, choices=State.choices, default=State.OPEN)
    cdr_count = models.PositiveIntegerField(default=0)
    energy_kwh = models.DecimalField(max_digits=16, decimal_places=4, default=Decimal("0"))
    cpo_billed_excl_vat = models.DecimalField(max_digits=16, decimal_places=4, default=Decimal("0"))
    cpo_billed_incl_vat = models.DecimalField(max_digits=16, decimal_places=4, default=Decimal("0"))
    computed_excl_vat = models.DecimalField(max_digits=16, decimal_places=4, default=Decimal("0"))
    disputed_excl_vat = models.DecimalField(max_digits=16, decimal_places=4, default=Decimal("0"))
    charged_to_drivers = models.DecimalField(max_digits=16, decimal_places=4, default=Decimal("0"))
    margin_excl_vat = models.DecimalField(max_digits=16, decimal_places=4, default=Decimal("0"))
    vat_collected = models.DecimalField(max_digits=16, decimal_places=4, default=Decimal("0"))
    open_disputes = models.PositiveIntegerField(default=0)
    ledger_payable = models.DecimalField(
        max_digits=16,
        decimal_places=4,
        default=Decimal("0"),
        help_text=(
            "Booked to the CPO's payable for the period's CDRs and their disputes (ledger), whenever posted: CDR "
            "totals less credits"
        ),
    )
    carried_over = models.PositiveIntegerField(default=0, help_text="CDRs still in review moved to the next period")
    computed_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    closed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["partner", "period_start", "currency"], name="settlement_unique_period")
        ]
        permissions = [("export_settlement", "Can export settlement reports")]

    def __str__(self) -> str:
        return f"{self.partner} {self.period_start:%Y-%m} {self.currency}"


# --- the ledger (issue 12): double entry, in minor units, immutable ----------------------------------------


class LedgerAccount(models.Model):
    """One account of the ledger, in one currency. `code` names whose it is and what for, e.g.
    `cpo:IN*CPA:payable`, `driver:42:receivable`, `revenue:fees`, `tax:GST-18`, `clearing:razorpay`."""

    class Kind(models.TextChoices):
        ASSET = "ASSET", "Asset"  # what is owed to us or held for us (receivables, provider clearing)
        LIABILITY = "LIABILITY", "Liability"  # what we owe (CPO payables, tax payable, wallets)
        REVENUE = "REVENUE", "Revenue"
        EXPENSE = "EXPENSE", "Expense"
        EQUITY = "EQUITY", "Equity"

    code = models.CharField(max_length=120)
    currency = models.CharField(max_length=3)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    name = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["code", "currency"], name="ledgeraccount_once")]

    def __str__(self) -> str:
        return f"{self.code} ({self.currency})"


class LedgerEntry(models.Model):
    """One balanced posting: its lines add up to zero (a database trigger checks it on PostgreSQL). Never
    changed or deleted: a correction is a new entry that `reverses` this one."""

    posted_at = models.DateTimeField(default=timezone.now, db_index=True)
    event = models.CharField(max_length=40, help_text="What happened: capture, cdr_cost, fee, refund, …")
    memo = models.CharField(max_length=200, blank=True)
    reference = models.CharField(max_length=120, blank=True, help_text="e.g. cdr:123, booking:9")
    idempotency_key = models.CharField(max_length=120, null=True, blank=True)  # noqa: DJ001 - NULLs never collide
    reverses = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="reversals", db_index=False
    )

    class Meta:
        verbose_name_plural = "ledger entries"
        # Declared here rather than with db_index/unique on the fields: PostgreSQL then gets one index each, not
        # also the `LIKE` twin no query of ours uses; and no index on `reverses` (rare, looked up by entry).
        # Every index is paid on each of the thousands of entries a second (docs/benchmarks.md).
        indexes = [models.Index(fields=["reference"], name="ledgerentry_reference")]
        constraints = [models.UniqueConstraint(fields=["idempotency_key"], name="ledgerentry_idempotency_key_once")]

    def __str__(self) -> str:
        return f"#{self.pk} {self.event} {self.posted_at:%Y-%m-%d %H:%M}"


class LedgerLine(models.Model):
    """One side of an entry: debit positive, credit negative, in the account currency's minor units."""

    entry = models.ForeignKey(LedgerEntry, on_delete=models.PROTECT, related_name="lines")
    account = models.ForeignKey(LedgerAccount, on_delete=models.PROTECT, related_name="lines")
    amount_minor = models.BigIntegerField()

    class Meta:
        constraints = [models.CheckConstraint(condition=~models.Q(amount_minor=0), name="ledgerline_not_zero")]

    def __str__(self) -> str:
        return f"{self.account} {self.amount_minor:+d}"

    def save(self, *args: object, **kwargs: object) -> None:
        if self.pk is not None:
            raise ValueError("ledger lines are immutable: post a correcting entry")
        super().save(*args, **kwargs)  # type: ignore[arg-type]

    def delete(self, *args: object, **kwargs: object) -> tuple[int, dict[str, int]]:
        raise ValueError("ledger lines are immutable: post a correcting entry")


# --- payments (issue 12): what a driver or an app pays, through which provider ------------------------------


def new_payment_key() -> str:
    """Random, so no two payments share a key at a provider, even across databases (a restore, a staging copy
    on the same provider account)."""
    return secrets.token_hex(16)


class Payment(models.Model):
    """The money of one booking: who collects it (the BAP, or we through a provider or the driver's wallet),
    when, and what has been authorised, captured and refunded so far. Amounts in the currency's minor units.
    Every change of the amounts posts ledger entries in the same transaction (billing/services/payments.py)."""

    class CollectedBy(models.TextChoices):
        BAP = "BAP", "The consumer app (BAP)"
        BPP = "BPP", "Us (BPP)"

    class Type(models.TextChoices):
        PRE_ORDER = "PRE-ORDER", "Before the order"
        ON_FULFILLMENT = "ON-FULFILLMENT", "At the charge"
        POST_FULFILLMENT = "POST-FULFILLMENT", "After the charge"

    class Status(models.TextChoices):
        PENDING = "PENDING", "Waiting for the driver to pay"
        AUTHORISED = "AUTHORISED", "Authorised (held)"
        CAPTURED = "CAPTURED", "Captured"
        PARTIALLY_REFUNDED = "PART-REFUND", "Partly refunded"
        REFUNDED = "REFUNDED", "Refunded"
        RELEASED = "RELEASED", "Released (nothing taken)"
        FAILED = "FAILED", "Failed"
        COLLECTED_BY_BAP = "BAP-PAID", "Paid to the BAP"

    key = models.CharField(
        max_length=32,
        unique=True,
        default=new_payment_key,
        editable=False,
        help_text="Ours at the provider: in its reference and in every idempotency key we send it",
    )
    booking = models.ForeignKey(
        "emsp.Booking", null=True, blank=True, on_delete=models.PROTECT, related_name="payments"
    )
    purpose = models.CharField(
        max_length=10, default="charge", help_text="charge (the booking's), balance (a bill above the hold), top-up"
    )
    driver = models.ForeignKey("emsp.Driver", null=True, blank=True, on_delete=models.SET_NULL, related_name="payments")
    bap_id = models.CharField(max_length=255, blank=True, db_index=True)
    journey = models.CharField(
        max_length=300, blank=True, db_index=True, help_text="The Beckn transaction (bap_id|transaction_id) it is of"
    )
    collected_by = models.CharField(max_length=3, choices=CollectedBy.choices, default=CollectedBy.BPP)
    type = models.CharField(max_length=16, choices=Type.choices, default=Type.PRE_ORDER)
    provider = models.CharField(max_length=20, help_text="razorpay, stripe, wallet or bap")
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING, db_index=True)
    requested_minor = models.BigIntegerField(default=0, help_text="What the hosted page asks the driver to authorise")
    authorised_minor = models.BigIntegerField(default=0)
    captured_minor = models.BigIntegerField(default=0)
    refunded_minor = models.BigIntegerField(default=0)
    billed_minor = models.BigIntegerField(null=True, blank=True, help_text="The final bill, once the CDR is in")
    checkout_id = models.CharField(max_length=100, blank=True, db_index=True, help_text="Provider's checkout/order id")
    provider_payment_id = models.CharField(max_length=100, blank=True, db_index=True)
    url = models.URLField(max_length=500, blank=True, help_text="The hosted payment page for the driver")
    bap_transaction_id = models.CharField(max_length=100, blank=True, help_text="As the BAP reported it")
    failure = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(authorised_minor__gte=0, captured_minor__gte=0, refunded_minor__gte=0),
                name="payment_amounts_not_negative",
            ),
            models.CheckConstraint(
                condition=models.Q(refunded_minor__lte=models.F("captured_minor")), name="payment_refund_le_capture"
            ),
        ]

    def __str__(self) -> str:
        return f"Payment {self.pk} {self.provider} {self.status}"


class PaymentOperation(models.Model):
    """One call to a provider (authorise, capture, release, refund), written PENDING before the call with the
    idempotency key sent to the provider, then SUCCEEDED/FAILED: a crash between the two retries the same key
    (the provider answers the first result) and never takes money twice."""

    class Kind(models.TextChoices):
        AUTHORISE = "authorise"
        CAPTURE = "capture"
        RELEASE = "release"
        REFUND = "refund"

    class Status(models.TextChoices):
        PENDING = "PENDING"
        SUCCEEDED = "SUCCEEDED"
        FAILED = "FAILED"

    payment = models.ForeignKey(Payment, on_delete=models.PROTECT, related_name="operations")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    amount_minor = models.BigIntegerField()
    idempotency_key = models.CharField(max_length=120, unique=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True)
    provider_reference = models.CharField(max_length=100, blank=True)
    error = models.CharField(max_length=500, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.kind} {self.amount_minor} {self.status}"


class ProviderWebhook(models.Model):
    """A provider's webhook, kept once per event id: a replay of the same event is refused."""

    provider = models.CharField(max_length=20)
    event_id = models.CharField(max_length=100)
    type = models.CharField(max_length=100)
    payload = models.JSONField()
    received_at = models.DateTimeField(default=timezone.now)
    processed_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=300, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["provider", "event_id"], name="providerwebhook_once")]

    def __str__(self) -> str:
        return f"{self.provider} {self.type} {self.event_id}"


class BapAgreement(models.Model):
    """What we agreed with one consumer app (BAP): who collects, the settlement window and basis, its finder
    fee. Offered as payment terms in on_select/on_init; a BAP without a row gets the defaults."""

    class Basis(models.TextChoices):
        DELIVERY = "delivery", "After the charge (CDR)"
        INVOICE_RECEIPT = "invoice_receipt", "After the invoice"

    bap_id = models.CharField(max_length=255, unique=True)
    legal_name = models.CharField(max_length=200, blank=True)
    collects = models.BooleanField(default=False, help_text="The BAP collects from drivers and settles with us")
    finder_fee_percent = models.DecimalField(
        max_digits=5, decimal_places=2, default=Decimal("0"), help_text="Of the driver's total incl. VAT"
    )
    settlement_window = models.CharField(max_length=20, default="P7D", help_text="ISO 8601 duration")
    settlement_basis = models.CharField(max_length=20, choices=Basis.choices, default=Basis.DELIVERY)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.legal_name or self.bap_id


class DocumentSequence(models.Model):
    """The last number given to one kind of document of one legal entity in one year: receipts and
    statements are numbered without gaps (taken under a row lock)."""

    entity = models.CharField(max_length=40)
    kind = models.CharField(max_length=20)
    year = models.PositiveIntegerField()
    last = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["entity", "kind", "year"], name="documentsequence_once")]

    def __str__(self) -> str:
        return f"{self.entity} {self.kind} {self.year}: {self.last}"


class IssuedDocument(models.Model):
    """A numbered PDF we issued (driver receipt, BAP statement, CPO statement, credit note): kept as issued."""

    class Kind(models.TextChoices):
        RECEIPT = "RECEIPT", "Driver receipt"
        CREDIT_NOTE = "CREDIT", "Credit note"
        BAP_STATEMENT = "BAP-STMT", "BAP statement"
        CPO_STATEMENT = "CPO-STMT", "CPO statement"

    entity = models.CharField(max_length=40)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    number = models.CharField(max_length=40)
    party = models.CharField(max_length=255, help_text="driver:<id>, bap:<bap_id>, cpo:<CC*PID>")
    reference = models.CharField(max_length=120, db_index=True, help_text="e.g. cdr:123, settlement:4")
    currency = models.CharField(max_length=3)
    total = models.DecimalField(max_digits=16, decimal_places=4)
    pdf = models.BinaryField()
    sha256 = models.CharField(max_length=64)
    issued_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["entity", "number"], name="issueddocument_number_once"),
            models.UniqueConstraint(fields=["kind", "reference"], name="issueddocument_one_per_reference"),
        ]

    def __str__(self) -> str:
        return self.number


class PayoutReconciliation(models.Model):
    """One run of a provider's payout file against the ledger and the CDRs, with every mismatch."""

    provider = models.CharField(max_length=20)
    file_name = models.CharField(max_length=255)
    ran_at = models.DateTimeField(default=timezone.now)
    rows = models.PositiveIntegerField(default=0)
    matched = models.PositiveIntegerField(default=0)
    mismatches = models.JSONField(default=list, help_text="At most the first 10,000, each with its reason")
    mismatch_count = models.PositiveIntegerField(default=0)
    seconds = models.FloatField(default=0)

    def __str__(self) -> str:
        return f"{self.provider} {self.file_name} {self.ran_at:%Y-%m-%d %H:%M}"
