"""A driver's vehicle as a search describes it, and how long a charge takes (pure Python, no Django).

The charge curve is deliberately simple and stated here so that estimates can be checked by hand:
- power = min(the connector's power, the car's maximum for that kind of current: AC for AC_* connectors, DC
  for DC ones); a connector without a stated power counts as 7.4 kW (billing's quote default);
- AC: constant power (the on-board charger is the limit, not the battery);
- DC: constant power up to 80 % state of charge, then falling in a straight line to a fifth of it at 100 %
  (the taper every DC curve has). Without the battery size the state of charge is unknown, so the whole
  charge counts as constant power.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from decimal import ROUND_CEILING, Decimal

DEFAULT_CONNECTOR_KW = Decimal("7.4")
DEFAULT_SOC_TARGET = Decimal("0.8")
TAPER_FROM = 0.8  # state of charge where DC power starts to fall
TAPER_END_SHARE = 0.2  # share of the power left at 100 %
MAX_BATTERY_KWH = Decimal("1000")
MAX_POWER_KW = Decimal("1000")
MAX_ENERGY_KWH = Decimal("1000")
KWH = Decimal("0.001")


@dataclass(frozen=True)
class Vehicle:
    connector_types: frozenset[str] = frozenset()  # OCPI ConnectorType values the car accepts
    max_ac_kw: Decimal | None = None
    max_dc_kw: Decimal | None = None
    battery_kwh: Decimal | None = None
    soc_now: Decimal | None = None  # a fraction, 0..1
    soc_target: Decimal | None = None  # a fraction, 0..1 (default 0.8 when the battery and soc_now are known)

    def energy_needed_kwh(self) -> Decimal | None:
        """battery × (target − now), when the battery and the state of charge now are known; None otherwise.
        Zero when the car is already at or above its target."""
        if self.battery_kwh is None or self.soc_now is None:
            return None
        target = self.soc_target if self.soc_target is not None else DEFAULT_SOC_TARGET
        return max(Decimal(0), self.battery_kwh * (target - self.soc_now)).quantize(KWH)

    def max_kw(self, power_type: str) -> Decimal | None:
        return self.max_dc_kw if is_dc(power_type) else self.max_ac_kw


def is_dc(power_type: str) -> bool:
    return (power_type or "").upper() == "DC"


def charging_power_kw(connector_kw: Decimal | None, power_type: str, vehicle: Vehicle | None) -> Decimal:
    """What the car draws at this connector: the lower of the connector's power and the car's limit."""
    power = connector_kw if connector_kw else DEFAULT_CONNECTOR_KW
    limit = vehicle.max_kw(power_type) if vehicle is not None else None
    return min(power, limit) if limit is not None else power


@dataclass(frozen=True)
class Phase:
    """A stretch of the charge at one power (bulk) or falling power (taper)."""

    duration: timedelta
    energy_kwh: Decimal
    max_power_kw: Decimal
    min_power_kw: Decimal


@dataclass(frozen=True)
class ChargePlan:
    energy_kwh: Decimal
    power_kw: Decimal  # the power at the start (the highest)
    phases: tuple[Phase, ...]

    @property
    def duration(self) -> timedelta:
        return sum((p.duration for p in self.phases), timedelta(0))

    @property
    def constant(self) -> bool:
        return len(self.phases) == 1 and self.phases[0].max_power_kw == self.phases[0].min_power_kw


def _hours(value: float) -> timedelta:
    return timedelta(microseconds=math.ceil(value * 3_600_000_000))


def constant_duration(energy_kwh: Decimal, power_kw: Decimal) -> timedelta:
    """energy / power, rounded up to the microsecond exactly as billing's pricing.quote rounds it."""
    return timedelta(microseconds=int((energy_kwh / power_kw * 3_600_000_000).to_integral_value(ROUND_CEILING)))


def charge_plan(
    *, energy_kwh: Decimal, power_kw: Decimal, power_type: str, battery_kwh: Decimal | None, soc_start: Decimal | None
) -> ChargePlan:
    """How a charge of `energy_kwh` at `power_kw` goes, by the curve in the module doc."""
    if power_kw <= 0:
        raise ValueError("power must be positive")
    if not is_dc(power_type) or battery_kwh is None or soc_start is None or battery_kwh <= 0:
        return ChargePlan(
            energy_kwh, power_kw, (Phase(constant_duration(energy_kwh, power_kw), energy_kwh, power_kw, power_kw),)
        )
    battery, power = float(battery_kwh), float(power_kw)
    start = float(soc_start)
    end = min(1.0, start + float(energy_kwh) / battery)
    energy_kwh = min(energy_kwh, (battery_kwh * (1 - soc_start)).quantize(KWH))
    phases: list[Phase] = []
    bulk_end = min(end, max(start, TAPER_FROM))
    if bulk_end > start:
        bulk_energy = min(energy_kwh, Decimal(str(round((bulk_end - start) * battery, 3))))
        phases.append(Phase(constant_duration(bulk_energy, power_kw), bulk_energy, power_kw, power_kw))
    taper_start = max(start, TAPER_FROM)
    if end > taper_start:
        slope = (1 - TAPER_END_SHARE) / (1 - TAPER_FROM)

        def power_at(soc: float) -> float:
            return power * (1 - slope * (soc - TAPER_FROM))

        # time = ∫ battery ds / power(s) = battery / (power × slope) × ln(power(s1) / power(s2))
        hours = battery / (power * slope) * math.log(power_at(taper_start) / power_at(end))
        taper_energy = energy_kwh - sum((p.energy_kwh for p in phases), Decimal(0))
        phases.append(
            Phase(
                _hours(hours),
                taper_energy,
                Decimal(str(round(power_at(taper_start), 3))),
                Decimal(str(round(power_at(end), 3))),
            )
        )
    if not phases:  # nothing to charge
        phases.append(Phase(timedelta(0), Decimal(0), power_kw, power_kw))
    return ChargePlan(energy_kwh, power_kw, tuple(phases))
