"""The meter of a running session and the CDR it ends in: charging periods split at tariff time boundaries
and when the EV is full, totals priced by cposim.pricing."""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Any

from .common import clone, iso, utcnow
from .config import SimConfig
from .pricing import merge_periods, price_session, time_boundaries


def now_ms() -> datetime:
    """Current UTC time truncated to milliseconds (what we publish)."""
    now = utcnow()
    return now.replace(microsecond=(now.microsecond // 1000) * 1000)


@dataclass
class Runtime:
    """Internal meter state of an active session."""

    session_id: str
    location_id: str
    evse_uid: str
    connector_id: str
    tariff: dict[str, Any] | None
    tz: tzinfo
    power_kw: float
    target_kwh: float
    started: datetime
    last_meter: datetime
    energy: float = 0.0
    published_kwh: float = 0.0
    active: bool = True
    lock: threading.Lock = field(default_factory=threading.Lock)


def advance_meter(rt: Runtime, now: datetime) -> list[dict[str, Any]]:
    """Meter up to `now`: periods split at tariff time boundaries and when the EV is full.

    Volumes are differences of rounded cumulative readings (kWh to 4, hours to 6 decimals), so the
    periods always add up exactly to the published session totals.
    """
    t0 = rt.last_meter
    if now <= t0:
        return []
    cuts = time_boundaries(rt.tariff, t0, now, rt.tz)
    remaining = rt.target_kwh - rt.energy
    if remaining > 1e-9 and rt.power_kw > 0:
        full_at = t0 + timedelta(hours=remaining / rt.power_kw)
        full_at = full_at.replace(microsecond=(full_at.microsecond // 1000) * 1000)
        if t0 < full_at < now:
            cuts.append(full_at)
    edges = [t0, *sorted(set(cuts)), now]
    tariff_id = rt.tariff["id"] if rt.tariff else None

    def elapsed(t: datetime) -> float:
        return round((t - rt.started).total_seconds() / 3600, 6)

    periods = []
    for a, b in itertools.pairwise(edges):
        hours = round(elapsed(b) - elapsed(a), 6)
        if hours <= 0:
            continue
        if rt.target_kwh - rt.energy > 1e-9:
            rt.energy = min(rt.target_kwh, rt.energy + rt.power_kw * (b - a).total_seconds() / 3600)
            reading = round(rt.energy, 4)
            kwh = round(reading - rt.published_kwh, 4)
            rt.published_kwh = reading
            dims = [{"type": "ENERGY", "volume": kwh}, {"type": "TIME", "volume": hours}]
        else:
            dims = [{"type": "PARKING_TIME", "volume": hours}]
        period: dict[str, Any] = {"start_date_time": iso(a, ms=True), "dimensions": dims}
        if tariff_id:
            period["tariff_id"] = tariff_id
        periods.append(period)
    rt.last_meter = now
    return periods


def build_cdr(
    cfg: SimConfig,
    rt: Runtime,
    session: dict[str, Any],
    loc: dict[str, Any],
    evse: dict[str, Any],
    conn: dict[str, Any],
) -> dict[str, Any]:
    """CDR from the session's periods, priced by our own tariff code (+ --cdr-overcharge)."""
    periods = merge_periods(rt.tariff, session["charging_periods"], rt.started, rt.tz)
    priced = price_session(rt.tariff, periods, rt.started, rt.tz)
    factor = Decimal(1) + Decimal(str(cfg.cdr_overcharge))
    cdr_location = {
        "id": loc["id"],
        **{k: loc[k] for k in ("name", "address", "city", "postal_code", "state", "country") if loc.get(k)},
        "coordinates": loc["coordinates"],
        "evse_uid": evse["uid"],
        "evse_id": evse.get("evse_id") or evse["uid"],
        "connector_id": conn["id"],
        "connector_standard": conn["standard"],
        "connector_format": conn["format"],
        "connector_power_type": conn["power_type"],
    }
    cdr: dict[str, Any] = {
        "country_code": cfg.country_code,
        "party_id": cfg.party_id,
        "id": f"CDR-{session['id']}"[:36],
        "start_date_time": session["start_date_time"],
        "end_date_time": session["end_date_time"],
        "session_id": session["id"],
        "cdr_token": clone(session["cdr_token"]),
        "auth_method": session["auth_method"],
        **(
            {"authorization_reference": session["authorization_reference"]}
            if session.get("authorization_reference")
            else {}
        ),
        "cdr_location": cdr_location,
        "currency": session["currency"],
        "tariffs": [clone(rt.tariff)] if rt.tariff else [],
        "charging_periods": periods,
        "total_cost": priced.total.price(factor),
        "total_fixed_cost": priced.fixed.price(factor),
        "total_energy": round(priced.energy_kwh, 4),
        "total_energy_cost": priced.energy.price(factor),
        "total_time": round(priced.time_h + priced.parking_h, 6),
        "total_time_cost": priced.time.price(factor),
        "total_parking_time": round(priced.parking_h, 6),
        "total_parking_cost": priced.parking.price(factor),
        "last_updated": session["last_updated"],
    }
    if cfg.cdr_overcharge:
        cdr["remark"] = "simulator: billed with --cdr-overcharge"
    return cdr


def cdr_token(token: dict[str, Any]) -> dict[str, Any]:
    """CdrToken from a Token object (country_code, party_id, uid, type, contract_id)."""
    out = {
        "uid": str(token.get("uid")),
        "type": str(token.get("type") or "RFID"),
        "contract_id": str(token.get("contract_id") or token.get("uid")),
    }
    if token.get("country_code"):
        out = {"country_code": token["country_code"], "party_id": token.get("party_id", ""), **out}
    return out
