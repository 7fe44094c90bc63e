"""Lenient-in, strict-out normaliser for OCPI 2.2.1 objects received from CPOs (pure: no ORM, no I/O).

Each ``normalize_*`` returns ``(strictly 2.2.1-shaped dict, issues)`` or raises ``Rejected``.
"""

# Decisions (details in the docstrings of ``issues``, ``values``, ``datetimes``, ``countries``, ``envelope``):
# - DateTime out: "YYYY-MM-DDTHH:MM:SSZ", plus ".mmm" only when the milliseconds are non-zero (sub-ms digits
#   truncated). In: "Z", no designator (= UTC, spec-valid, no issue), fractions, space separator; offsets
#   (even "+00:00") are converted to UTC with a "datetime_offset" issue; garbage -> Rejected.
# - Numbers (prices, VAT, kWh, volumes) are returned as the JSON numbers received (int/float from the JSON
#   decoder; numeric strings converted only when lossless), never computed on: Decimal(str(x)) is exact.
# - last_updated: full objects are never rejected for a missing one (the official tariff PUT example has none): it
#   comes from the newest child / the parent (mod_locations stamp rule) or the receive time, with an issue. One in
#   the future is never kept: a location's, EVSE's or connector's becomes the receive time (a child's its parent's);
#   a tariff, session or CDR carrying one is refused.
#   PATCHes without it are Rejected with path "last_updated" (-> OCPI 2001), except an ``Unstamped`` one (OCPI
#   2.1.1, where it is optional): returned without it, for the store to apply and keep its stored stamp.
# - Ids (CiString) are stripped but keep their case; country_code/party_id are upper-cased codes.
# - Unknown connector standard / missing id -> that connector (or EVSE) is dropped, the rest kept; only a
#   location without usable coordinates/id/country/party, or a tariff/session/CDR with unusable money or
#   attribution fields, is Rejected.
# - Unknown max_voltage/max_amperage are 0 (= unknown), never an invented nominal value.

from __future__ import annotations

from ocpi.normalize.datetimes import Unstamped, format_ocpi_datetime, parse_ocpi_datetime
from ocpi.normalize.envelope import unwrap_list_payload, unwrap_object_payload
from ocpi.normalize.evses import normalize_connector, normalize_evse
from ocpi.normalize.issues import ISSUE_CODES, Issue, Normalizer, Rejected
from ocpi.normalize.locations import normalize_location, normalize_location_patch
from ocpi.normalize.sessions import normalize_cdr, normalize_session, normalize_session_patch
from ocpi.normalize.tariffs import normalize_tariff

__all__ = [
    "ISSUE_CODES",
    "Issue",
    "Normalizer",
    "Rejected",
    "Unstamped",
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
