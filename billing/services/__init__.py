"""Billing workflows. `records` stores tariffs and CDRs; `audit` reprices CDRs and opens disputes;
`disputes` is the staff workflow; `driver_pricing` makes quotes, estimates and receipts; `settlement`
builds the per-CPO period reports."""

from __future__ import annotations

from billing.services.records import (
    CdrStored,
    cdr_key,
    cdr_store,
    cdrs_store,
    tariff_delete,
    tariff_get,
    tariff_key,
    tariff_put,
    tariffs_store,
)

__all__ = [
    "CdrStored",
    "cdr_key",
    "cdr_store",
    "cdrs_store",
    "tariff_delete",
    "tariff_get",
    "tariff_key",
    "tariff_put",
    "tariffs_store",
]
