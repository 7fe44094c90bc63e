"""What drivers pay: quotes for a planned charge, running estimates of a session, and receipts of a completed
one. Driver price = the CPO's price plus our fee (flat and/or a markup, per partner), each with VAT."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.utils import timezone

from billing import pricing, tariff_cache
from billing.models import Cdr, DriverReceipt, PartnerTerms, Quote, Tariff
from billing.money import MAX_AMOUNT, round_money
from emsp.inserts import insert, insert_if_absent
from emsp.models import ChargingSession, Connector, Driver, Evse, Partner, Token, ci_key
from emsp.rows import all_where, first_where
from emsp.services.bookings import reserve_lead
from emsp.services.sessions import token_is_ours

ZERO = Decimal("0")
HUNDRED = Decimal("100")
QUOTE_TTL = timedelta(minutes=15)
DEFAULT_AC_POWER_KW = Decimal("7.4")


class NoTariff(Exception):
    """The connector has no tariff we know: the price is unknown (never guessed)."""


def implausible_amount(*amounts: Decimal | None) -> Decimal | None:
    """The first amount beyond what one charge can cost (MAX_AMOUNT, what the OCPI receiver accepts of a CDR's
    totals), None when there is none. A price we work out is checked before it is stored: a tariff the normaliser
    accepts (a unit price up to 10**6) priced over a charge it accepts (up to 10**5 kWh; a quote's energy, a
    10 MW connector's over a day) comes to far more, beyond the money columns (numeric(14, 4): below 10**10). Such
    a price is no price: stored, it failed its INSERT (numeric field overflow) on every try."""
    return next((amount for amount in amounts if amount is not None and abs(amount) > MAX_AMOUNT), None)


# A CPO's terms, read once per `terms_remembered()` block (processing one CDR asks for them three times: the
# audit's tolerance, the receipt's fee, the ledger's split).
_terms_memo: ContextVar[dict[int, PartnerTerms] | None] = ContextVar("partner_terms", default=None)


@contextmanager
def terms_remembered() -> Iterator[None]:
    token = _terms_memo.set({})
    try:
        yield
    finally:
        _terms_memo.reset(token)


def partner_terms(partner: Partner) -> PartnerTerms:
    memo = _terms_memo.get()
    if memo is not None and partner.pk in memo:
        return memo[partner.pk]
    terms = first_where(PartnerTerms, "t.partner_id = %s", [partner.pk])  # a CPO's terms: there, after its first
    if terms is None:
        terms, _ = PartnerTerms.objects.get_or_create(partner=partner)
    if memo is not None:
        memo[partner.pk] = terms
    return terms


@dataclass(frozen=True)
class Fee:
    excl_vat: Decimal
    vat: Decimal


def emsp_fee(terms: PartnerTerms, cpo_cost_excl_vat: Decimal, currency: str) -> Fee:
    """Our fee on a charge: a flat part plus a markup on the CPO's price excl. VAT, rounded for the currency (the
    partner's rounding), then its VAT on that, rounded too: an invoice line and its tax, as the ledger books them.
    Worked out at full precision and rounded only when booked, 7.0276 and 1.264968 of VAT had been booked as
    7.03 + 1.26, stored as 7.0276 + 1.2650 and printed on the receipt, from the stored row, as 7.03 + 1.27; and a
    settlement's margin (the sum of the unrounded fees) drifted from the fees the ledger booked."""
    excl = round_money(
        terms.fee_flat + max(cpo_cost_excl_vat, ZERO) * terms.fee_percent / HUNDRED, currency, terms.rounding
    )
    return Fee(excl_vat=excl, vat=round_money(excl * terms.fee_vat_percent / HUNDRED, currency, terms.rounding))


def driver_total(cpo_incl_vat: Decimal, fee: Fee, currency: str, rounding: str) -> Decimal:
    """What the driver pays: the CPO's price incl. VAT plus our fee and its VAT, rounded for the currency."""
    return round_money(cpo_incl_vat + fee.excl_vat + fee.vat, currency, rounding)


def tariffs_for_connector(connector: Connector, at: datetime) -> list[Tariff]:
    """The connector's tariffs valid at `at`, the regular (untyped) ones first (mod_tariffs TariffType).
    Valid as the pricing engine reads it: from start_date_time up to and including end_date_time ("the time
    after which this tariff is no longer valid")."""
    location = connector.evse.location
    keys = [ci_key(location.country_code, location.party_id, tariff_id) for tariff_id in connector.tariff_ids or []]
    # An EVSE read with the tariffs' generation (a Beckn item's, beckn/catalogue_rows.py::item_evse): its tariffs
    # come from the keep search uses (billing/tariff_cache.py), read only when that generation has not seen them;
    # without one (None) they are read. Either way valid_tariffs applies the one validity rule.
    generation = connector.evse.__dict__.get(tariff_cache.GENERATION_ATTRIBUTE)
    found = list(tariff_cache.valid_tariffs(set(keys), at, generation, _tariffs_by_key).values())
    return sorted(found, key=lambda t: (t.type not in ("", "REGULAR"), keys.index(t.ocpi_key)))


def _tariffs_by_key(keys: list[str]) -> list[Tariff]:
    """`Tariff.objects.filter(ocpi_key__in=keys)` in plain SQL: a select compiled that query twice (its item and
    its quote), 10 % of on_select's CPU in its profile; the rows become tariffs as the ORM builds them."""
    if not keys:
        return []
    return all_where(Tariff, f"t.ocpi_key IN ({', '.join(['%s'] * len(keys))})", keys)


def connector_power_kw(connector: Connector) -> Decimal:
    if connector.max_electric_power:
        return Decimal(connector.max_electric_power) / 1000
    return DEFAULT_AC_POWER_KW


def reservation_before(evse: Evse, arrival: datetime, now: datetime | None = None) -> timedelta | None:
    """The reservation a booking for `arrival` makes at the CPO: RESERVE_NOW some lead before the window for a
    RESERVABLE EVSE (emsp/services/bookings.py booking_confirm), held until the driver arrives. The tariff's
    reservation elements (mod_tariffs TariffRestrictions.reservation) price it; None when there is none."""
    if not evse.is_reservable:
        return None
    reserved = arrival - max(now or timezone.now(), arrival - reserve_lead())
    return reserved if reserved > timedelta(0) else None


def quote_charge(
    *,
    evse: Evse,
    connector: Connector,
    arrival: datetime,
    energy_kwh: Decimal | None = None,
    duration: timedelta | None = None,
    parking: timedelta = timedelta(0),
    driver: Driver | None = None,
) -> Quote:
    """Price a planned charge at a connector with the tariff engine and our fee; stored as a Quote. A booking's
    reservation before `arrival` (reservation_before) is priced too, on its own lines of the breakdown."""
    tariffs = tariffs_for_connector(connector, arrival)
    if not tariffs:
        raise NoTariff(f"connector {connector.connector_id} of {evse} has no known tariff")
    tariff = tariffs[0]
    location = evse.location
    try:
        result = pricing.quote(
            tariff.data,
            start=arrival,
            time_zone=location.time_zone,
            power_kw=connector_power_kw(connector),
            energy_kwh=energy_kwh,
            duration=duration,
            parking=parking,
            reservation=reservation_before(evse, arrival),
        )
    except pricing.PricingError as exc:
        # A tariff stored before the normaliser refused what the engine refuses (ocpi/normalize/tariffs.py), or a
        # charge beyond the engine's bounds: no price is known, which callers already answer (Beckn select too).
        raise NoTariff(f"tariff {tariff.tariff_id} can't be priced: {exc}") from exc
    cpo_excl = result.total_cost.excl_vat
    if cpo_excl is None:
        # 2.3.0 tax_included YES without `vat`: the price before taxes, on which our fee is set, is unknown.
        raise NoTariff(f"tariff {tariff.tariff_id} includes taxes at rates it does not state: no price before taxes")
    terms = partner_terms(location.partner)
    fee = emsp_fee(terms, cpo_excl, tariff.currency)
    cpo_incl = result.total_cost.incl_vat
    total = None if cpo_incl is None else driver_total(cpo_incl, fee, tariff.currency, terms.rounding)
    beyond = implausible_amount(cpo_excl, cpo_incl, fee.excl_vat, fee.vat, total)
    if beyond is not None:
        # No price (answered as an unknown one: Beckn select's QUOTE_UNAVAILABLE), never a Quote row that can't
        # be stored.
        raise NoTariff(f"tariff {tariff.tariff_id} prices this charge at {beyond}: beyond {MAX_AMOUNT}, no price")
    return insert(
        Quote(
            driver=driver,
            evse=evse,
            connector_id=connector.connector_id,
            tariff_id=tariff.tariff_id,
            tariff_snapshot=tariff.data,
            currency=tariff.currency,
            arrival_at=arrival,
            energy_kwh=energy_kwh,
            duration_minutes=int(duration.total_seconds() // 60) if duration is not None else None,
            parking_minutes=int(parking.total_seconds() // 60),
            cpo_cost_excl_vat=cpo_excl,
            cpo_cost_incl_vat=cpo_incl,
            fee_excl_vat=fee.excl_vat,
            fee_vat=fee.vat,
            total_incl_vat=total,
            breakdown=line_items(result, fee, tariff.currency, terms.rounding),
            valid_until=timezone.now() + QUOTE_TTL,
        )
    )  # plain SQL, as create() writes it (emsp/inserts.py)


class QuoteUnavailable(Exception):
    """There is no quote to book with, or it expired."""


def quote_usable(quote_id: int | None, now: datetime | None = None) -> Quote:
    """The quote a booking would use, if it is still valid. Raises QuoteUnavailable."""
    if quote_id is None:
        raise QuoteUnavailable("select this item first: there is no quote")
    quote = Quote.objects.get(pk=quote_id)
    if quote.valid_until < (now or timezone.now()):
        raise QuoteUnavailable("the quote expired: select again")
    return quote


def quote_hold(quote: Quote, *, driver: Driver) -> Quote:
    """The driver is committing to the quote: it is theirs, and holds for its ttl from now."""
    Quote.objects.filter(pk=quote.pk).update(driver=driver, valid_until=timezone.now() + QUOTE_TTL)
    quote.refresh_from_db()
    return quote


def quote_accept(quote: Quote) -> None:
    """The quote was booked (the receipt will show it next to the final bill)."""
    Quote.objects.filter(pk=quote.pk).update(accepted_at=timezone.now())


def line_items(result: pricing.PriceResult, fee: Fee, currency: str, rounding: str) -> dict[str, Any]:
    """A driver-facing breakdown: one line per priced dimension, our fee, VAT and the total."""
    lines = []
    units = {"ENERGY": "kWh", "FLAT": "session", "RESERVATION_FLAT": "reservation"}

    def money(amount: Decimal | None) -> str | None:
        return None if amount is None else str(round_money(amount, currency, rounding))

    for category, costs in result.breakdown.items():
        for cost in costs:
            unit_price: Decimal | None = cost.price
            if result.tax_included == "YES":
                # 2.3.0: the tariff's unit prices include the taxes.
                unit_price = None if cost.vat is None else cost.price / (1 + cost.vat / HUNDRED)
            lines.append(
                {
                    "type": category,
                    "volume": str(cost.volume),
                    "unit": units.get(category, "h"),
                    "unit_price_excl_vat": None if unit_price is None else str(unit_price),
                    "vat_percent": None if cost.vat is None else str(cost.vat),
                    "price_excl_vat": money(cost.cost.excl_vat),
                    "price_incl_vat": money(cost.cost.incl_vat),
                }
            )
    lines.append(
        {
            "type": "EMSP_FEE",
            "price_excl_vat": str(round_money(fee.excl_vat, currency, rounding)),
            "price_incl_vat": str(round_money(fee.excl_vat + fee.vat, currency, rounding)),
        }
    )
    cpo_excl, cpo_incl = result.total_cost.excl_vat, result.total_cost.incl_vat
    return {
        "currency": currency,
        "lines": lines,
        "cpo_total": result.total_cost.to_dict(),
        "total_excl_vat": money(None if cpo_excl is None else cpo_excl + fee.excl_vat),
        "total_incl_vat": None if cpo_incl is None else str(driver_total(cpo_incl, fee, currency, rounding)),
        "warnings": list(result.warnings),
    }


def session_estimate(session: ChargingSession, now: datetime | None = None) -> pricing.PriceResult | None:
    """The running cost of an active session from its charging periods (None when no tariff is known or the
    session can't be priced)."""
    connector = (
        Connector.objects.filter(evse=session.evse, id_key=ci_key(session.connector_id))
        .select_related("evse__location")
        .first()
        if session.evse_id
        else None
    )
    if connector is None:
        return None
    tariffs = tariffs_for_connector(connector, session.start_date_time)
    if not tariffs:
        return None
    try:
        return pricing.estimate_session(
            session.data, tariffs[0].data, time_zone=connector.evse.location.time_zone, now=now or timezone.now()
        )
    except pricing.PricingError:
        return None  # a session we can't estimate (beyond the engine's bounds): the live figure is left out


# Where cdr_token_of_ours keeps its answer on the CDR instance.
_TOKEN_OF_OURS = "_token_of_ours"  # noqa: S105 - an attribute name


def cdr_token_of_ours(cdr: Cdr) -> Token | None:
    """The token of ours (with its driver) whose driver a CDR bills: None for another eMSP's token (its uid may
    collide with one of ours: RFID uids do) and for a uid of our party we hold no token for. Looked up once per
    CDR instance: the audit holds a CDR of an unknown token (audit.py, `unknown_token`), then the receipt bills
    the token's driver."""
    if _TOKEN_OF_OURS in cdr.__dict__:
        return cdr.__dict__[_TOKEN_OF_OURS]
    token_info = cdr.data.get("cdr_token") or {}
    token = None
    if token_is_ours(token_info):
        token = Token.objects.by_uid(cdr.token_uid, token_info.get("type") or None).select_related("driver").first()
    cdr.__dict__[_TOKEN_OF_OURS] = token
    return token


def receipt_for_cdr(cdr: Cdr, *, quote: Quote | None = None) -> DriverReceipt | None:
    """The driver's receipt for a CDR of one of our tokens (a credit CDR gives a refund receipt). Safe to
    call twice: one receipt per CDR."""
    existing = first_where(DriverReceipt, "t.cdr_id = %s", [cdr.pk])
    if existing is not None:
        return existing
    token = cdr_token_of_ours(cdr)
    if token is None:
        # Another eMSP's token whose uid one of ours shares (RFID uids collide), or no token of ours: nothing to
        # charge a driver. The audit holds such a CDR for review (foreign_token, unknown_token).
        return None
    terms = partner_terms(cdr.partner)
    cpo_excl = cdr.total_cost_excl_vat
    cpo_incl = cdr.total_cost_incl_vat if cdr.total_cost_incl_vat is not None else cpo_excl
    fee = Fee(ZERO, ZERO) if cdr.credit else emsp_fee(terms, cpo_excl, cdr.currency)
    total = driver_total(cpo_incl, fee, cdr.currency, terms.rounding)
    if quote is None and cdr.charging_session_id:
        booking = cdr.charging_session.booking
        quote = booking.quote if booking is not None and booking.quote_id else _accepted_quote_for(cdr.charging_session)
    receipt = DriverReceipt(
        cdr=cdr,
        driver=token.driver,
        quote=quote,
        currency=cdr.currency,
        energy_kwh=cdr.total_energy,
        cpo_cost_excl_vat=cpo_excl,
        cpo_vat=cpo_incl - cpo_excl,
        fee_excl_vat=fee.excl_vat,
        fee_vat=fee.vat,
        total_incl_vat=total,
        # A quote in another currency (an app's quote in INR for a CPO's charge in EUR) is no figure to compare.
        quoted_total_incl_vat=quote.total_incl_vat if quote is not None and quote.currency == cdr.currency else None,
        breakdown={
            "cpo": {
                "total_cost": {"excl_vat": str(cpo_excl), "incl_vat": str(cpo_incl)},
                "energy_cost": cdr.data.get("total_energy_cost"),
                "time_cost": cdr.data.get("total_time_cost"),
                "parking_cost": cdr.data.get("total_parking_cost"),
                "fixed_cost": cdr.data.get("total_fixed_cost"),
            },
            "fee": {"excl_vat": str(fee.excl_vat), "vat": str(fee.vat)},
            "credit": cdr.credit,
        },
    )
    # One statement (no SELECT, no savepoint): a twin written meanwhile keeps its receipt, which is returned.
    if not insert_if_absent(receipt, ["cdr"]):
        return DriverReceipt.objects.get(cdr=cdr)
    return receipt


def _accepted_quote_for(session: ChargingSession) -> Quote | None:
    """The quote the driver accepted for this charge, when the booking recorded one."""
    if session.evse_id is None:
        return None
    return (
        Quote.objects.filter(
            evse_id=session.evse_id, accepted_at__isnull=False, accepted_at__lte=session.start_date_time
        )
        .filter(driver__tokens__uid_key=ci_key(session.token_uid))
        .order_by("-accepted_at")
        .first()
    )
