"""Numbered documents: driver receipts and credit notes, BAP and CPO settlement statements, issued once per
thing they document, numbered without gaps per legal entity, kind and year, and kept as issued (PDF + SHA-256).

Numbering rules (docs/settlement.md):

- A number is `<ENTITY>-<PREFIX>-<YEAR>-<NNNNNN>`, e.g. `EMSP-RC-2026-000001`: the legal entity's code
  (settings.LEGAL_ENTITY_CODE), the kind's prefix (RC receipt, CN credit note, BS BAP statement, CS CPO
  statement), the year of issue in the legal entity's time zone (settings.DOCUMENTS_TIME_ZONE, the zone its
  dates are printed in), and the kind's next number that year.
- The last number of each (entity, kind, year) is a `DocumentSequence` row, incremented and locked by one
  `UPDATE … RETURNING` in the same transaction that stores the `IssuedDocument`: two issuers queue on the
  row, and a rollback returns the number with the document, so the numbers have no gaps and no repeats.
- A document is issued once per reference (`cdr:<id>`, `settlement:<id>`, `bap:<bap_id>:<CUR>:<start>..<end>`;
  a database constraint on (kind, reference)): asking again returns the document issued first, unchanged.
- The PDF is rendered under the lock, because the number is printed in it; that keeps one kind's issuing
  sequential (a few milliseconds per document), which gap-free numbering needs anyway.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Callable
from datetime import date, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from billing.documents import (
    Content,
    Issuer,
    bap_statement_content,
    cpo_net_payable,
    cpo_statement_content,
    receipt_content,
    render,
)
from billing.documents.layout import LayoutError, document_zone
from billing.models import DocumentSequence, DriverReceipt, IssuedDocument, Settlement
from billing.services.bap_settlement import BapSettlementError, bap_settlement_compute
from billing.services.payments import dispute_credit_netted, fee_given_back
from emsp.inserts import insert, insert_if_absent

log = logging.getLogger(__name__)

Kind = IssuedDocument.Kind

PREFIXES: dict[str, str] = {
    Kind.RECEIPT: "RC",
    Kind.CREDIT_NOTE: "CN",
    Kind.BAP_STATEMENT: "BS",
    Kind.CPO_STATEMENT: "CS",
}
REFERENCE_MAX = IssuedDocument._meta.get_field("reference").max_length
PARTY_MAX = IssuedDocument._meta.get_field("party").max_length


class DocumentError(ValueError):
    """A document that can't be issued as asked (an open period, nothing to state, a tampered PDF)."""


def issuer() -> Issuer:
    return Issuer(
        name=settings.LEGAL_ENTITY_NAME, address=settings.LEGAL_ENTITY_ADDRESS, tax_id=settings.LEGAL_ENTITY_TAX_ID
    )


# --- numbers ------------------------------------------------------------------------------------------------


def format_number(*, entity: str, kind: str, year: int, number: int) -> str:
    return f"{entity}-{PREFIXES[kind]}-{year:04d}-{number:06d}"


# The sequence's next number, its row locked until the transaction ends, in one statement (a profile of the
# receipt task showed the ORM's SELECT … FOR UPDATE and save() of the row costing more than PostgreSQL's work).
_SEQUENCE = DocumentSequence._meta.db_table
_TAKE_SQL = f"UPDATE {_SEQUENCE} SET last = last + 1 WHERE entity = %s AND kind = %s AND year = %s RETURNING last"  # noqa: S608
_ISSUED_SQL = f"SELECT 1 FROM {IssuedDocument._meta.db_table} WHERE kind = %s AND reference = %s"  # noqa: S608


def next_number(*, entity: str, kind: str, year: int) -> str:
    """The next number of the entity's documents of `kind` in `year`, e.g. `EMSP-RC-2026-000001`. Must be
    called inside the transaction that stores the numbered document (it raises DocumentError otherwise): the
    sequence row stays locked until that transaction ends, and its rollback gives the number back."""
    if kind not in PREFIXES:
        raise DocumentError(f"no numbering for documents of kind {kind!r}; use one of {sorted(PREFIXES)}")
    if not connection.in_atomic_block:
        # Taken outside the document's transaction, a number would be committed before its document and lost
        # (a gap) if storing the document failed.
        raise DocumentError("take a document number inside the transaction that stores the document")
    with connection.cursor() as cursor:
        cursor.execute(_TAKE_SQL, [entity, kind, year])
        row = cursor.fetchone()
        if row is None:  # the sequence's first use: a concurrent first use wins the insert, we then wait on its row
            insert_if_absent(DocumentSequence(entity=entity, kind=kind, year=year, last=0), ["entity", "kind", "year"])
            cursor.execute(_TAKE_SQL, [entity, kind, year])
            row = cursor.fetchone()
    return format_number(entity=entity, kind=kind, year=year, number=row[0])


# --- issuing --------------------------------------------------------------------------------------------------


def _issued(kind: str, reference: str) -> IssuedDocument | None:
    return IssuedDocument.objects.filter(kind=kind, reference=reference).first()


class _IssuedMeanwhile(Exception):
    """A twin issued the document while we waited for the sequence: our number goes back with the rollback."""


def _issue(
    *,
    kind: str,
    reference: str,
    party: str,
    currency: str,
    total: object,
    content: Callable[[str, datetime], Content],
    stored: Callable[[], None] | None = None,
    check: Callable[[], None] | None = None,
) -> IssuedDocument:
    """Issue the document of `reference` once: number, render, store, in one transaction (`stored` runs in it,
    after the document's row). `check` runs in it once the number is taken (its kind's issuers queue on the
    sequence's row until the commit, so it sees what they issued) and refuses with DocumentError."""
    existing = _issued(kind, reference)
    if existing is not None:
        return existing
    entity = settings.LEGAL_ENTITY_CODE
    try:
        with transaction.atomic():
            issued_at = timezone.now()
            # The year as printed on the document (its date is the legal entity's): issued at 20:00 UTC on
            # 31 December, a receipt dated 1 January in India is the new year's.
            number = next_number(entity=entity, kind=kind, year=timezone.localtime(issued_at, document_zone()).year)
            with connection.cursor() as cursor:  # issued by a twin while we waited for the sequence's lock?
                cursor.execute(_ISSUED_SQL, [kind, reference])
                if cursor.fetchone() is not None:
                    raise _IssuedMeanwhile
            if check is not None:
                check()  # a DocumentError rolls the number back
            try:
                pdf = render(content(number, issued_at), issuer())
            except LayoutError as error:  # even shortened, something is taller than a page: the number goes back
                raise DocumentError(f"{reference}: the document can't be laid out ({error})"[:500]) from error
            document = insert(
                IssuedDocument(
                    entity=entity,
                    kind=kind,
                    number=number,
                    party=party[:PARTY_MAX],
                    reference=reference,
                    currency=currency,
                    total=total,
                    pdf=pdf,
                    sha256=hashlib.sha256(pdf).hexdigest(),
                    issued_at=issued_at,
                )
            )
            if stored is not None:
                stored()
            return document
    except (_IssuedMeanwhile, IntegrityError):
        # A twin stored it first (in the same sequence, or in another year's when issued across midnight of
        # 31 December); our transaction, number included, is rolled back.
        existing = _issued(kind, reference)
        if existing is None:
            raise
        return existing


def issue_receipt(receipt: DriverReceipt) -> IssuedDocument:
    """The driver's receipt for a charge, or a credit note for a credit CDR's receipt; once per CDR."""
    cdr = receipt.cdr
    kind = Kind.CREDIT_NOTE if cdr.credit else Kind.RECEIPT
    credited = ""
    fee_back = (Decimal(0), Decimal(0))
    netted = Decimal(0)
    if cdr.credit and cdr.credited_cdr_id:
        original = _issued(Kind.RECEIPT, f"cdr:{cdr.credited_cdr_id}")
        if original is None and _issued(kind, f"cdr:{cdr.pk}") is None:
            # The original's receipt exists but its task hasn't issued it yet: issued first, so that the credit
            # note (issued once, never rendered again) names the receipt it corrects.
            original_receipt = (
                DriverReceipt.objects.select_related("cdr__partner", "cdr__charging_session", "driver")
                .filter(cdr_id=cdr.credited_cdr_id)
                .first()
            )
            if original_receipt is not None and not original_receipt.cdr.credit:
                try:
                    original = issue_receipt(original_receipt)
                except DocumentError:  # the note is still due: issued naming the CDR it corrects
                    log.exception("receipt %s of credited CDR %s", original_receipt.pk, cdr.credited_cdr_id)
        credited = original.number if original is not None else ""
        # What the ledger gives back on top of the CPO's part (our fee and its VAT: payments._our_part_given_back),
        # so the note states, and totals, the refund.
        fee_back = fee_given_back(receipt)
        # What a dispute credit the CPO bore had refunded before, so the ledger did not refund it again with this
        # credit (payments._credit_cdr): the note states it apart from what it returns now. The total stays the
        # whole correction: the dispute credit has no document of its own, and this note's total is what the
        # driver got back for the charge, the dispute credit's refund and this one's together.
        netted = dispute_credit_netted(receipt)
    total = receipt.total_incl_vat - fee_back[0] - fee_back[1]
    document = _issue(
        kind=kind,
        reference=f"cdr:{cdr.pk}",
        party=f"driver:{receipt.driver_id}" if receipt.driver_id else "driver:unknown",
        currency=receipt.currency,
        total=total,
        content=lambda number, issued_at: receipt_content(
            receipt,
            number=number,
            issued_at=issued_at,
            credited_number=credited,
            fee_given_back=fee_back,
            refunded_before=netted,
        ),
        stored=lambda: _mark_issued(receipt),
    )
    if not receipt.issued:  # issued before (a twin, an earlier try whose mark was lost): marked now
        _mark_issued(receipt)
    return document


_MARK_ISSUED_SQL = f"UPDATE {DriverReceipt._meta.db_table} SET issued = TRUE WHERE id = %s AND NOT issued"  # noqa: S608


def _mark_issued(receipt: DriverReceipt) -> None:
    with connection.cursor() as cursor:
        cursor.execute(_MARK_ISSUED_SQL, [receipt.pk])
    receipt.issued = True


# A receipt's task may be lost (a worker killed between the CDR's commit and the queue); after this long without
# its document, the sweep queues it again. Each later sweep of the same receipt waits twice as long as the one
# before, up to SWEEP_BACKOFF_MAX: a receipt whose issue keeps failing is tried daily, the others pass it by.
RECEIPT_GRACE = timedelta(seconds=60)
SWEEP_BACKOFF_MAX = timedelta(days=1)
# From this many sweeps on, each one logs a warning naming the receipt (its issue has failed again and again).
SWEEPS_TO_WARN = 5
SWEEPS_MAX = 32767  # the column's ceiling (a receipt swept daily reaches it in ninety years)


def receipts_due(now: datetime | None = None, limit: int = 500) -> list[int]:
    """Receipts still without their numbered document RECEIPT_GRACE after they were made and past their next
    sweep, oldest first (the partial index `driverreceipt_unissued` holds only the unissued)."""
    return list(_due(now or timezone.now()).values_list("pk", flat=True)[:limit])


def _due(now: datetime) -> QuerySet[DriverReceipt]:
    return (
        DriverReceipt.objects.filter(issued=False, created_at__lt=now - RECEIPT_GRACE)
        .filter(Q(next_sweep_at__isnull=True) | Q(next_sweep_at__lte=now))
        .order_by("created_at")
    )


def sweep_backoff(sweeps: int) -> timedelta:
    """How long after its `sweeps`-th sweep (counting from 1) a receipt waits for the next: RECEIPT_GRACE, then
    doubling, up to SWEEP_BACKOFF_MAX."""
    return min(RECEIPT_GRACE * 2 ** min(max(sweeps - 1, 0), 20), SWEEP_BACKOFF_MAX)


def take_due_receipts(now: datetime | None = None, limit: int = 500) -> list[int]:
    """receipts_due, each with this sweep counted and its next one put off (sweep_backoff), in one transaction:
    the caller queues their tasks after it. Rows another sweep holds are passed over."""
    now = now or timezone.now()
    with transaction.atomic():
        rows = list(_due(now).select_for_update(skip_locked=True).values_list("pk", "sweeps")[:limit])
        by_count: dict[int, list[int]] = defaultdict(list)
        for pk, sweeps in rows:
            by_count[min(sweeps + 1, SWEEPS_MAX)].append(pk)
        for sweeps, pks in by_count.items():
            DriverReceipt.objects.filter(pk__in=pks).update(sweeps=sweeps, next_sweep_at=now + sweep_backoff(sweeps))
            if sweeps >= SWEEPS_TO_WARN:
                log.warning("receipts swept %d times and still not issued: %s", sweeps, pks[:20])
    return [pk for pk, _ in rows]


def bap_statement_reference(*, bap_id: str, currency: str, period_start: date, period_end: date) -> str:
    """`bap:<bap_id>:<CUR>:<start>..<end>`; a bap_id too long for the column is replaced by its SHA-256."""
    tail = f":{currency.upper()}:{period_start:%Y-%m-%d}..{period_end:%Y-%m-%d}"
    reference = f"bap:{bap_id}{tail}"
    if len(reference) > REFERENCE_MAX:
        reference = f"bap:sha256-{hashlib.sha256(bap_id.encode()).hexdigest()[:40]}{tail}"
    return reference


def _bap_statement_period(reference: str) -> tuple[date, date] | None:
    """The [start, end) a BAP statement's reference names (its tail `:<start>..<end>`)."""
    try:
        start, end = reference.rsplit(":", 1)[1].split("..")
        return date.fromisoformat(start), date.fromisoformat(end)
    except ValueError:
        return None


def overlapping_bap_statement(
    *, bap_id: str, currency: str, period_start: date, period_end: date
) -> IssuedDocument | None:
    """An issued statement of the same app and currency whose period shares a day with [period_start,
    period_end) (not the same period: that one is the statement itself). Two such statements both demanded
    the charges they share: 2026-10-01..11-01 and 2026-10-02..11-02 each asked for October's."""
    reference = bap_statement_reference(
        bap_id=bap_id, currency=currency, period_start=period_start, period_end=period_end
    )
    prefix = reference[: reference.rindex(":") + 1]  # `bap:<bap_id>:<CUR>:`, the same app's and currency's
    issued = IssuedDocument.objects.filter(kind=Kind.BAP_STATEMENT, reference__startswith=prefix).exclude(
        reference=reference
    )
    for document in issued.defer("pdf").order_by("pk"):
        period = _bap_statement_period(document.reference)
        if period is not None and period[0] < period_end and period_start < period[1]:
            return document
    return None


def _refuse_overlap(*, bap_id: str, currency: str, period_start: date, period_end: date) -> None:
    other = overlapping_bap_statement(
        bap_id=bap_id, currency=currency, period_start=period_start, period_end=period_end
    )
    if other is not None:
        shown = _bap_statement_period(other.reference)
        assert shown is not None
        raise DocumentError(
            f"{bap_id}'s {currency} statement {other.number} already covers {shown[0]:%Y-%m-%d} to "
            f"{shown[1] - timedelta(days=1):%Y-%m-%d}: a statement's period may not overlap another's"
        )


def issue_bap_statement(*, bap_id: str, currency: str, period_start: date, period_end: date) -> IssuedDocument:
    """The app's statement for a period that has ended ([period_start, period_end), end exclusive), from the
    ledger; once per app, currency and period, and never for a period that overlaps one already stated (its
    charges would be demanded twice)."""
    currency = currency.strip().upper()
    reference = bap_statement_reference(
        bap_id=bap_id, currency=currency, period_start=period_start, period_end=period_end
    )
    existing = _issued(Kind.BAP_STATEMENT, reference)
    if existing is not None:
        return existing
    period = {"bap_id": bap_id, "currency": currency, "period_start": period_start, "period_end": period_end}
    _refuse_overlap(**period)
    if period_end > timezone.localdate():
        raise DocumentError(f"the period ends on {period_end:%Y-%m-%d}: a statement is issued once it has ended")
    try:
        settlement = bap_settlement_compute(
            bap_id=bap_id, currency=currency, period_start=period_start, period_end=period_end
        )
    except BapSettlementError as error:
        raise DocumentError(str(error)) from None
    if settlement.is_empty:
        raise DocumentError(f"nothing to state for {bap_id} in {currency} from {period_start} to {period_end}")
    return _issue(
        kind=Kind.BAP_STATEMENT,
        reference=reference,
        party=settlement.party,
        currency=currency,
        total=settlement.net_due,
        content=lambda number, issued_at: bap_statement_content(settlement, number=number, issued_at=issued_at),
        check=lambda: _refuse_overlap(**period),  # again under the sequence's lock: one issued meanwhile
    )


def issue_cpo_statement(settlement: Settlement) -> IssuedDocument:
    """The CPO's statement of a CLOSED settlement (its figures are frozen); once per settlement."""
    existing = _issued(Kind.CPO_STATEMENT, f"settlement:{settlement.pk}")
    if existing is not None:
        return existing
    if settlement.state != Settlement.State.CLOSED:
        raise DocumentError(f"{settlement} is {settlement.state}: a statement is issued once finance closed it")
    return _issue(
        kind=Kind.CPO_STATEMENT,
        reference=f"settlement:{settlement.pk}",
        party=f"cpo:{settlement.partner.party_key}",
        currency=settlement.currency,
        total=cpo_net_payable(settlement),
        content=lambda number, issued_at: cpo_statement_content(settlement, number=number, issued_at=issued_at),
    )


def document_pdf(document: IssuedDocument) -> bytes:
    """The PDF as issued, checked against the SHA-256 stored with it."""
    pdf = bytes(document.pdf)
    if hashlib.sha256(pdf).hexdigest() != document.sha256:
        raise DocumentError(f"{document.number}: the stored PDF does not match its SHA-256")
    return pdf


def document_filename(document: IssuedDocument) -> str:
    return f"{document.number}.pdf"
