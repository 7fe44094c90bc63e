"""Lenient-in, strict-out normaliser for OCPI 2.2.1 objects received from CPOs (pure: no ORM, no I/O).

Every ``normalize_*`` returns ``(strictly 2.2.1-shaped dict, issues)`` or raises ``Rejected``; decisions in
``docs`` are summarised in each function's docstring and in ``_base`` (DateTime, numbers, last_updated).
"""

from __future__ import annotations

from ocpi.normalize._base import (
    Issue,
    Rejected,
    format_ocpi_datetime,
    parse_ocpi_datetime,
    unwrap_list_payload,
    unwrap_object_payload,
)
from ocpi.normalize.locations import (
    normalize_connector,
    normalize_evse,
    normalize_location,
    normalize_location_patch,
)
from ocpi.normalize.sessions import normalize_cdr, normalize_session, normalize_session_patch
from ocpi.normalize.tariffs import normalize_tariff

__all__ = [
    "Issue",
    "Rejected",
    "format_ocpi_datetime",
    "normalize_cdr",
    "normalize_connector",
    "normalize_evse",
    "normalize_location",
    "normalize_location_patch",
    "normalize_session",
    "normalize_session_patch",
    "normalize_tariff",
    "parse_ocpi_datetime",
    "unwrap_list_payload",
    "unwrap_object_payload",
]
