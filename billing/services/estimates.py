"""Charge estimates for search results: what a planned charge would cost the driver, priced exactly as a
quote is (billing/services/driver_pricing.py `quote_charge`: the tariff engine over every ENERGY, TIME,
FLAT and PARKING_TIME component in the location's local time, the reservation a booking of the EVSE makes
before the charge, VAT per component, then our fee and its VAT, rounded by the partner's terms) but without
storing a Quote: a search shows dozens of them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from billing import pricing
from billing.models import PartnerTerms, Tariff
from billing.money import round_money
from billing.services.driver_pricing import driver_total, emsp_fee, reservation_before
from emsp.models import Evse, Partner
from emsp.vehicles import ChargePlan


@dataclass(frozen=True)
class ChargeEstimate:
    energy_kwh: Decimal
    duration: timedelta
    power_kw: Decimal
    arrival: datetime
    currency: str | None = None
    total_incl_vat: Decimal | None = None  # what the driver pays, our fee included; None: unknown
    total_excl_vat: Decimal | None = None


def terms_of(partners: Iterable[Partner]) -> dict[int, PartnerTerms]:
    """The partners' terms in one query; a partner without stored terms gets the defaults, as
    driver_pricing.partner_terms would create them (nothing is written here)."""
    wanted = {p.pk: p for p in partners}
    found = {t.partner_id: t for t in PartnerTerms.objects.filter(partner_id__in=list(wanted))}
    return {pk: found.get(pk) or PartnerTerms(partner=partner) for pk, partner in wanted.items()}


def parsed_tariffs(tariffs: Iterable[Tariff | None]) -> dict[int, pricing.Tariff]:
    """The engine's reading of each tariff once (a search prices many connectors on few tariffs); a tariff
    the engine refuses is left out, and its estimates have no cost."""
    out: dict[int, pricing.Tariff] = {}
    for tariff in tariffs:
        if tariff is not None and tariff.pk not in out:
            try:
                out[tariff.pk] = pricing.parse_tariff(tariff.data)
            except pricing.PricingError:
                continue
    return out


def charge_estimate(
    *,
    plan: ChargePlan,
    arrival: datetime,
    tariff: Tariff | None,
    time_zone: str,
    terms: PartnerTerms,
    parsed: pricing.Tariff | None = None,
    evse: Evse | None = None,
    now: datetime | None = None,
) -> ChargeEstimate:
    """The plan priced with the tariff at `arrival`. A constant-power plan is priced with pricing.quote,
    exactly as quote_charge prices the same energy at the same power; a plan with a DC taper is priced as its
    charging periods (bulk, then taper with its falling power). Either way, at `evse` the reservation a booking
    for `arrival` makes (driver_pricing.reservation_before, as of `now`) is priced too, by the tariff's
    RESERVATION elements, as the quote prices it: left out, a search showed a RESERVABLE EVSE's charge for
    less than its select then quoted. No tariff, or one the engine can't price: the energy and time are still
    estimated, the cost is left unknown."""
    base = ChargeEstimate(energy_kwh=plan.energy_kwh, duration=plan.duration, power_kw=plan.power_kw, arrival=arrival)
    if tariff is None or plan.energy_kwh <= 0:
        return base
    reservation = reservation_before(evse, arrival, now) if evse is not None else None
    try:
        engine_tariff = parsed if parsed is not None else pricing.parse_tariff(tariff.data)
        if plan.constant:
            result = pricing.quote(
                engine_tariff,
                start=arrival,
                time_zone=time_zone,
                power_kw=plan.power_kw,
                energy_kwh=plan.energy_kwh,
                reservation=reservation,
            )
        else:
            periods, at = [], arrival
            for phase in plan.phases:
                periods.append(
                    pricing.ChargingPeriod(
                        at,
                        at + phase.duration,
                        energy=phase.energy_kwh,
                        time=phase.duration,
                        max_power=phase.max_power_kw,
                        min_power=phase.min_power_kw,
                    )
                )
                at += phase.duration
            result = pricing.price_periods(
                engine_tariff,
                periods,
                time_zone=time_zone,
                session_start=arrival,
                session_end=at,
                reservation_start=arrival - reservation if reservation else None,
            )
    except pricing.PricingError:
        return base
    cpo_excl, cpo_incl = result.total_cost.excl_vat, result.total_cost.incl_vat
    if cpo_excl is None:
        return base  # taxes included at rates the tariff does not state: no price before taxes (as quotes)
    fee = emsp_fee(terms, cpo_excl, tariff.currency)
    return ChargeEstimate(
        energy_kwh=plan.energy_kwh,
        duration=plan.duration,
        power_kw=plan.power_kw,
        arrival=arrival,
        currency=tariff.currency,
        total_incl_vat=None if cpo_incl is None else driver_total(cpo_incl, fee, tariff.currency, terms.rounding),
        total_excl_vat=round_money(cpo_excl + fee.excl_vat, tariff.currency, terms.rounding),
    )
