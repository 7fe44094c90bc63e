"""The dispute workflow staff follow in the console: accept the CPO's amount, contest it, or resolve it with
a credit. Every change is a compare-and-set on the state and leaves a DisputeEvent (who, when, why)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import Q, Sum
from django.utils import timezone

from billing.models import Cdr, CdrAudit, Dispute, DisputeEvent
from billing.money import round_money
from billing.services import payments


class DisputeStateError(Exception):
    """The dispute is not in a state that allows this action (someone else moved it first)."""


class DisputeCreditError(ValueError):
    """A credit larger than what is left to credit on the dispute, or smaller than the currency's smallest unit."""


def dispute_credit_limit(dispute: Dispute) -> Decimal:
    """The most a credit may be, excl. VAT: what the CPO billed above our price (`difference`, as the dispute
    opened), less what the CPO's processed credit CDRs for the charge already gave back (each was refunded to
    the driver; one that doesn't bring the amounts within tolerance leaves the dispute open). A dispute where
    the CPO billed no more than we did (an undercharge, or a sub-total mismatch with equal totals) has nothing
    to credit. Only credits that gave money back count: not held by their audit (REVIEW: it refunded nobody) and
    in the dispute's currency (−1.00 INR is no 1.00 EUR given back). Counted, a held credit had left nothing to
    credit while nobody got the difference back. (A processed credit has its audit, written in the same
    transaction as its processed_at: CREDIT when it gave money back.)"""
    given_back = (
        Cdr.objects.filter(
            credited_cdr_id=dispute.cdr_id,
            credit=True,
            processed_at__isnull=False,
            currency__iexact=dispute.currency,
        )
        .filter(Q(audit__isnull=True) | Q(audit__status=CdrAudit.Status.CREDIT))
        .aggregate(total=Sum("total_cost_excl_vat"))["total"]
    )
    return max(dispute.difference + (given_back or Decimal("0")), Decimal("0"))  # credit CDRs are negative


def dispute_open(*, cdr: Cdr, audit: CdrAudit) -> Dispute | None:
    """Open a dispute for a mismatching CDR, unless one is already open (one per CDR, a DB constraint)."""
    existing = Dispute.objects.filter(cdr=cdr, state__in=Dispute.OPEN_STATES).first()
    if existing is not None:
        return existing
    assert audit.computed_excl_vat is not None
    with transaction.atomic():
        dispute = Dispute.objects.create(
            cdr=cdr,
            partner=cdr.partner,
            currency=cdr.currency,
            cpo_amount=cdr.total_cost_excl_vat,
            our_amount=audit.computed_excl_vat,
            difference=cdr.total_cost_excl_vat - audit.computed_excl_vat,
        )
        DisputeEvent.objects.create(
            dispute=dispute, action="opened", to_state=dispute.state, note="CDR audit: amounts differ beyond tolerance"
        )
    return dispute


def _move(
    dispute: Dispute, *, to: str, allowed_from: tuple[str, ...], user: Any, action: str, note: str, **fields: Any
) -> Dispute:
    """Compare-and-set the dispute's state to `to` from one of `allowed_from`, with a DisputeEvent of the move.
    The state it moves from is the row's, read under its lock, not the caller's object's: that was loaded when
    the request began, and another member of staff may have moved the dispute since (an accept after a contest
    had been recorded as from OPEN). The caller's own records read it from the event (`dispute_moved_from`)."""
    with transaction.atomic():
        # NO KEY UPDATE: the lock the UPDATE below takes anyway, taken before the state is read.
        locked = Dispute.objects.select_for_update(no_key=True).filter(pk=dispute.pk)
        was = locked.values_list("state", flat=True).first()
        resolved = {"resolved_at": timezone.now()} if to in (Dispute.State.ACCEPTED, Dispute.State.CREDITED) else {}
        changed = 0
        if was in allowed_from:  # still a compare-and-set on the state read: SQLite has no row locks
            changed = Dispute.objects.filter(pk=dispute.pk, state=was).update(state=to, **resolved, **fields)
        if not changed:
            dispute.refresh_from_db()
            raise DisputeStateError(f"dispute {dispute.pk} is {dispute.state}; cannot {action}")
        DisputeEvent.objects.create(
            dispute=dispute,
            user=user if getattr(user, "is_authenticated", False) else None,
            action=action,
            from_state=was,
            to_state=to,
            note=note,
        )
    dispute.refresh_from_db()
    return dispute


def dispute_moved_from(dispute: Dispute) -> str:
    """The state the dispute's last move started from, as its history recorded it under the row's lock. Read in
    the move's transaction (the row stays locked until it commits: no other move comes in between), for the
    staff audit record written with it."""
    return dispute.events.order_by("-pk").values_list("from_state", flat=True).first() or ""


def dispute_accept_cpo_amount(*, dispute: Dispute, user: Any, note: str = "") -> Dispute:
    return _move(
        dispute,
        to=Dispute.State.ACCEPTED,
        allowed_from=Dispute.OPEN_STATES,
        user=user,
        action="accepted CPO amount",
        note=note,
    )


def dispute_contest(*, dispute: Dispute, user: Any, note: str = "") -> Dispute:
    return _move(
        dispute,
        to=Dispute.State.CONTESTED,
        allowed_from=(Dispute.State.OPEN,),
        user=user,
        action="contested",
        note=note,
    )


def dispute_resolve_with_credit(
    *, dispute: Dispute, user: Any, amount: Decimal, note: str = "", borne_by_cpo: bool = True
) -> Dispute:
    """Resolve with a credit of `amount` excl. VAT: the driver gets it back with the CDR's VAT on it, borne by
    the CPO (its payable shrinks: the CPO settlement folds it in) or by us (`borne_by_cpo=False`), refunded
    the way the driver paid (billing/services/payments.py::dispute_credit) — in the same transaction."""
    if amount <= 0:
        raise ValueError("the credit must be a positive amount")
    cdr = dispute.cdr
    with_vat = amount
    if cdr.total_cost_incl_vat is not None and cdr.total_cost_excl_vat > 0:
        with_vat = amount * cdr.total_cost_incl_vat / cdr.total_cost_excl_vat
    if _below_smallest_unit(amount, dispute.currency) or _below_smallest_unit(with_vat, dispute.currency):
        # payments.dispute_credit rounds the refund to the currency's minor unit and posts nothing below it: the
        # dispute had moved to CREDITED, nobody was refunded, and the rest could never be credited.
        raise DisputeCreditError(
            f"a credit of {amount} {dispute.currency} is less than the currency's smallest unit once rounded: "
            "nothing would be refunded"
        )
    with transaction.atomic():
        _disputed_cdr_locked(dispute)
        limit = dispute_credit_limit(dispute)
        if amount > limit:
            # The console's form says so too; checked here for every caller: above it the driver would get back
            # what a credit CDR already refunded.
            raise DisputeCreditError(
                f"a credit of {amount} {dispute.currency} is more than is left to credit on dispute {dispute.pk} "
                f"({limit} {dispute.currency}: the CPO's amount minus ours, less its credit CDRs)"
            )
        dispute = _move(
            dispute,
            to=Dispute.State.CREDITED,
            allowed_from=Dispute.OPEN_STATES,
            user=user,
            action="resolved with credit",
            note=note or f"credit {amount} {dispute.currency}",
            credit_amount=amount,
        )
        payments.dispute_credit(
            cdr_id=cdr.pk,
            amount=with_vat,
            currency=dispute.currency,
            reference=f"dispute:{dispute.pk}",
            borne_by_cpo=borne_by_cpo,
        )
    return dispute


def _below_smallest_unit(amount: Decimal, currency: str) -> bool:
    """Whether an amount rounds to nothing in the currency's minor unit, as payments.dispute_credit rounds it (a
    currency we don't know the minor unit of is left to it)."""
    try:
        return round_money(amount, currency) <= 0
    except ValueError:
        return False


def _disputed_cdr_locked(dispute: Dispute) -> None:
    """Lock the disputed CDR's row until the transaction ends, before the credit limit is read: the lock its
    credit CDRs' processing takes while it weighs and refunds each of them (billing/services/audit.py
    `_audit_credit`: locked_cdr(original.pk)). Read unlocked, the limit missed a credit CDR being processed at that
    moment: both refunded the same difference, the driver got it back twice. The CDR's row first, then the
    dispute's (`_move`), then the booking's and its payments' (payments.dispute_credit), as that processing takes
    them: the two queue, never deadlock. A plain FOR UPDATE of the row (locked_cdr's lock: audit imports this
    module)."""
    list(Cdr.objects.select_for_update().filter(pk=dispute.cdr_id).values_list("pk", flat=True))


def dispute_settled_by_credit_cdr(*, dispute: Dispute, credit_cdr: Cdr) -> Dispute:
    """A credit CDR from the CPO brought the net amount within tolerance (mod_cdrs §"Credit CDRs")."""
    return _move(
        dispute,
        to=Dispute.State.CREDITED,
        allowed_from=Dispute.OPEN_STATES,
        user=None,
        action="credit CDR received",
        note=f"credit CDR {credit_cdr.cdr_id} ({credit_cdr.total_cost_excl_vat} {credit_cdr.currency})",
        credit_amount=-credit_cdr.total_cost_excl_vat,
    )
