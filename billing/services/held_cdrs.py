"""Staff bill a CDR the audit held for review (billing/services/audit.py, HELD) once they have decided it is a real
bill to the driver: a second CDR of a charge that really had two sessions (`duplicate_session_cdr`), or a CPO's
odd totals staff confirmed (`incl_vat_below_excl_vat`). Billed as the audit bills any CDR (receipt, ledger,
collection, the booking settled and the app told), once, and recorded against the staff member."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.contrib.admin.models import CHANGE, LogEntry
from django.db import transaction
from django.db.models import Q

from billing.models import Cdr, CdrAudit, DriverReceipt, Payment
from billing.money import round_money
from billing.services import payments
from billing.services.audit import HELD, booking_settled, cdr_audit, charge_locked, locked_cdr, voided_by_credits
from billing.services.driver_pricing import driver_total, emsp_fee, partner_terms, receipt_for_cdr, terms_remembered
from emsp.celery import run_after_commit
from emsp.models import Token
from emsp.services.sessions import token_is_ours
from emsp.services.staff import staff_action_record

# The held flags staff may overrule. The others stay for a credit CDR or a CPO to resolve: another eMSP's token
# (no driver of ours), a credit's refund (unknown_original, over_credit, original_held).
RELEASABLE = frozenset({"duplicate_session_cdr", "incl_vat_below_excl_vat"})


@dataclass(frozen=True)
class Release:
    """What became of one CDR staff asked to bill: its receipt when billed now, else why not."""

    cdr_id: int
    label: str  # the CPO's id of the CDR, for the message
    receipt: DriverReceipt | None = None
    reason: str = ""

    @property
    def billed(self) -> bool:
        return self.receipt is not None


def release_refusal(cdr: Cdr, audit: CdrAudit | None) -> str:
    """Why staff may not bill this CDR from the console, "" when they may: it is no held bill they can overrule,
    or it was billed already (the receipt is checked before the flags: a CDR billed by a staff member, or by
    the credit that voided its charge's first CDR, says so)."""
    if cdr.credit:
        return "it is a credit CDR: a held refund is not released here"
    receipt = DriverReceipt.objects.filter(cdr_id=cdr.pk).only("pk", "total_incl_vat", "currency").first()
    if receipt is not None:
        return f"already billed (receipt {receipt.pk}, {receipt_total(receipt)})"
    if cdr.processed_at is None:
        return "it is not processed yet: its audit decides first"
    if audit is None:
        return "it has no audit"
    if audit.status != CdrAudit.Status.REVIEW:
        return f"its audit is {audit.status}, not held for review"
    held = HELD.intersection(audit.flags or [])
    if not held:
        return "it is not held (no held flag): nothing to release"
    if held - RELEASABLE:
        return f"it is held as {', '.join(sorted(held - RELEASABLE))}, which staff do not bill from here"
    if _credit_cdr_for(cdr):
        # The CPO withdrew or corrected it (mod_cdrs: a credit CDR, then a new CDR): the credit's processing
        # decides, as `_bill_second_bills` does for a held CDR withdrawn by a credit of its own.
        return "the CPO sent a credit CDR for it"
    if not token_is_ours(cdr.data.get("cdr_token") or {}) or not _token(cdr).exists():
        return f"its token {cdr.token_uid or '(none)'} is not one of ours: no driver to bill"
    if _app_collects_a_second_bill(cdr):
        return "the app collects this order and was billed for it once: ask the app for a further bill by hand"
    return ""


def _app_collects_a_second_bill(cdr: Cdr) -> bool:
    """Would this be a further bill of an order whose app collects from its driver? The app's payment carries one
    bill (payments.bill sets it, a corrected CDR's replacing a voided one's): a second one would replace the
    first there while both stood on what the app owes us."""
    session = cdr.charging_session if cdr.charging_session_id is not None else None
    if session is None or session.booking_id is None:
        return False
    collects = Payment.objects.filter(
        booking_id=session.booking_id, purpose="charge", collected_by=Payment.CollectedBy.BAP
    ).exists()
    if not collects:
        return False
    billed = DriverReceipt.objects.filter(cdr__charging_session__booking_id=session.booking_id, cdr__credit=False)
    # A CDR credits voided is no bill: the corrected one that replaces it is the app's one bill (payments.bill).
    return any(not voided_by_credits(receipt.cdr) for receipt in billed.exclude(cdr_id=cdr.pk).select_related("cdr"))


def _credit_cdr_for(cdr: Cdr) -> bool:
    """A credit CDR for it, linked or (processed before it, its link not made yet) naming it."""
    unlinked = Q(
        credit=True,
        country_code__iexact=cdr.country_code,
        party_id__iexact=cdr.party_id,
        credit_reference_id__iexact=cdr.cdr_id,
    )
    return Cdr.objects.filter(Q(credited_cdr_id=cdr.pk) | unlinked).exists()


def _token(cdr: Cdr) -> Any:
    """The token receipt_for_cdr bills the driver of (its lookup, without the receipt's write)."""
    return Token.objects.by_uid(cdr.token_uid, (cdr.data.get("cdr_token") or {}).get("type") or None)


def receipt_total(receipt: DriverReceipt) -> str:
    """The receipt's total as the driver reads it (the column keeps four decimals)."""
    return f"{round_money(receipt.total_incl_vat, receipt.currency)} {receipt.currency}"


def driver_bill(cdr: Cdr) -> Decimal:
    """What the driver's receipt will say they pay, incl. VAT: receipt_for_cdr's total, shown on the
    confirmation page before anything is written."""
    terms = partner_terms(cdr.partner)
    incl = cdr.total_cost_incl_vat if cdr.total_cost_incl_vat is not None else cdr.total_cost_excl_vat
    fee = emsp_fee(terms, cdr.total_cost_excl_vat, cdr.currency)
    return driver_total(incl, fee, cdr.currency, terms.rounding)


def bill_held_cdr(cdr_id: int, staff_user: Any) -> Release:
    """Bill the driver for a held CDR staff released, as audit.py's `_bill` and `booking_settled` do, without the hold.

    Once: the CDR's row is locked, then its charge's (the booking's, else the session's: `charge_locked`), and
    the receipt is looked for under both. A second click, or two staff members at once, find the receipt (one
    waits for the other's commit); a credit CDR letting the charge's held second bills through
    (`_bill_second_bills`) takes the charge's lock first, and either billed it before (its receipt is found) or
    finds this one's receipt and skips it. The staff record commits with the bill."""
    if getattr(staff_user, "pk", None) is None:
        return Release(cdr_id, str(cdr_id), reason="no staff member to record it against")
    with transaction.atomic(), terms_remembered():
        cdr = locked_cdr(cdr_id)
        if cdr is None:
            return Release(cdr_id, str(cdr_id), reason="no such CDR")
        if cdr.charging_session_id is not None and not cdr.credit:
            charge_locked(cdr.charging_session)
        audit = CdrAudit.objects.filter(cdr_id=cdr.pk).first()
        if audit is not None:
            audit.cdr = cdr
        reason = release_refusal(cdr, audit)
        if reason or audit is None:
            return Release(cdr.pk, cdr.cdr_id, reason=reason or "it has no audit")
        held = sorted(HELD.intersection(audit.flags))
        # Audited again as the bill it now is: a difference from our price disputed, the settlement counting it.
        # Only the holds staff were shown: one the audit finds now (a second bill of a charge another release
        # billed meanwhile) holds it still.
        audit = cdr_audit(cdr, overruled=frozenset(held))
        still = HELD.intersection(audit.flags)
        if still:
            return Release(cdr.pk, cdr.cdr_id, reason=f"audited again, it is held as {', '.join(sorted(still))}")
        receipt = receipt_for_cdr(cdr)
        if receipt is None:  # release_refusal checked the token: only a token deleted meanwhile
            return Release(cdr.pk, cdr.cdr_id, reason="its token is not one of ours: no driver to bill")
        payments.bill(receipt)  # the ledger entries and the collection, with the receipt
        run_after_commit("billing.tasks.issue_receipt", receipt.pk)
        booking_settled(cdr)
        _record_release(audit, held, receipt, staff_user)
    return Release(cdr.pk, cdr.cdr_id, receipt=receipt)


def _record_release(audit: CdrAudit, held: list[str], receipt: DriverReceipt, staff_user: Any) -> None:
    """Who released it and when, and what it had been held as: the admin history of the audit (LogEntry) and the
    staff audit trail (StaffAction), in the bill's transaction (the audit notes RELEASED: audit.cdr_audit)."""
    note = (
        f"Billed the driver for held CDR {audit.cdr.cdr_id} (held as {', '.join(held)}): "
        f"receipt {receipt.pk}, {receipt_total(receipt)}"
    )
    LogEntry.objects.log_actions(
        user_id=staff_user.pk, queryset=[audit], action_flag=CHANGE, change_message=note, single_object=True
    )
    staff_action_record(
        user=staff_user,
        verb="bill_held_cdr",
        obj=audit,
        details={
            "cdr": audit.cdr.cdr_id,
            "held_as": held,
            "receipt": receipt.pk,
            "total_incl_vat": str(round_money(receipt.total_incl_vat, receipt.currency)),
            "currency": receipt.currency,
        },
    )
