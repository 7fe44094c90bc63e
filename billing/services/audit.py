"""CDR audit: every received CDR is repriced with our tariff engine from its own tariffs and charging
periods, in the location's local time, and compared with the CPO's total and sub-totals. A difference beyond
the partner's tolerance opens a dispute; a CDR we cannot tie to a session, tariff or location is flagged for
review, never dropped (one without a tariff is audited again once its tariff comes); a credit CDR nets against
the CDR it corrects. A CDR of another eMSP's token or of a token of ours we don't hold, a bill whose amount with
VAT is below the one without, a CDR in another currency than its charge's payment, session or original, a credit
beyond what its original billed or naming another driver's token than its original billed, and a second CDR of a
charge whose first no credit CDR voided are held for review: no driver is billed or refunded for them, and no
dispute is opened. A CDR in another currency than the tariff it is priced with is for review, not disputed: our
price is no figure in its currency."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.admin.models import CHANGE, LogEntry
from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.db.models.functions import Upper
from django.utils import timezone

from billing import metrics, pricing
from billing.models import Cdr, CdrAudit, Dispute, DriverReceipt, Payment, Tariff
from billing.money import minor_units
from billing.services import disputes, payments
from billing.services.driver_pricing import (
    cdr_token_of_ours,
    implausible_amount,
    partner_terms,
    receipt_for_cdr,
    terms_remembered,
)
from emsp import events
from emsp.celery import run_after_commit
from emsp.models import Booking, ChargingSession, Command, Location, Partner, ci_key
from emsp.rows import first_where, model_from_row, select_columns
from emsp.services import bookings
from emsp.services.sessions import (
    new_key_locked,
    session_billed_energy,
    session_from_cdr,
    session_key,
    session_of_charge,
    start_command,
    token_is_ours,
)
from emsp.services.staff import staff_action_record

log = logging.getLogger(__name__)

# The CDR's (sub-)total fields; PriceResult has an attribute of the same name for each.
SUBTOTALS = (
    "total_cost",
    "total_energy_cost",
    "total_time_cost",
    "total_parking_cost",
    "total_fixed_cost",
    "total_reservation_cost",
)


# Flags of an audit whose CDR no driver is billed or refunded for until staff have looked: another eMSP's token
# (its uid collides with one of ours), a token of our party we hold no token for (no driver to bill), a total
# with VAT below the total without, a currency other than its booking's payment's, its session's or its
# original's (billed, an EUR figure was captured as INR), a credit of an original we don't hold or beyond what
# the original billed, a second CDR of one charge (its session or booking) whose first no credit CDR voided, a
# credit of a CDR that is itself held (it billed nobody: there is nothing to give back), a credit naming a token of
# ours of another driver than the one its original billed (refunded, that driver got the money back while the one
# who paid still owed the voided charge). A held CDR is audited REVIEW whatever its price: no dispute is opened for
# it, and no dispute excuses it in a settlement.
HELD = frozenset(
    {
        "foreign_token",
        "unknown_token",
        "incl_vat_below_excl_vat",
        "currency_differs",
        "unknown_original",
        "over_credit",
        "duplicate_session_cdr",
        "original_held",
        "token_differs",
    }
)

# A CDR in another currency than the tariff the engine priced it with (its `currency_mismatch` warning): our price
# is in the tariff's currency, no figure to weigh the CPO's against (500 INR against 5.00 EUR had opened a dispute
# of 495 INR). Not held: its currency is checked against its charge's money (`_check_currency`, which holds a CDR
# in another one), so the driver is billed as the CPO priced it, as for a CDR we can't price, and the audit is
# for staff to look at (and accept as billed).
TARIFF_CURRENCY = "tariff_currency_differs"

# Flags of a CDR that is no bill to us (or not one we can weigh in its currency): a difference from our price is
# not disputed with the CPO.
NOT_DISPUTED = frozenset({"foreign_token", "duplicate_session_cdr", "currency_differs", TARIFF_CURRENCY})

# A CDR without tariffs of its own whose periods name none we hold: for review, billed as the CPO priced it. Audited
# again once its tariff comes (`cdr_audit_late_tariff`).
NO_TARIFF = "no_tariff"
# A flag of such an audit again whose tariff, as we hold it, was updated after the charge began (its last_updated
# later than the CDR's start): a difference from our price is recorded for staff, not disputed.
TARIFF_NEWER = "tariff_newer_than_charge"
# A flag of such an audit again of a CDR the CPO had already voided with credit CDRs (`voided_by_credits`) whose price
# differs from ours: recorded for staff, not disputed (nothing is owed on it either way; a dispute could be neither
# credited nor settled).
VOIDED = "voided_by_credit"

# A CDR of one of our tokens whose authorization_reference names a booking's START_SESSION but whose session we
# don't hold yet (it arrived before its session) is processed this long after it was received at the latest:
# until then its processing is put off, so that the session, once here, ties it to its booking (the hold is
# captured, not the driver's account invoiced). After it, the CPO is taken to report no sessions (mod_sessions is
# optional): a session is made of the CDR for the booking (`_session_made`).
SESSION_GRACE = timedelta(minutes=10)


def _decimal(value: Any) -> Decimal | None:
    if value is None:
        return None
    try:
        return Decimal(str(value))
    except ArithmeticError:
        return None


def _cpo_breakdown(cdr: Cdr) -> dict[str, Any]:
    return {field: cdr.data.get(field) for field in SUBTOTALS if cdr.data.get(field) is not None}


_ZONE_SQL = f"SELECT time_zone FROM {Location._meta.db_table} WHERE ocpi_key = %s ORDER BY id LIMIT 1"  # noqa: S608


def _time_zone(cdr: Cdr, flags: list[str]) -> str | None:
    """Tariff restrictions are in the location's local time, which the CDR does not carry (mod_cdrs
    CdrLocation has no time_zone): take it from the Location we hold, else derive it from coordinates."""
    # The zone alone, not the whole Location (its `data` decoded for one column: 10 % of a CDR's processing in
    # a profile of bench/bench_cdr_work.py).
    with connection.cursor() as cursor:
        cursor.execute(_ZONE_SQL, [ci_key(cdr.country_code, cdr.party_id, cdr.location_id)])
        row = cursor.fetchone()
    if row is not None:
        return row[0]
    flags.append("unknown_location")
    cdr_location = cdr.data.get("cdr_location") or {}
    if cdr_location.get("time_zone"):
        return str(cdr_location["time_zone"])
    coordinates = cdr_location.get("coordinates") or {}
    try:
        return _finder().timezone_at(lat=float(coordinates["latitude"]), lng=float(coordinates["longitude"]))
    except (KeyError, TypeError, ValueError):
        return None


_FINDER: Any = None


def _finder() -> Any:
    global _FINDER
    if _FINDER is None:
        from timezonefinder import TimezoneFinder

        _FINDER = TimezoneFinder()
    return _FINDER


def _tariffs(cdr: Cdr, flags: list[str]) -> list[dict[str, Any]]:
    """The CDR's own tariffs (as at session start, mod_cdrs); else the ones its periods name, as we hold them."""
    own = cdr.data.get("tariffs") or []
    if own:
        return own
    stored = [t.data for t in _stored_tariffs(cdr)]
    if not stored:
        flags.append(NO_TARIFF)
    return stored


def _named_tariff_ids(cdr: Cdr) -> set[str]:
    """The tariff ids the CDR's periods name."""
    return _tariff_ids_of(cdr.data.get("charging_periods"))


def _tariff_ids_of(periods: Any) -> set[str]:
    """The tariff ids charging periods name (a CDR's `charging_periods`, as stored)."""
    return {
        p["tariff_id"]
        for p in (periods if isinstance(periods, list) else [])
        if isinstance(p, dict) and isinstance(p.get("tariff_id"), str) and p["tariff_id"]
    }


def _stored_tariffs(cdr: Cdr) -> list[Tariff]:
    """The tariffs the CDR's periods name (its party's, ids compared as CiString), as we hold them now."""
    ids = _named_tariff_ids(cdr)
    return list(Tariff.objects.filter(ocpi_key__in=[ci_key(cdr.country_code, cdr.party_id, i) for i in ids]))


# Sub-periods kept in CdrAudit.our_breakdown: beyond, only the totals and per-element breakdown are (a CDR of
# thousands of periods under a time-of-day tariff made a 15 MB row).
STORED_PERIODS = 2_000

# Engine warnings that say the repriced amount is not exact (billing/pricing: calculate.py, engine.py).
INEXACT_WARNINGS = (
    "multiple_tariffs_priced_with_first",
    "period_without_tariff_id",
    "price_limits_of_switched_tariffs_ignored",
    "tariff_not_valid_at_session_start",
    "time_zone_unknown_assumed_utc",
    "unverifiable_restriction",
)


def _inexact(result: pricing.PriceResult) -> bool:
    return any(warning.split(":", 1)[0] in INEXACT_WARNINGS for warning in result.warnings)


def _priced_in_another_currency(result: pricing.PriceResult) -> bool:
    """Whether the engine priced the CDR with a tariff in another currency than the CDR's (calculate.py)."""
    return any(warning.split(":", 1)[0] == "currency_mismatch" for warning in result.warnings)


def agrees(theirs: Decimal, ours: Decimal, currency: str, tolerance: Decimal) -> bool:
    """Whether the CPO's amount agrees with our price: within the partner's tolerance (`audit_tolerance`, in the
    CDR's currency), or our exact price rounded to the currency's minor unit, up or down.

    Our price is exact; the CPO states amounts rounded to the currency's minor unit, each (sub-)total on its own,
    by a rule we are not told (OCPI leaves rounding to law, contract and currency: half up, up, down). A figure
    that is a whole number of minor units less than one unit from ours is such a rounding, a correct bill. For a
    currency without decimals (JPY, KRW, CLP) the error is up to a whole unit, and a fixed 0.01 had disputed
    nearly every correct bill (306 JPY against our 305.8236). Rounded ours up or down, not a tolerance of one
    unit: for a two-decimal currency whatever this adds lies within the default 0.01 already (EUR is weighed as
    before), and a partner's tolerance set below a cent still disputes 4.005 against our 4.00."""
    difference = abs(theirs - ours)
    if difference <= tolerance:
        return True
    try:
        unit = Decimal(1).scaleb(-minor_units(currency))
    except ValueError:  # not an ISO 4217 code we know: the tolerance alone
        return False
    return difference < unit and theirs % unit == 0


# A flag that records, and holds nothing: a hold staff overruled (billing/services/held_cdrs.py).
RELEASED = "released_by_staff"
# A flag that records, and holds nothing: staff accepted the CPO's bill of a CDR in review or unpriceable, and
# not held, as billed (`accept_as_billed`); its settlement counts it as matching.
ACCEPTED = "accepted_as_billed"
# A flag that records, and holds nothing more: a held CDR that billed nobody, withdrawn by the CPO with credit CDRs
# of its currency that net it to nothing exactly, excl. and incl. VAT (`_withdrawn`), and those credits; the pair
# moved no money either way, so its settlement counts it as matching (it had stayed in review, carried over every
# month, for ever).
WITHDRAWN = "withdrawn_by_credit"


def cdr_audit(cdr: Cdr, *, overruled: frozenset[str] = frozenset()) -> CdrAudit:
    """Reprice and compare one CDR (idempotent: the audit row is replaced, a dispute opened once). `overruled`:
    held flags staff decided do not hold this CDR (a second CDR of a charge that really had two sessions): left
    out, so the CDR is audited as the bill it now is (a difference from our price disputed, the settlement
    counting it), and RELEASED noted instead."""
    flags: list[str] = []
    if cdr.credit:
        return _audit_credit(cdr)
    if cdr.charging_session_id is None:
        flags.append("no_session")
    _check_bill(cdr, flags)
    if "foreign_token" not in flags and cdr_token_of_ours(cdr) is None:
        # Our party's token, but no token of ours has its uid (receipt_for_cdr's lookup): no driver to bill. Not
        # held, it was audited MATCHED and the CPO's statement paid what the ledger never booked.
        flags.append("unknown_token")
    _check_currency(cdr, flags)
    _check_second_bill(cdr, flags)
    if overruled.intersection(flags):
        flags[:] = [*(flag for flag in flags if flag not in overruled), RELEASED]
    zone = _time_zone(cdr, flags)
    return _audit_priced(cdr, flags, zone, _tariffs(cdr, flags))


def _audit_priced(
    cdr: Cdr,
    flags: list[str],
    zone: str | None,
    tariffs: list[dict[str, Any]],
    *,
    tariffs_newer: bool = False,
    voided: bool = False,
) -> CdrAudit:
    """The audit of a CDR priced with `tariffs`, its flags gathered: stored, and a difference disputed.
    `tariffs_newer`: the tariffs we hold were updated after the charge began (a late tariff's audit,
    `cdr_audit_late_tariff`), so a difference may be the CPO's later price, not an overcharge. `voided`: credit
    CDRs already voided the CDR (a late tariff's audit): a difference is recorded (VOIDED), not disputed."""
    values: dict[str, Any] = {"currency": cdr.currency, "cpo_breakdown": _cpo_breakdown(cdr), "time_zone": zone or ""}
    if not tariffs:
        values.update(status=CdrAudit.Status.REVIEW, flags=flags, our_breakdown={}, error="no tariff to price with")
        return _save(cdr, values)
    try:
        result = pricing.price_cdr(cdr.data, tariffs=tariffs, time_zone=zone)
    except pricing.PricingError as exc:
        flags.append("unpriceable")
        values.update(status=CdrAudit.Status.UNPRICEABLE, flags=flags, our_breakdown={}, error=f"{exc.path}: {exc}")
        return _save(cdr, values)
    if _priced_in_another_currency(result) and TARIFF_CURRENCY not in flags:
        flags.append(TARIFF_CURRENCY)
    ours = result.to_dict(max_periods=STORED_PERIODS)
    beyond = implausible_amount(result.total_cost.excl_vat, result.total_cost.incl_vat)
    if beyond is not None:
        # A tariff the normaliser accepts priced over a charge it accepts comes to what no charge costs (and what
        # the audit's columns can't hold: saving it failed, every run, and the CDR was never billed). No price:
        # the CDR is billed as the CPO priced it, for staff to look at, as one the engine can't price.
        flags.append("unpriceable")
        values.update(
            status=CdrAudit.Status.UNPRICEABLE,
            flags=flags,
            our_breakdown=ours,
            error=f"our price {beyond} is beyond what one charge can cost: the tariff is implausible",
        )
        return _save(cdr, values)
    compared = _compared(cdr, result)
    differences = {key: theirs - mine for key, (theirs, mine) in compared.items()}
    tolerance = partner_terms(cdr.partner).audit_tolerance
    mismatch = any(not agrees(theirs, mine, cdr.currency, tolerance) for theirs, mine in compared.values())
    computed_excl = result.total_cost.excl_vat
    values.update(
        computed_excl_vat=computed_excl,
        computed_incl_vat=result.total_cost.incl_vat,
        difference_excl_vat=None if computed_excl is None else cdr.total_cost_excl_vat - computed_excl,
        our_breakdown={**ours, "differences": {k: str(v) for k, v in differences.items()}},
        flags=flags,
    )
    if computed_excl is None:
        # A 2.3.0 tariff whose prices include taxes at rates it does not state: we know the amount after taxes
        # only, and disputes are worked on the amount before them. A difference is for staff to look at.
        flags.append("tax_rate_unknown")
        values["status"] = CdrAudit.Status.REVIEW
    elif HELD.intersection(flags):
        # Held for staff (billed to nobody yet): never a dispute, whatever the difference. Disputed, accepting
        # the dispute had excused it, and the period closed paying the CPO what no driver was billed.
        values["status"] = CdrAudit.Status.REVIEW
    elif mismatch and not NOT_DISPUTED.intersection(flags) and _inexact(result):
        # Our price is an approximation here (a tariff switch priced with one tariff, a guessed time zone...): a
        # difference is for staff to judge, not a claim on the CPO.
        flags.append("inexact_reprice")
        values["status"] = CdrAudit.Status.REVIEW
    elif mismatch and not NOT_DISPUTED.intersection(flags) and tariffs_newer:
        # The tariff as we hold it is a version later than the charge's: a difference may be a price the CPO
        # changed since. Recorded for staff, not a claim on the CPO.
        flags.append(TARIFF_NEWER)
        values["status"] = CdrAudit.Status.REVIEW
    elif mismatch and not NOT_DISPUTED.intersection(flags) and voided:
        # The CPO voided the bill with credit CDRs before we could price it: nothing is owed on it either way,
        # and a dispute (credit limit 0) could be neither credited nor settled. Recorded for staff.
        flags.append(VOIDED)
        values["status"] = CdrAudit.Status.REVIEW
    elif mismatch and not NOT_DISPUTED.intersection(flags):  # not a bill to us: nothing to dispute
        values["status"] = CdrAudit.Status.MISMATCH
    elif set(flags) - {RELEASED}:
        values["status"] = CdrAudit.Status.REVIEW
    else:
        values["status"] = CdrAudit.Status.MATCHED
    with transaction.atomic(savepoint=False):  # in the CDR's transaction, a failure rolls all of it back
        audit = _save(cdr, values)
        if values["status"] == CdrAudit.Status.MISMATCH:
            disputes.dispute_open(cdr=cdr, audit=audit)
    return audit


def _check_bill(cdr: Cdr, flags: list[str]) -> None:
    """Flag what no driver may be billed for: another eMSP's token (CdrToken.party_id, "ID of the eMSP that
    'owns' this Token": a CPO may send us CDRs that aren't ours), a total with VAT below the one without (the
    receiver stores such a CDR with a finding, lenient in; it reaches no driver until staff look)."""
    if not token_is_ours(cdr.data.get("cdr_token") or {}):
        flags.append("foreign_token")
    incl = cdr.total_cost_incl_vat
    if not cdr.credit and incl is not None and incl < cdr.total_cost_excl_vat - Decimal("0.01"):
        flags.append("incl_vat_below_excl_vat")


def _check_currency(cdr: Cdr, flags: list[str], original: Cdr | None = None) -> None:
    """Flag a CDR in another currency than the money of its charge: its booking's payments, its session, or (a
    credit CDR) the CDR it corrects. Billed, its figure was taken as the other currency's (an EUR CDR captured
    463.27 INR from an INR hold, and the books split across currencies; against a wallet hold every processing
    run failed as unbalanced). Held for staff: nothing is billed or refunded, the hold stays."""
    currency = (cdr.currency or "").upper()
    if original is not None and (original.currency or "").upper() != currency:
        flags.append("currency_differs")
        return
    session = cdr.charging_session if cdr.charging_session_id is not None else None
    if session is None:
        return
    if session.currency and session.currency.upper() != currency:
        flags.append("currency_differs")
        return
    if session.booking_id is not None:
        others = Payment.objects.filter(booking_id=session.booking_id).exclude(currency__iexact=currency)
        if others.exists():
            flags.append("currency_differs")


def _check_second_bill(cdr: Cdr, flags: list[str]) -> None:
    """Flag a second bill for one charge: another CDR of its session (or of its session's booking) was processed
    before it and no credit CDR voided that one (nor withdrew it, held and billed nobody: `_withdrawn`). mod_cdrs:
    "When a CPO wants to make changes to a CDR … the CPO has to send a Credit CDR for the first CDR. After having
    sent the Credit CDR, the CPO can send a new CDR." Billed, it had the driver pay twice (the wallet debited
    twice; an app owing two bills). A CDR held as such a second bill itself does not count: the credit that voids
    the first bills it (`_bill_second_bills`). The CDRs of a charge are processed in the order they were stored
    (`_earlier_awaited`), so the first is the one processed first, unless it was put off beyond SESSION_GRACE. The
    booking's row is locked (else the session's), so two CDRs of one charge processed at the same moment are
    weighed one after the other: the second sees the first processed."""
    session = cdr.charging_session if cdr.charging_session_id is not None else None
    if session is None:
        return
    earlier = (
        Cdr.objects.filter(charge_locked(session), credit=False, processed_at__isnull=False)
        .exclude(pk=cdr.pk)
        .select_related("audit")
    )
    for other in earlier:
        audit = getattr(other, "audit", None)
        if audit is not None and "duplicate_session_cdr" in (audit.flags or []):
            continue
        if not voided_by_credits(other) and not _withdrawn(other, audit):
            flags.append("duplicate_session_cdr")
            return


def charge_locked(session: ChargingSession) -> Q:
    """Lock the charge a session is of, its booking's row (else the session's), until the transaction ends, and
    return the filter of its CDRs: the CDRs of one charge are weighed, and a credit lets them through, one
    transaction at a time. The booking FOR NO KEY UPDATE, as an update of it takes it: a row inserted that refers to
    it (a capture's page for the rest of a bill, a command) checks it FOR KEY SHARE, which FOR UPDATE had held up,
    while that insert's transaction held the charge payment's row this one then waits for (a deadlock)."""
    if session.booking_id is not None:
        list(Booking.objects.select_for_update(no_key=True).filter(pk=session.booking_id).values_list("pk", flat=True))
        return Q(charging_session__booking_id=session.booking_id)
    list(ChargingSession.objects.select_for_update().filter(pk=session.pk).values_list("pk", flat=True))
    return Q(charging_session_id=session.pk)


def voided_by_credits(original: Cdr) -> bool:
    """Whether the credit CDRs that gave its money back (audited CREDIT: not held) net the CDR to nothing."""
    credited = Cdr.objects.filter(credited_cdr=original, credit=True, audit__status=CdrAudit.Status.CREDIT)
    given_back = sum(credited.values_list("total_cost_excl_vat", flat=True), Decimal("0"))
    return original.total_cost_excl_vat + given_back <= 0


def _withdrawn(original: Cdr, audit: CdrAudit | None) -> bool:
    """Whether a CDR held for review, that billed nobody (no receipt), was withdrawn by the CPO: the credit CDRs
    for it (held as original_held: there was nothing to give back) net it to nothing. It is no first bill: the
    corrected CDR the CPO sends after the credit, as mod_cdrs has it, is the charge's bill. A held CDR no credit
    withdrew still makes a later one a second bill, for staff to look at both."""
    if audit is None or not HELD.intersection(audit.flags or []):
        return False
    if DriverReceipt.objects.filter(cdr=original).exists():
        return False
    # Only credits of its currency net it (−3 EUR and −2 INR are no 5 INR given back), and only to nothing exactly,
    # with and without VAT: every one of them is counted as matching (`_mark_withdrawn`), so credits that gave back
    # more (−4 and −4 on 5: the statement paid the CPO −3.30 the ledger never booked) or less with VAT (−5.00 /
    # −5.00 on 5.00 / 5.50) are for staff, held with it.
    credited = Cdr.objects.filter(credited_cdr=original, credit=True, audit__isnull=False, currency=original.currency)
    net_excl, net_incl = _net(original, list(credited))
    return net_excl == 0 and net_incl == 0


def _mark_withdrawn(original: Cdr) -> None:
    """The held original and its credits of its currency (held as original_held) are noted WITHDRAWN: settled
    between the CPO and us, nothing owed either way (`settlement.withdrawn_audit`)."""
    audits = CdrAudit.objects.filter(
        Q(cdr=original) | Q(cdr__credited_cdr=original, cdr__credit=True, cdr__currency=original.currency)
    )
    for row in audits.select_for_update():
        if row.cdr_id != original.pk and "original_held" not in (row.flags or []):
            continue
        if WITHDRAWN not in (row.flags or []):
            CdrAudit.objects.filter(pk=row.pk).update(flags=[*(row.flags or []), WITHDRAWN])


def _compared(cdr: Cdr, result: pricing.PriceResult) -> dict[str, tuple[Decimal, Decimal]]:
    """The CPO's amount and ours, excl. and incl. VAT, for every (sub-)total the CPO stated."""
    out: dict[str, tuple[Decimal, Decimal]] = {}
    for field in SUBTOTALS:
        stated = cdr.data.get(field)
        if not isinstance(stated, dict):
            continue
        ours = getattr(result, field)
        for part in ("excl_vat", "incl_vat"):
            theirs = _decimal(stated.get(part))
            mine = getattr(ours, part) if ours is not None else Decimal("0")
            if theirs is None or mine is None:
                continue
            out[f"{field}.{part}"] = (theirs, mine)
    return out


def _save(cdr: Cdr, values: dict[str, Any]) -> CdrAudit:
    values.setdefault("computed_excl_vat", None)
    values.setdefault("computed_incl_vat", None)
    values.setdefault("difference_excl_vat", None)
    values.setdefault("error", "")
    values["audited_at"] = timezone.now()
    # The audit row replaced in one INSERT … ON CONFLICT DO UPDATE (update_or_create: a SELECT FOR UPDATE, then
    # an INSERT between savepoints); the fields not in `values` keep what an earlier audit stored.
    audit = CdrAudit(cdr=cdr, **values)
    CdrAudit.objects.bulk_create([audit], update_conflicts=True, unique_fields=["cdr"], update_fields=list(values))
    metrics.count_audit(audit.status)
    return audit


def _audit_credit(cdr: Cdr) -> CdrAudit:
    """A credit CDR: record it, and settle the original's open dispute when the net amount now agrees. A credit
    of an original we don't hold (yet: `_credits_waiting_for`) or one that, with the credits before it, gives
    back more than the original billed (mod_cdrs: "a Credit CDR for the first CDR", with its negative amounts)
    is for review, its refund held."""
    original = _credited(cdr)
    flags = [] if original is not None else ["unknown_original"]
    _check_bill(cdr, flags)
    _check_currency(cdr, flags, original)
    if original is not None:
        # The credits of one original are weighed one at a time: under its row lock (which its own processing
        # holds while it audits the credits that waited for it), each sees what the others gave back.
        locked_cdr(original.pk)
        if _over_credits(cdr, original):
            flags.append("over_credit")
        if (
            "foreign_token" not in flags
            and cdr_token_of_ours(cdr) is None
            and DriverReceipt.objects.filter(cdr=original).exists()
        ):
            # Its original billed a driver, but no token of ours has its uid: its refund would reach nobody (no
            # receipt), while the CPO's statement took the credit off.
            flags.append("unknown_token")
        elif "foreign_token" not in flags and _token_differs(cdr, original):
            flags.append("token_differs")
        original_audit = CdrAudit.objects.filter(cdr=original).only("flags").first()
        held = original_audit is not None and HELD.intersection(original_audit.flags or [])
        if held and not DriverReceipt.objects.filter(cdr=original).exists():
            # Its original billed nobody (a second bill of a charge the CPO now withdraws, a total staff must
            # look at): refunded, the driver would get back what was never taken.
            flags.append("original_held")
    audit = _save(
        cdr,
        {
            "status": CdrAudit.Status.REVIEW if flags else CdrAudit.Status.CREDIT,
            "currency": cdr.currency,
            "cpo_breakdown": _cpo_breakdown(cdr),
            "our_breakdown": {},
            "flags": flags,
        },
    )
    if original is None:
        return audit
    withdrawing = "original_held" in flags and cdr.currency == original.currency and "over_credit" not in flags
    if withdrawing and _withdrawn(original, CdrAudit.objects.filter(cdr=original).first()):
        _mark_withdrawn(original)
        audit.flags = CdrAudit.objects.get(cdr=cdr).flags
    if audit.status == CdrAudit.Status.CREDIT:
        # A held credit refunded nobody: it settles no dispute (one had moved to CREDITED, and nobody got the
        # difference back).
        _dispute_settled_by_credits(original, cdr)
    return audit


def _refunding_credits(original: Cdr) -> QuerySet[Cdr]:
    """The original's credit CDRs that gave money back: audited CREDIT (not held), in the original's currency."""
    return Cdr.objects.filter(
        credited_cdr=original, credit=True, audit__status=CdrAudit.Status.CREDIT, currency__iexact=original.currency
    )


def _dispute_settled_by_credits(original: Cdr, credit: Cdr) -> None:
    """The original's open dispute is settled by `credit` when the original and the credit CDRs that gave money
    back (`_refunding_credits`) now net to our price (as `agrees` weighs a CDR's amounts). A held credit, or
    one in another currency, refunded nobody: counted, a held −1.00 INR credit had closed a 1.00 EUR dispute as
    CREDITED, its credit limit 0, and nobody got the difference back."""
    dispute = Dispute.objects.filter(cdr=original, state__in=Dispute.OPEN_STATES).first()
    original_audit = CdrAudit.objects.filter(cdr=original).first()
    if dispute is not None and original_audit is not None and original_audit.computed_excl_vat is not None:
        given_back = _refunding_credits(original).values_list("total_cost_excl_vat", flat=True)
        net = original.total_cost_excl_vat + sum(given_back, Decimal("0"))
        tolerance = partner_terms(original.partner).audit_tolerance
        if agrees(net, original_audit.computed_excl_vat, original.currency, tolerance):
            disputes.dispute_settled_by_credit_cdr(dispute=dispute, credit_cdr=credit)


def _token_differs(credit: Cdr, original: Cdr) -> bool:
    """Whether a credit CDR names a token of ours of another driver than the one its original's receipt billed
    (mod_cdrs: the credit is "for the first CDR", of the same charge). Refunded, the credit went to that other
    driver's account while the one who paid still owed the charge the CPO voided. An original without a receipt
    billed nobody (`original_held`); one whose driver is gone has no driver to compare with: held too."""
    token = cdr_token_of_ours(credit)
    if token is None:
        return False
    payers = list(DriverReceipt.objects.filter(cdr=original).values_list("driver_id", flat=True))
    return bool(payers) and payers[0] != token.driver_id


def _credited(cdr: Cdr) -> Cdr | None:
    """The CDR a credit CDR corrects. Linked when the credit was stored if the original was there; one that
    arrived in between (the credit stored, not yet processed) is linked now."""
    if cdr.credited_cdr_id is not None:
        return cdr.credited_cdr
    if not cdr.credit_reference_id:
        return None
    key = ci_key(cdr.country_code, cdr.party_id, cdr.credit_reference_id)
    original = first_where(Cdr, "t.ocpi_key = %s AND t.credit = %s", [key, False])
    if original is not None:
        Cdr.objects.filter(pk=cdr.pk).update(credited_cdr=original)
        cdr.credited_cdr = original
    return original


def _over_credits(cdr: Cdr, original: Cdr) -> bool:
    """Whether this credit, with the other credits of the same original that have given money back (their
    receipts: not those held, whichever came first), gives back more than the original billed, excl. or incl.
    VAT. Counting by arrival order instead let a credit that waited for its original be refunded after a later
    one already was: the driver got the bill back twice.

    An original that billed nobody (no receipt: held) has credits that give nothing back (original_held): each
    of them audited before, of its currency, counts (they withdraw it together, `_withdrawn`). Counting only
    those with receipts counted none: −4 and −4 on 5 were taken for a withdrawal, and the statement paid the
    CPO −3.30 the ledger never booked."""
    if DriverReceipt.objects.filter(cdr=original).exists():
        given_back = set(DriverReceipt.objects.filter(cdr__credited_cdr=original).values_list("cdr_id", flat=True))
        others = Cdr.objects.filter(credited_cdr=original, pk__in=given_back)
    else:
        others = Cdr.objects.filter(credited_cdr=original, credit=True, audit__isnull=False, currency=original.currency)
    net_excl, net_incl = _net(original, [*others.exclude(pk=cdr.pk), cdr])
    return net_excl < 0 or net_incl < 0


def _net(original: Cdr, credits: Iterable[Cdr]) -> tuple[Decimal, Decimal]:
    """What the original and these credit CDRs of it come to, excl. and incl. VAT (a total without its amount
    incl. VAT counted at the one excl.)."""

    def incl(c: Cdr) -> Decimal:
        return c.total_cost_incl_vat if c.total_cost_incl_vat is not None else c.total_cost_excl_vat

    net_excl, net_incl = original.total_cost_excl_vat, incl(original)
    for credit in credits:
        net_excl += credit.total_cost_excl_vat
        net_incl += incl(credit)
    return net_excl, net_incl


def cdr_process(cdr_id: int, now: datetime | None = None) -> CdrAudit | None:
    """Everything that follows a new CDR, exactly once: the audit, the driver's receipt, the booking settled
    and the BAP told. A worker claims the CDR first (another holding it, or done with it, means nothing to do
    here); a worker stopped half-way leaves a claim that expires after WORK_LEASE_SECONDS, and
    `cdrs_process_due` hands the CDR on. All effects commit together with processed_at."""
    now = now or timezone.now()
    lease = timedelta(seconds=settings.WORK_LEASE_SECONDS)
    claimed = (
        Cdr.objects.filter(pk=cdr_id, processed_at__isnull=True)
        .filter(Q(claimed_at__isnull=True) | Q(claimed_at__lt=now - lease))
        .update(claimed_at=now)
    )
    if not claimed:
        return None
    with transaction.atomic(), terms_remembered():
        cdr = locked_cdr(cdr_id)
        if cdr is None or cdr.processed_at is not None:
            return None  # finished by a worker whose claim had expired (slow, not stopped)
        if not cdr.credit and cdr.charging_session_id is None:
            _link_session(cdr)
            start = _booking_start(cdr) if cdr.charging_session_id is None else None
            if start is not None and cdr.received_at >= now - SESSION_GRACE:
                # Put off for its session: the claim stays, and the sweep hands the CDR on once it expires (or at
                # once when its session comes and clears it: emsp/services/sessions.py).
                return None
            if start is not None:
                _session_made(cdr, start)
        if not cdr.credit and cdr.charging_session_id is not None and (cdr.total_energy or 0) > 0:
            session_billed_energy(cdr.charging_session)  # a reservation's session that charged after all
        if _earlier_awaited(cdr, now):
            return None  # put off likewise: the sweep hands it on again once its claim expires
        audit = cdr_audit(cdr)
        _bill(cdr, audit)
        if cdr.credit:
            _bill_second_bills(cdr, audit)
        else:
            for credit in _credits_waiting_for(cdr):
                # Its credits that came first, audited before it was here: audited again, now against it.
                _bill_credit(credit, _audit_credit(credit))
            booking_settled(cdr)
        Cdr.objects.filter(pk=cdr.pk).update(processed_at=timezone.now())
    _waiting_handed_on(cdr)
    return audit


def _waiting_handed_on(cdr: Cdr) -> None:
    """The CDRs put off for this one (`_earlier_awaited`: a later CDR of its charge, a credit of it) have their
    claim cleared: the beat's sweep takes them on its next run, not once their claim expires (two minutes on).
    After the commit: a worker processing one of them holds its row while it waits for this one's locks, and an
    UPDATE of that row inside this transaction had deadlocked the two."""
    waiting = Q(credit=True, credited_cdr_id=cdr.pk)
    session = cdr.charging_session if cdr.charging_session_id is not None and not cdr.credit else None
    if session is not None and session.booking_id is not None:
        waiting |= Q(charging_session__booking_id=session.booking_id, credit=False, pk__gt=cdr.pk)
    elif session is not None:
        waiting |= Q(charging_session_id=session.pk, credit=False, pk__gt=cdr.pk)
    Cdr.objects.filter(waiting, processed_at__isnull=True, claimed_at__isnull=False).update(claimed_at=None)


def _earlier_awaited(cdr: Cdr, now: datetime) -> bool:
    """Must this CDR wait for another one stored before it and not processed yet? A credit waits for the CDR
    it corrects, a CDR for the earlier CDRs of its charge. Processed the other way round, a credit gave back what
    its original had not taken yet (without our fee on it, which the original then took; all of it for nothing
    when the original was then held), and a corrected CDR billed first made its original, processed after it, a
    second bill: the driver got back 448.40 never taken. Both happen when the original is put off for its session
    (`_booking_start`) or its task runs late. The claim stays; the sweep hands the CDR on again once it expires
    (WORK_LEASE_SECONDS).

    A credit waits for its original's audit (written with its processing) as long as that takes: refunded
    before it, the driver could get back what is never taken. A CDR waits for an earlier one of its charge for
    SESSION_GRACE at most, then is billed as the charge's first (the earlier one, should it come after all, is
    held as a second bill). The original's row, else the charge's (`charge_locked`), is locked first: one being
    processed at this moment is waited for, and found processed."""
    if cdr.credit:
        original = _credited(cdr)
        if original is None:
            return False  # not here yet: audited as unknown_original, and again once it comes
        locked_cdr(original.pk)
        return not CdrAudit.objects.filter(cdr_id=original.pk).exists()
    if cdr.charging_session_id is None or cdr.received_at < now - SESSION_GRACE:
        return False
    charge = charge_locked(cdr.charging_session)
    return Cdr.objects.filter(charge, credit=False, processed_at__isnull=True, pk__lt=cdr.pk).exists()


def booking_settled(cdr: Cdr) -> None:
    """The booking is settled; the driver's app gets the final bill."""
    booking = bookings.on_cdr(cdr.charging_session)
    if booking is not None:
        events.publish(events.BookingSettled(booking))


def _link_session(cdr: Cdr) -> None:
    """Tie a CDR stored before its session to the session, now here (records.cdr_store linked what it could)."""
    session = session_of_charge(
        cdr.partner_id,
        cdr.country_code,
        cdr.party_id,
        cdr.session_id,
        str(cdr.data.get("authorization_reference") or ""),
    )
    if session is not None:
        Cdr.objects.filter(pk=cdr.pk).update(charging_session=session)
        cdr.charging_session = session


def _booking_start(cdr: Cdr) -> Command | None:
    """The START_SESSION of one of our bookings whose charge this CDR bills, if its session is not here: one of
    our tokens, its authorization_reference that of a START_SESSION we sent this partner for a booking. Billed
    as it came, it would be an off-order charge on the driver's account while the booking's hold stayed authorised:
    it is put off for SESSION_GRACE for its session, then bills the booking through a session made of it. A CDR
    without such a reference (an RFID charge) is billed as it comes."""
    if not cdr.token_uid or not token_is_ours(cdr.data.get("cdr_token") or {}):
        return None
    command = start_command(
        cdr.partner_id,
        str(cdr.data.get("authorization_reference") or ""),
        country_code=cdr.country_code,
        party_id=cdr.party_id,
    )
    return command if command is not None and command.booking_id is not None else None


def _session_made(cdr: Cdr, start: Command) -> None:
    """A CDR of a booking's charge whose session the CPO never reported (a CPO without the Sessions module:
    mod_sessions is optional) bills the booking through a session made of it (sessions.session_from_cdr). Only
    for a start of a booking that holds no session: a booking with one (or two) is not guessed at, nor a start
    with a session that the CDR does not name. The start's and the booking's rows are locked first: two CDRs of
    one start processed at once are weighed one after the other, the second tied to the session the first made
    (`_link_session`), and held as its second bill, not billed as the first of a session of its own."""
    # The key of the session it names first (a CPO's PUT of that session takes it before its INSERT), then the
    # start command's row before the booking's, as a CPO's Session PUT takes them (sessions._after_save ties the
    # command, then on_session_changed the booking): either way round, the two had deadlocked.
    if cdr.session_id:
        new_key_locked(session_key(cdr.country_code, cdr.party_id, cdr.session_id))
    list(Command.objects.select_for_update().filter(pk=start.pk).values_list("pk", flat=True))
    # The booking FOR NO KEY UPDATE, as `charge_locked` takes it (a row inserted that refers to it is not held up).
    list(Booking.objects.select_for_update(no_key=True).filter(pk=start.booking_id).values_list("pk", flat=True))
    _link_session(cdr)
    if cdr.charging_session_id is not None:
        return
    if Command.objects.filter(pk=start.pk, session__isnull=False).exists():
        return
    if ChargingSession.objects.filter(booking_id=start.booking_id).exists():
        return
    session = session_from_cdr(cdr.partner, (cdr.country_code, cdr.party_id), cdr.pk, cdr.data)
    Cdr.objects.filter(pk=cdr.pk).update(charging_session=session)
    cdr.charging_session = session


def _bill_credit(credit: Cdr, audit: CdrAudit) -> None:
    """A credit CDR's refund, and the second bills of its charge that it lets through."""
    _bill(credit, audit)
    _bill_second_bills(credit, audit)


def _bill_second_bills(credit: Cdr, audit: CdrAudit) -> None:
    """A credit CDR that voids its original (or withdraws one held for review: `_withdrawn`) lets the CDRs held
    as second bills of the same charge (`duplicate_session_cdr`: the CPO's new CDR came before the credit for the
    first) be billed, whatever their audit's status (one we could not price is UNPRICEABLE): each audited
    again, oldest first (a third is still held as a second bill of the one billed now), and its booking settled
    with the new bill. In the credit's transaction, under the original's lock (`_audit_credit`) and the charge's
    (`charge_locked`): a second CDR being processed at the same moment is either processed first, and found
    here, or waits and sees the original voided. A held CDR whose row another transaction holds is being
    withdrawn by a credit of its own (only credits lock a processed CDR): it is skipped, not waited for."""
    original = credit.credited_cdr if credit.credited_cdr_id is not None else None
    if original is None or original.charging_session_id is None:
        return
    if audit.status != CdrAudit.Status.CREDIT and "original_held" not in audit.flags:
        return  # held for a reason of its own (another eMSP's token, beyond what the original billed)
    held = (
        Cdr.objects.filter(charge_locked(original.charging_session), credit=False, processed_at__isnull=False)
        .exclude(pk=original.pk)
        .order_by("pk")
        .values_list("pk", "audit__flags")
    )
    for pk, flags in list(held):
        if "duplicate_session_cdr" not in (flags or []) or DriverReceipt.objects.filter(cdr_id=pk).exists():
            continue
        cdr = locked_cdr(pk, skip_locked=True)
        if cdr is None or Cdr.objects.filter(credited_cdr_id=pk).exists():
            continue  # withdrawn by a credit of its own (held with it): nothing to bill
        audit_again = cdr_audit(cdr)
        if HELD.intersection(audit_again.flags):
            continue
        _bill(cdr, audit_again)
        booking_settled(cdr)


def _bill(cdr: Cdr, audit: CdrAudit) -> None:
    """The driver's receipt for a CDR and its booking in the ledger, unless the audit holds it for review."""
    if HELD.intersection(audit.flags):
        return
    receipt = receipt_for_cdr(cdr)
    if receipt is not None:
        payments.bill(receipt)  # the ledger entries and the collection, with the receipt
        # The driver's numbered PDF, after commit: the number's row lock stays out of CDR processing.
        run_after_commit("billing.tasks.issue_receipt", receipt.pk)


def _credits_waiting_for(original: Cdr) -> list[Cdr]:
    """Credit CDRs of this CDR that were processed before it arrived (audited "unknown_original", their refunds
    held), linked to it now and locked. One indexed statement for a CDR without any: the audits for review."""
    waiting = Cdr.objects.filter(
        audit__status=CdrAudit.Status.REVIEW,
        credit=True,
        credited_cdr__isnull=True,
        country_code=original.country_code,
        party_id=original.party_id,
    ).only("pk", "country_code", "party_id", "credit_reference_id")
    found = []
    for credit in waiting:
        if ci_key(credit.country_code, credit.party_id, credit.credit_reference_id) != original.ocpi_key:
            continue
        locked = locked_cdr(credit.pk)
        if locked is None or locked.credited_cdr_id is not None or DriverReceipt.objects.filter(cdr=locked).exists():
            continue
        Cdr.objects.filter(pk=locked.pk).update(credited_cdr=original)
        locked.credited_cdr = original
        found.append(locked)
    return found


def locked_cdr(cdr_id: int, *, skip_locked: bool = False) -> Cdr | None:
    """The CDR with its CPO, its row locked until the transaction ends, in one plain statement (the ORM's
    select_for_update().select_related() get was a quarter of a CDR's processing CPU in a profile, compiling a
    three-table join; the credited CDR, there only for credits, loads when read). With `skip_locked`, None for
    a CDR another transaction holds, instead of waiting for it."""
    with connection.cursor() as cursor:
        cursor.execute(_locked_cdr_sql(connection.vendor, skip_locked), [cdr_id])
        row = cursor.fetchone()
    if row is None:
        return None
    cdr = model_from_row(Cdr, row)
    Cdr.partner.field.set_cached_value(cdr, model_from_row(Partner, row[len(Cdr._meta.concrete_fields) :]))  # type: ignore[attr-defined]
    if cdr.credited_cdr_id is None:
        Cdr.credited_cdr.field.set_cached_value(cdr, None)  # type: ignore[attr-defined]
    return cdr


@functools.cache
def _locked_cdr_sql(vendor: str, skip_locked: bool = False) -> str:
    """locked_cdr's statement, made once per database vendor (row locks where it has them)."""
    lock = " FOR UPDATE OF t" if connection.features.has_select_for_update_of else ""
    if lock and skip_locked and connection.features.has_select_for_update_skip_locked:
        lock += " SKIP LOCKED"
    return (
        f"SELECT {select_columns(Cdr, 't')}, {select_columns(Partner, 'p')} FROM {Cdr._meta.db_table} t "  # noqa: S608
        f"JOIN {Partner._meta.db_table} p ON p.id = t.partner_id WHERE t.id = %s{lock}"
    )


def credits_waiting_resolve(limit: int = 200) -> int:
    """Credit CDRs held as `unknown_original` whose original has since been processed: audited and billed against
    it now. The original's processing does this for the credits it sees; one audited while the original was
    being stored and processed (neither saw the other uncommitted) was held for good. Returns how many."""
    held = (
        Cdr.objects.filter(credit=True, credited_cdr__isnull=True, audit__status=CdrAudit.Status.REVIEW)
        .exclude(credit_reference_id="")
        .only("pk", "country_code", "party_id", "credit_reference_id")[:limit]
    )
    resolved = 0
    for credit in held:
        key = ci_key(credit.country_code, credit.party_id, credit.credit_reference_id)
        original = first_where(Cdr, "t.ocpi_key = %s AND t.credit = %s", [key, False])
        if original is None or original.processed_at is None:
            continue
        with transaction.atomic(), terms_remembered():
            locked = locked_cdr(original.pk)  # as its processing does: the original first, then its credits
            if locked is None:
                continue
            for waiting in _credits_waiting_for(locked):
                _bill_credit(waiting, _audit_credit(waiting))
                resolved += 1
    return resolved


# A new CDR's task may be lost with the worker that held it; after this long, the sweep queues it again.
UNPROCESSED_GRACE = timedelta(seconds=30)


def cdrs_process_due(now: datetime | None = None, limit: int = 500) -> list[int]:
    """CDRs that should have been processed by now: never claimed within the grace period (their task was
    lost), or claimed by a worker that stopped (the claim expired). Returns their ids, to be queued."""
    now = now or timezone.now()
    lease = timedelta(seconds=settings.WORK_LEASE_SECONDS)
    due = Cdr.objects.filter(processed_at__isnull=True, received_at__lt=now - UNPROCESSED_GRACE).filter(
        Q(claimed_at__isnull=True) | Q(claimed_at__lt=now - lease)
    )
    return list(due.order_by("received_at").values_list("pk", flat=True)[:limit])


# --- a CDR audited before its tariff came ----------------------------------------------------------------------

# The flags a late tariff's audit looks up afresh, as a first audit does. Every other flag of the first audit stands
# as it was (a hold, a staff member's release): the bill was decided by them, and a tariff changes none of it.
LOOKED_UP = frozenset({"no_session", "unknown_location", NO_TARIFF, TARIFF_CURRENCY})

# How much later than a tariff's arrival (its received_at) a CDR's audit may be timed and still have missed it: a
# CDR processed while the tariff was being stored read the tariffs before the tariff's commit, but is timed after
# its received_at, set before that commit; and the hosts' clocks differ a little.
LATE_TARIFF_MARGIN = timedelta(minutes=5)

# The most CDRs one run of the task or the beat's sweep audits again; the sweep takes the rest on its next runs.
LATE_TARIFF_BATCH = 200
# A tariff's task audits the waiting CDRs of its party whose periods name it (up to this many tariffs stored at
# once: a PUT's one, a pull's page; beyond, the oldest waiting CDRs of their parties). Their periods are read by
# primary key, this many CDRs a query, over every waiting CDR of the party: no limit before that sieve (one taken
# before it, the 2,000 oldest, had a party's CDRs naming tariffs that never came hide the ones naming this one).
NAMED_TARIFFS_SIEVED = 50
SIEVED_AT_ONCE = 500
# The beat's sweep reads the periods of this many waiting CDRs a run at most: those a tariff they name is still
# missing for are timed anew at once (they leave the sweep until another tariff of their party comes), and of the
# others LATE_TARIFF_BATCH are audited again.
LATE_TARIFF_LOOKED_AT = 2_000


def _awaits_tariff(audit: CdrAudit | None) -> bool:
    """In review for want of a tariff, and a tariff may still decide it: not accepted as billed by staff (their
    decision stands), nor withdrawn by credit CDRs (settled, nothing owed either way)."""
    if audit is None or audit.status != CdrAudit.Status.REVIEW:
        return False
    flags = audit.flags or []
    return NO_TARIFF in flags and ACCEPTED not in flags and WITHDRAWN not in flags


def cdrs_awaiting_tariffs(*, tariff_ids: Iterable[int] | None = None, limit: int = LATE_TARIFF_BATCH) -> list[int]:
    """CDRs in review for want of a tariff (`_awaits_tariff`) whose party has had a tariff stored since they were
    audited (or up to LATE_TARIFF_MARGIN before): their ids, the oldest audit first, `limit` at most. Each is for
    `cdr_audit_late_tariff` to look at, which audits it again or, no tariff it names being here, times it anew:
    it then leaves this list until another tariff of its party comes (a CPO that names tariffs it never sends has
    its CDRs looked at once after each tariff it does send, not at every run). A CDR whose periods name several
    tariffs is audited again once every one of them is here, and waits until then.

    With `tariff_ids` (a tariff stored, a pull's page), those of these tariffs' parties (case-insensitive, as
    ci_key) whose periods name one of them: the beat's sweep looks at the others. Only the CDRs the cheap columns
    chose have their periods read, as JSON text, by primary key: a filter on every CDR's `data` could have the
    database read the whole table."""
    waiting = (
        Cdr.objects.filter(
            credit=False,
            processed_at__isnull=False,
            audit__status=CdrAudit.Status.REVIEW,
            # The quoted flag, as the admin's filter: portable JSON text (SQLite has no JSON containment lookup).
            audit__flags__icontains=f'"{NO_TARIFF}"',
        )
        .exclude(audit__flags__icontains=f'"{ACCEPTED}"')
        .exclude(audit__flags__icontains=f'"{WITHDRAWN}"')
    )
    party_tariffs = Tariff.objects.annotate(cc=Upper("country_code"), pid=Upper("party_id"))
    since = party_tariffs.filter(
        cc=Upper(OuterRef("country_code")),
        pid=Upper(OuterRef("party_id")),
        received_at__gte=OuterRef("audit__audited_at") - LATE_TARIFF_MARGIN,
    )
    due = waiting.filter(Exists(since)).order_by("audit__audited_at", "pk").values_list("pk", flat=True)
    if tariff_ids is None:
        return list(due[:limit])
    stored = list(party_tariffs.filter(pk__in=list(tariff_ids)).values_list("cc", "pid", "tariff_id"))
    if not stored:
        return []
    of_parties = Q()
    for country_code, party_id in {(cc, pid) for cc, pid, _ in stored}:
        of_parties |= Q(country_code__iexact=country_code, party_id__iexact=party_id)
    if len(stored) > NAMED_TARIFFS_SIEVED:
        return list(due.filter(of_parties)[:limit])
    waiting_of_parties = list(due.filter(of_parties))  # ids only, every one: the sieve comes before the limit
    naming = Q()
    for tariff_id in {tariff_id for _, _, tariff_id in stored}:
        naming |= Q(data__charging_periods__icontains=f'"{tariff_id}"')  # a sieve: the lock's look decides
    found: list[int] = []
    for start in range(0, len(waiting_of_parties), SIEVED_AT_ONCE):
        chunk = waiting_of_parties[start : start + SIEVED_AT_ONCE]
        named = set(Cdr.objects.filter(naming, pk__in=chunk).values_list("pk", flat=True))
        found += [pk for pk in chunk if pk in named]
        if len(found) >= limit:
            break
    return found[:limit]


def cdr_audit_late_tariff(cdr_id: int) -> CdrAudit | None:
    """Audit again, with the tariffs we hold now, a CDR audited in review for want of one (`_awaits_tariff`): priced
    as a first audit prices it, its flags those of its first audit but the ones looked up afresh (LOOKED_UP), a
    difference disputed with the CPO as a new CDR's is (a dispute moves no money when it opens) unless the tariff is
    a version later than the charge (TARIFF_NEWER). Nothing is billed, refunded or booked: the receipt, the payments
    and the ledger stay as the CDR's processing left them (billed as the CPO priced it, or held). A CDR whose credit
    CDRs already net it to our price has its new dispute settled by them, as the credit's processing would have; one
    they voided (`voided_by_credits`) has a difference recorded (VOIDED), not disputed. Under the CDR's row lock,
    as its processing, a credit of it, a release and an acceptance take it: None when it is no longer waiting
    (audited again, accepted), or a tariff it names has not come (then timed anew, no_tariff kept, the ids still
    missing noted: priced with some of its tariffs only, it had been audited once, inexactly, and never again when
    the others came)."""
    with transaction.atomic(), terms_remembered():
        cdr = locked_cdr(cdr_id)
        if cdr is None or cdr.credit or cdr.processed_at is None:
            return None
        audit = CdrAudit.objects.filter(cdr_id=cdr.pk).first()
        if audit is None or not _awaits_tariff(audit):
            return None
        tariffs = _stored_tariffs(cdr)
        held = {tariff.ocpi_key for tariff in tariffs}
        missing = sorted(i for i in _named_tariff_ids(cdr) if ci_key(cdr.country_code, cdr.party_id, i) not in held)
        if not tariffs or missing:
            CdrAudit.objects.filter(pk=audit.pk).update(
                audited_at=timezone.now(), error=_waiting_note(missing, bool(tariffs))
            )
            return None
        flags = ["no_session"] if cdr.charging_session_id is None else []
        flags += [flag for flag in audit.flags if flag not in LOOKED_UP]
        zone = _time_zone(cdr, flags)
        newer = any(tariff.last_updated > cdr.start_date_time for tariff in tariffs)
        audit = _audit_priced(
            cdr, flags, zone, [t.data for t in tariffs], tariffs_newer=newer, voided=voided_by_credits(cdr)
        )
        if audit.status == CdrAudit.Status.MISMATCH:
            credit = _refunding_credits(cdr).filter(processed_at__isnull=False).order_by("pk").last()
            if credit is not None:
                _dispute_settled_by_credits(cdr, credit)
    return audit


def _waiting_note(missing: list[str], some_held: bool) -> str:
    """The audit's error while the CDR waits: the tariff ids it names that are not here yet, when some are."""
    return f"no tariff to price with: waiting for {', '.join(missing)}" if some_held else "no tariff to price with"


def _still_waiting(cdr_ids: list[int]) -> set[int]:
    """Of these waiting CDRs, those a tariff their periods name is still missing for: timed anew, as
    `cdr_audit_late_tariff` times them, in one update per note (their periods read SIEVED_AT_ONCE at a time, the
    tariffs looked up by key), without locking each. An audit done since (no longer REVIEW no_tariff) is left."""
    waiting: dict[str, list[int]] = {}
    for start in range(0, len(cdr_ids), SIEVED_AT_ONCE):
        chunk = Cdr.objects.filter(pk__in=cdr_ids[start : start + SIEVED_AT_ONCE]).values_list(
            "pk", "country_code", "party_id", "data__charging_periods"
        )
        named = {
            pk: {ci_key(cc, pid, tariff_id): tariff_id for tariff_id in _tariff_ids_of(periods)}
            for pk, cc, pid, periods in chunk
        }
        keys = {key for ids in named.values() for key in ids}
        held = set(Tariff.objects.filter(ocpi_key__in=list(keys)).values_list("ocpi_key", flat=True))
        for pk, ids in named.items():
            missing = sorted(tariff_id for key, tariff_id in ids.items() if key not in held)
            if missing or not ids:
                waiting.setdefault(_waiting_note(missing, len(missing) < len(ids)), []).append(pk)
    now = timezone.now()
    for note, pks in waiting.items():
        CdrAudit.objects.filter(
            cdr_id__in=pks, status=CdrAudit.Status.REVIEW, flags__icontains=f'"{NO_TARIFF}"'
        ).update(audited_at=now, error=note)
    return {pk for pks in waiting.values() for pk in pks}


def cdrs_audit_late_tariffs(*, tariff_ids: Iterable[int] | None = None, limit: int = LATE_TARIFF_BATCH) -> int:
    """Audit again the CDRs waiting for a tariff that may have come (`cdrs_awaiting_tariffs`), each in a
    transaction of its own. Returns how many were audited again. The beat's sweep (no `tariff_ids`) looks at
    LATE_TARIFF_LOOKED_AT of them, and times anew at once those a tariff they name is still missing for
    (`_still_waiting`): its batch is spent on CDRs it can price (2,001 CDRs naming a tariff that never came had it
    look at 200 a run, 11 runs, before one whose tariff had come). A CDR whose audit fails is logged and timed
    anew, its audit as it was: the others go on (one that failed, never timed anew, stayed the oldest and stopped
    every later run, of every party, on itself), and it is looked at again when another tariff of its party
    comes."""
    audited = 0
    if tariff_ids is None:
        looked_at = cdrs_awaiting_tariffs(limit=LATE_TARIFF_LOOKED_AT)
        still_waiting = _still_waiting(looked_at)
        cdr_ids = [pk for pk in looked_at if pk not in still_waiting][:limit]
    else:
        cdr_ids = cdrs_awaiting_tariffs(tariff_ids=tariff_ids, limit=limit)
    for cdr_id in cdr_ids:
        try:
            audited += cdr_audit_late_tariff(cdr_id) is not None  # its transaction (a savepoint in one) undone
        except Exception as exc:
            log.exception("CDR %s: its audit with a late tariff failed; timed anew", cdr_id)
            CdrAudit.objects.filter(cdr_id=cdr_id).update(
                audited_at=timezone.now(), error=f"audit with a late tariff failed: {type(exc).__name__}"
            )
    return audited


# --- a CDR in review accepted as billed ------------------------------------------------------------------------


@dataclass(frozen=True)
class Acceptance:
    """What became of one CDR staff asked to accept as billed: accepted now, else why not."""

    cdr_id: int
    label: str  # the CPO's id of the CDR, for the message
    accepted: bool = False
    reason: str = ""


def acceptance_refusal(cdr: Cdr, audit: CdrAudit | None) -> str:
    """Why staff may not accept this CDR as billed, "" when they may: only a processed CDR whose audit is in
    REVIEW or UNPRICEABLE without a held flag (no_session, no_tariff, unknown_location, inexact_reprice,
    tax_rate_unknown, tariff_currency_differs, unpriceable), whose driver was billed (its receipt) and which no
    open dispute is about. A held CDR billed nobody: accepted, its settlement would pay the CPO what the ledger never
    booked."""
    if cdr.processed_at is None:
        return "it is not processed yet: its audit decides first"
    if audit is None:
        return "it has no audit"
    if ACCEPTED in (audit.flags or []):
        return "it was accepted as billed already"
    if audit.status not in (CdrAudit.Status.REVIEW, CdrAudit.Status.UNPRICEABLE):
        return f"its audit is {audit.status}: only a CDR in review or unpriceable is accepted as billed"
    held = HELD.intersection(audit.flags or [])
    if held:
        return f"it is held as {', '.join(sorted(held))}: no driver was billed for it"
    if not DriverReceipt.objects.filter(cdr_id=cdr.pk).exists():
        return "no driver was billed for it (no receipt): nothing of it is booked to the CPO"
    if Dispute.objects.filter(cdr_id=cdr.pk, state__in=Dispute.OPEN_STATES).exists():
        return "it has an open dispute: the dispute decides"
    return ""


def accept_as_billed(cdr_id: int, staff_user: Any) -> Acceptance:
    """Staff accept the CPO's bill of a CDR in review as billed (the driver paid it, the ledger owes it to the
    CPO): its audit notes ACCEPTED, and the settlement counts it as matching, so its period can close (it had
    been carried over month after month, with no dispute or action to settle it). Under the CDR's row lock, as
    its processing and a release take it; recorded in the audit's admin history and the staff audit trail, in
    the same transaction."""
    if getattr(staff_user, "pk", None) is None:
        return Acceptance(cdr_id, str(cdr_id), reason="no staff member to record it against")
    with transaction.atomic():
        cdr = locked_cdr(cdr_id)
        if cdr is None:
            return Acceptance(cdr_id, str(cdr_id), reason="no such CDR")
        audit = CdrAudit.objects.filter(cdr_id=cdr.pk).first()
        reason = acceptance_refusal(cdr, audit)
        if reason or audit is None:
            return Acceptance(cdr.pk, cdr.cdr_id, reason=reason or "it has no audit")
        before = list(audit.flags or [])
        audit.flags = [*before, ACCEPTED]
        CdrAudit.objects.filter(pk=audit.pk).update(flags=audit.flags)
        audit.cdr = cdr
        note = f"Accepted CDR {cdr.cdr_id} as billed (audit {audit.status}, flags {', '.join(before) or '-'})"
        LogEntry.objects.log_actions(
            user_id=staff_user.pk, queryset=[audit], action_flag=CHANGE, change_message=note, single_object=True
        )
        staff_action_record(
            user=staff_user,
            verb="accept_cdr_as_billed",
            obj=audit,
            details={
                "cdr": cdr.cdr_id,
                "status": audit.status,
                "flags": before,
                "cpo_total_excl_vat": str(cdr.total_cost_excl_vat),
                "computed_excl_vat": None if audit.computed_excl_vat is None else str(audit.computed_excl_vat),
                "currency": cdr.currency,
            },
        )
    return Acceptance(cdr.pk, cdr.cdr_id, accepted=True)
