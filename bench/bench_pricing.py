"""Benchmark: reprice N typical CDRs (3-6 periods, 1-3 restricted elements) on one core; prints CDRs/s.

Usage: .venv/bin/python bench/bench_pricing.py [N] [--rounds 3] [--profile]
Tariffs are parsed once up front (as the CDR receiver would cache them); each CDR is a raw dict. The baseline
(issue 15) is the same loop doing only the Decimal sums of each CDR's own periods; the ratio is printed.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pstats
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from billing.pricing import Tariff, parse_tariff, price_cdr
from billing.pricing.tariff import ZERO

TARGET = 50_000  # issue 15 (the first floor was 10,000)
ZONES = ("Europe/Amsterdam", "Europe/Berlin", "Europe/Paris", "Europe/Brussels")

TARIFFS: list[dict[str, Any]] = [
    {
        "id": "T-DAYNIGHT",
        "currency": "EUR",
        "country_code": "NL",
        "party_id": "CPO",
        "elements": [
            {
                "price_components": [{"type": "ENERGY", "price": 0.39, "vat": 21.0, "step_size": 1}],
                "restrictions": {"start_time": "07:00", "end_time": "23:00"},
            },
            {"price_components": [{"type": "ENERGY", "price": 0.29, "vat": 21.0, "step_size": 1}]},
        ],
        "last_updated": "2024-01-01T00:00:00Z",
    },
    {
        "id": "T-COMPLEX",
        "currency": "EUR",
        "country_code": "DE",
        "party_id": "CPO",
        "elements": [
            {"price_components": [{"type": "FLAT", "price": 0.50, "vat": 19.0, "step_size": 1}]},
            {
                "price_components": [
                    {"type": "ENERGY", "price": 0.49, "vat": 19.0, "step_size": 100},
                    {"type": "PARKING_TIME", "price": 6.00, "vat": 19.0, "step_size": 300},
                ],
                "restrictions": {"day_of_week": ["MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY"]},
            },
            {
                "price_components": [
                    {"type": "ENERGY", "price": 0.45, "vat": 19.0, "step_size": 100},
                    {"type": "TIME", "price": 1.20, "vat": 19.0, "step_size": 60},
                ],
            },
        ],
        "last_updated": "2024-01-01T00:00:00Z",
    },
    {
        "id": "T-POWER",
        "currency": "EUR",
        "country_code": "BE",
        "party_id": "CPO",
        "max_price": {"excl_vat": 60, "incl_vat": 72.6},
        "elements": [
            {
                "price_components": [{"type": "ENERGY", "price": 0.35, "vat": 21.0, "step_size": 1}],
                "restrictions": {"max_power": 22.0},
            },
            {
                "price_components": [{"type": "ENERGY", "price": 0.59, "vat": 21.0, "step_size": 1}],
                "restrictions": {"max_kwh": 40},
            },
            {
                "price_components": [
                    {"type": "ENERGY", "price": 0.69, "vat": 21.0, "step_size": 1},
                    {"type": "PARKING_TIME", "price": 10.0, "vat": 21.0, "step_size": 60},
                ],
                "restrictions": {"min_duration": 3600},
            },
        ],
        "last_updated": "2024-01-01T00:00:00Z",
    },
]


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def make_cdr(rng: random.Random, tariff: dict[str, Any]) -> dict[str, Any]:
    start = datetime(2024, 3, 1, tzinfo=UTC) + timedelta(minutes=rng.randrange(0, 60 * 24 * 365))
    periods = []
    moment = start
    count = rng.randint(3, 6)
    for index in range(count):
        minutes = rng.randint(5, 90)
        hours = round(minutes / 60, 4)
        if index == count - 1 and rng.random() < 0.5:
            dims = [{"type": "PARKING_TIME", "volume": hours}]
        else:
            kw = rng.choice((7.4, 11.0, 22.0, 50.0, 150.0))
            dims = [
                {"type": "ENERGY", "volume": round(kw * minutes / 60 * 0.9, 3)},
                {"type": "TIME", "volume": hours},
                {"type": "MAX_POWER", "volume": kw},
            ]
        periods.append({"start_date_time": iso(moment), "dimensions": dims, "tariff_id": tariff["id"]})
        moment += timedelta(minutes=minutes)
    return {
        "id": f"CDR{rng.randrange(10**9)}",
        "start_date_time": iso(start),
        "end_date_time": iso(moment),
        "currency": "EUR",
        "cdr_location": {"time_zone": rng.choice(ZONES)},
        "charging_periods": periods,
        "tariffs": [tariff],
    }


def baseline_sums(cdr: dict[str, Any]) -> dict[str, Decimal]:
    """The baseline of issue 15: only the Decimal sums of the CDR's own periods, per dimension type."""
    sums: dict[str, Decimal] = {}
    for period in cdr["charging_periods"]:
        for dimension in period["dimensions"]:
            kind = dimension["type"]
            sums[kind] = sums.get(kind, ZERO) + Decimal(str(dimension["volume"]))
    return sums


def workload(n: int) -> list[tuple[dict[str, Any], list[Tariff]]]:
    rng = random.Random(2026)
    parsed: dict[str, Tariff] = {t["id"]: parse_tariff(t) for t in TARIFFS}
    cdrs = [make_cdr(rng, rng.choice(TARIFFS)) for _ in range(n)]
    return [(cdr, [parsed[cdr["tariffs"][0]["id"]]]) for cdr in cdrs]


def run(work: list[tuple[dict[str, Any], list[Tariff]]]) -> float:
    for cdr, tariffs in work[:200]:  # warm caches (zones, code paths)
        price_cdr(cdr, tariffs=tariffs)
    began = time.perf_counter()
    for cdr, tariffs in work:
        price_cdr(cdr, tariffs=tariffs)
    return len(work) / (time.perf_counter() - began)


def run_baseline(work: list[tuple[dict[str, Any], list[Tariff]]]) -> float:
    began = time.perf_counter()
    for cdr, _ in work:
        baseline_sums(cdr)
    return len(work) / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("n", nargs="?", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    work = workload(args.n)
    # The CDRs of the benchmark live through the whole run, where a request's CDR lives only while it is priced:
    # frozen, the collector stops walking them, as the web and worker processes freeze what they load.
    gc.freeze()
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        run(work)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        return
    rates, baselines = [], []
    for _ in range(args.rounds):  # interleaved, so a machine's drift touches both alike
        rates.append(run(work))
        baselines.append(run_baseline(work))
    rate, base = statistics.median(rates), statistics.median(baselines)
    verdict = "OK" if rate >= TARGET else "BELOW TARGET"
    print(f"repricing: {rate:,.0f} CDRs/s (median of {args.rounds}; {args.n} CDRs; target {TARGET:,}) {verdict}")
    print(f"baseline (the Decimal sums of each CDR's own periods): {base:,.0f} CDRs/s")
    print(f"ratio repricing/baseline: {rate / base:.3f}")


if __name__ == "__main__":
    main()
