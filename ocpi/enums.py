"""OCPI 2.2.1 enum value sets, plus the synonym tables the lenient importer maps real partner values through.

Values are copied from the [bf] spec text (``mod_locations``, ``mod_sessions``, ``mod_cdrs``, ``mod_tariffs``,
``mod_tokens``); synonyms come from the real CPO feeds (``shared/data/ocm/ocpi-feeds``) and vendor spellings.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

# --- Locations (mod_locations.asciidoc §8.4) ----------------------------------------------------------------

# Note the mixed case of the IEC 60309 values: that is the spec's own spelling (§8.4.5), not a typo.
CONNECTOR_TYPES: frozenset[str] = frozenset(
    {
        "CHADEMO",
        "CHAOJI",
        *(f"DOMESTIC_{c}" for c in "ABCDEFGHIJKLMNO"),
        "GBT_AC",
        "GBT_DC",
        "IEC_60309_2_single_16",
        "IEC_60309_2_three_16",
        "IEC_60309_2_three_32",
        "IEC_60309_2_three_64",
        "IEC_62196_T1",
        "IEC_62196_T1_COMBO",
        "IEC_62196_T2",
        "IEC_62196_T2_COMBO",
        "IEC_62196_T3A",
        "IEC_62196_T3C",
        "MCS",  # 2.3.0 (the MegaWatt Charging System): our model is 2.2.1's plus what 2.3.0 adds
        "NEMA_5_20",
        "NEMA_6_30",
        "NEMA_6_50",
        "NEMA_10_30",
        "NEMA_10_50",
        "NEMA_14_30",
        "NEMA_14_50",
        "PANTOGRAPH_BOTTOM_UP",
        "PANTOGRAPH_TOP_DOWN",
        "TESLA_R",
        "TESLA_S",
    }
)
CONNECTOR_FORMATS: frozenset[str] = frozenset({"SOCKET", "CABLE"})
POWER_TYPES: frozenset[str] = frozenset({"AC_1_PHASE", "AC_2_PHASE", "AC_2_PHASE_SPLIT", "AC_3_PHASE", "DC"})
EVSE_STATUSES: frozenset[str] = frozenset(
    {
        "AVAILABLE",
        "BLOCKED",
        "CHARGING",
        "INOPERATIVE",
        "OUTOFORDER",
        "PLANNED",
        "REMOVED",
        "RESERVED",
        "UNKNOWN",
    }
)
CAPABILITIES: frozenset[str] = frozenset(
    {
        "CHARGING_PROFILE_CAPABLE",
        "CHARGING_PREFERENCES_CAPABLE",
        "CHIP_CARD_SUPPORT",
        "CONTACTLESS_CARD_SUPPORT",
        "CREDIT_CARD_PAYABLE",
        "DEBIT_CARD_PAYABLE",
        "PED_TERMINAL",
        "REMOTE_START_STOP_CAPABLE",
        "RESERVABLE",
        "RFID_READER",
        "START_SESSION_CONNECTOR_REQUIRED",
        "TOKEN_GROUP_CAPABLE",
        "UNLOCK_CAPABLE",
    }
)
FACILITIES: frozenset[str] = frozenset(
    {
        "HOTEL",
        "RESTAURANT",
        "CAFE",
        "MALL",
        "SUPERMARKET",
        "SPORT",
        "RECREATION_AREA",
        "NATURE",
        "MUSEUM",
        "BIKE_SHARING",
        "BUS_STOP",
        "TAXI_STAND",
        "TRAM_STOP",
        "METRO_STATION",
        "TRAIN_STATION",
        "AIRPORT",
        "PARKING_LOT",
        "CARPOOL_PARKING",
        "FUEL_STATION",
        "WIFI",
    }
)
PARKING_TYPES: frozenset[str] = frozenset(
    {"ALONG_MOTORWAY", "PARKING_GARAGE", "PARKING_LOT", "ON_DRIVEWAY", "ON_STREET", "UNDERGROUND_GARAGE"}
)
PARKING_RESTRICTIONS: frozenset[str] = frozenset({"EV_ONLY", "PLUGGED", "DISABLED", "CUSTOMERS", "MOTORCYCLES"})
IMAGE_CATEGORIES: frozenset[str] = frozenset(
    {"CHARGER", "ENTRANCE", "LOCATION", "NETWORK", "OPERATOR", "OTHER", "OWNER"}
)
ENERGY_SOURCE_CATEGORIES: frozenset[str] = frozenset(
    {"NUCLEAR", "GENERAL_FOSSIL", "COAL", "GAS", "GENERAL_GREEN", "SOLAR", "WIND", "WATER"}
)
ENVIRONMENTAL_IMPACT_CATEGORIES: frozenset[str] = frozenset({"NUCLEAR_WASTE", "CARBON_DIOXIDE"})

# --- Tokens / Sessions / CDRs -------------------------------------------------------------------------------

TOKEN_TYPES: frozenset[str] = frozenset({"AD_HOC_USER", "APP_USER", "OTHER", "RFID"})
AUTH_METHODS: frozenset[str] = frozenset({"AUTH_REQUEST", "COMMAND", "WHITELIST"})
SESSION_STATUSES: frozenset[str] = frozenset({"ACTIVE", "COMPLETED", "INVALID", "PENDING", "RESERVATION"})
CDR_DIMENSION_TYPES: frozenset[str] = frozenset(
    {
        "CURRENT",
        "ENERGY",
        "ENERGY_EXPORT",
        "ENERGY_IMPORT",
        "MAX_CURRENT",
        "MIN_CURRENT",
        "MAX_POWER",
        "MIN_POWER",
        "PARKING_TIME",
        "POWER",
        "RESERVATION_TIME",
        "STATE_OF_CHARGE",
        "TIME",
    }
)

# --- Commands (mod_commands.asciidoc §"CommandResultType"; CANCELED_RESERVATION is the CPO cancelling) -----

COMMAND_RESULT_TYPES: frozenset[str] = frozenset(
    {
        "ACCEPTED",
        "CANCELED_RESERVATION",
        "EVSE_OCCUPIED",
        "EVSE_INOPERATIVE",
        "FAILED",
        "NOT_SUPPORTED",
        "REJECTED",
        "TIMEOUT",
        "UNKNOWN_RESERVATION",
    }
)

# --- Tariffs (mod_tariffs.asciidoc §11.4) -------------------------------------------------------------------

TARIFF_TYPES: frozenset[str] = frozenset(
    {"AD_HOC_PAYMENT", "PROFILE_CHEAP", "PROFILE_FAST", "PROFILE_GREEN", "REGULAR"}
)
TARIFF_DIMENSION_TYPES: frozenset[str] = frozenset({"ENERGY", "FLAT", "PARKING_TIME", "TIME"})
DAYS_OF_WEEK: frozenset[str] = frozenset({"MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY", "SUNDAY"})
RESERVATION_RESTRICTION_TYPES: frozenset[str] = frozenset({"RESERVATION", "RESERVATION_EXPIRES"})

# --- Synonym tables (keys are free spellings; they are squashed with ``squash`` before lookup) --------------

CONNECTOR_TYPE_SYNONYMS: Mapping[str, str] = {
    # Type 2 / Mennekes; "Type 2 outlet" is PowerGo's spelling.
    "Type2": "IEC_62196_T2",
    "Type 2 outlet": "IEC_62196_T2",
    "Type 2 socket": "IEC_62196_T2",
    "T2": "IEC_62196_T2",
    "Mennekes": "IEC_62196_T2",
    "IEC 62196-2 Type 2": "IEC_62196_T2",
    # CCS: "CCS" without a suffix means CCS2 in every market we serve (EU, India); CCS1 must say so.
    "CCS": "IEC_62196_T2_COMBO",
    "CCS2": "IEC_62196_T2_COMBO",
    "CCS Type 2": "IEC_62196_T2_COMBO",
    "Combo 2": "IEC_62196_T2_COMBO",
    "Type 2 Combo": "IEC_62196_T2_COMBO",
    "Type2 CCS": "IEC_62196_T2_COMBO",
    "CCS1": "IEC_62196_T1_COMBO",
    "CCS Type 1": "IEC_62196_T1_COMBO",
    "Combo 1": "IEC_62196_T1_COMBO",
    "Type 1 Combo": "IEC_62196_T1_COMBO",
    "Type1": "IEC_62196_T1",
    "T1": "IEC_62196_T1",
    "J1772": "IEC_62196_T1",
    "SAE J1772": "IEC_62196_T1",
    "Type 3A": "IEC_62196_T3A",
    "Type 3C": "IEC_62196_T3C",
    "Scame": "IEC_62196_T3C",
    # ChargeSini sends "GB/T (DC)".
    "GB/T (DC)": "GBT_DC",
    "GB/T DC": "GBT_DC",
    "GBT DC": "GBT_DC",
    "GB/T (AC)": "GBT_AC",
    "GB/T AC": "GBT_AC",
    "GBT AC": "GBT_AC",
    "ChaoJi": "CHAOJI",
    "Schuko": "DOMESTIC_F",
    "CEE 7/4": "DOMESTIC_F",
    "CEE 7/5": "DOMESTIC_E",
    "BS1363": "DOMESTIC_G",
    "Type G": "DOMESTIC_G",
    # NACS (SAE J3400) is physically the Tesla "Model S" connector; 2.2.1 has no own value for it.
    "NACS": "TESLA_S",
    "Tesla": "TESLA_S",
    "Tesla Roadster": "TESLA_R",
}
CONNECTOR_FORMAT_SYNONYMS: Mapping[str, str] = {
    "tethered": "CABLE",
    "attached cable": "CABLE",
    "plug": "CABLE",
    "outlet": "SOCKET",
}
POWER_TYPE_SYNONYMS: Mapping[str, str] = {
    "AC1": "AC_1_PHASE",
    "AC single phase": "AC_1_PHASE",
    "AC3": "AC_3_PHASE",
    "AC three phase": "AC_3_PHASE",
    "AC_3_PHASES": "AC_3_PHASE",
    "AC2": "AC_2_PHASE",
}
# OCPP-style statuses some CPOs leak into OCPI (OCPP 1.6 ChargePointStatus / 2.0.1 ConnectorStatus).
EVSE_STATUS_SYNONYMS: Mapping[str, str] = {
    "OUT_OF_ORDER": "OUTOFORDER",
    "FAULTED": "OUTOFORDER",
    "OCCUPIED": "CHARGING",
    "IN_USE": "CHARGING",
    "BUSY": "CHARGING",
    "PREPARING": "CHARGING",
    "SUSPENDEDEV": "CHARGING",
    "SUSPENDEDEVSE": "CHARGING",
    "FINISHING": "CHARGING",
    "UNAVAILABLE": "INOPERATIVE",
    "OFFLINE": "UNKNOWN",
    "DELETED": "REMOVED",
}
# OCPI 2.1.1 Location.type (LocationType) became 2.2.1 parking_type; OTHER/UNKNOWN have no counterpart.
LOCATION_TYPE_211_TO_PARKING_TYPE: Mapping[str, str | None] = {
    "ON_STREET": "ON_STREET",
    "PARKING_GARAGE": "PARKING_GARAGE",
    "UNDERGROUND_GARAGE": "UNDERGROUND_GARAGE",
    "PARKING_LOT": "PARKING_LOT",
    "OTHER": None,
    "UNKNOWN": None,
}
DAY_OF_WEEK_SYNONYMS: Mapping[str, str] = {
    "MON": "MONDAY",
    "TUE": "TUESDAY",
    "TUES": "TUESDAY",
    "WED": "WEDNESDAY",
    "THU": "THURSDAY",
    "THUR": "THURSDAY",
    "THURS": "THURSDAY",
    "FRI": "FRIDAY",
    "SAT": "SATURDAY",
    "SUN": "SUNDAY",
}
SESSION_STATUS_SYNONYMS: Mapping[str, str] = {
    "FINISHED": "COMPLETED",
    "STARTED": "ACTIVE",
    "CHARGING": "ACTIVE",
}

# Country names that pycountry (English/ISO names) does not know: endonyms seen in feeds (EV24 sends "Polska")
# plus the EU/UK two-letter codes that differ from ISO 3166.
COUNTRY_NAME_SYNONYMS: Mapping[str, str] = {
    "Polska": "POL",
    "Deutschland": "DEU",
    "Nederland": "NLD",
    "Holland": "NLD",
    "The Netherlands": "NLD",
    "België": "BEL",
    "Belgique": "BEL",
    "España": "ESP",
    "Italia": "ITA",
    "Österreich": "AUT",
    "Schweiz": "CHE",
    "Suisse": "CHE",
    "Svizzera": "CHE",
    "Danmark": "DNK",
    "Sverige": "SWE",
    "Norge": "NOR",
    "Suomi": "FIN",
    "Česko": "CZE",
    "Česká republika": "CZE",
    "Slovensko": "SVK",
    "Slovenija": "SVN",
    "Hrvatska": "HRV",
    "Magyarország": "HUN",
    "România": "ROU",
    "Türkiye": "TUR",
    "Turkey": "TUR",
    "Ελλάδα": "GRC",
    "Éire": "IRL",
    "Россия": "RUS",
    "Russia": "RUS",
    "Беларусь": "BLR",
    "Україна": "UKR",
    "Bharat": "IND",
    "भारत": "IND",
    "Brasil": "BRA",
    "México": "MEX",
    "UK": "GBR",
    "EL": "GRC",
    "Great Britain": "GBR",
    "England": "GBR",
    "USA": "USA",
    "United States of America": "USA",
}
CURRENCY_SYNONYMS: Mapping[str, str] = {
    "€": "EUR",
    "EURO": "EUR",
    "₹": "INR",
    "RS": "INR",
    "£": "GBP",
    "ZŁ": "PLN",
}

# --- Inference tables (used only when a required field is missing; every use is reported as an issue) -------

# Connector standards that only exist as DC connectors, always on a tethered cable.
DC_CONNECTOR_TYPES: frozenset[str] = frozenset(
    {
        "CHADEMO",
        "CHAOJI",
        "GBT_DC",
        "IEC_62196_T1_COMBO",
        "IEC_62196_T2_COMBO",
        "MCS",
        "PANTOGRAPH_BOTTOM_UP",
        "PANTOGRAPH_TOP_DOWN",
    }
)
SINGLE_PHASE_CONNECTOR_TYPES: frozenset[str] = frozenset(
    {
        "IEC_62196_T1",
        "IEC_60309_2_single_16",
        "TESLA_R",
        "GBT_AC",
        *(f"DOMESTIC_{c}" for c in "ABCDEFGHIJKLMNO"),
        "NEMA_5_20",
        "NEMA_6_30",
        "NEMA_6_50",
        "NEMA_10_30",
        "NEMA_10_50",
        "NEMA_14_30",
        "NEMA_14_50",
    }
)
# Everything else that is not CABLE is a socket on the charger (Type 2/3, domestic, industrial, NEMA).
CABLE_CONNECTOR_TYPES: frozenset[str] = DC_CONNECTOR_TYPES | {"IEC_62196_T1", "TESLA_R", "TESLA_S"}

_NON_ALNUM = re.compile(r"[^0-9A-Z]+")


def squash(value: str) -> str:
    """Upper-case and drop everything but letters and digits: "Type 2 Combo" -> "TYPE2COMBO"."""
    return _NON_ALNUM.sub("", value.upper())


class EnumTable:
    """Resolves a received value to its canonical OCPI spelling; ``resolve`` says how it got there."""

    __slots__ = ("_by_squash", "_by_upper", "values")

    def __init__(self, values: Iterable[str], synonyms: Mapping[str, str | None] | None = None) -> None:
        self.values = frozenset(values)
        self._by_upper = {v.upper(): v for v in self.values}
        self._by_squash: dict[str, str | None] = {}
        for alias, target in (synonyms or {}).items():
            self._by_squash[squash(alias)] = target
        for v in self.values:  # canonical spellings win over any synonym that squashes the same way
            self._by_squash[squash(v)] = v

    def resolve(self, value: str) -> tuple[str | None, str]:
        """Return (canonical or None, how) with how in {"exact", "case", "synonym", "unknown"}."""
        if value in self.values:
            return value, "exact"
        hit = self._by_upper.get(value.strip().upper())
        if hit is not None:
            return hit, "case"
        key = squash(value)
        if key in self._by_squash:
            return self._by_squash[key], "synonym"
        return None, "unknown"


CONNECTOR_TYPE = EnumTable(CONNECTOR_TYPES, CONNECTOR_TYPE_SYNONYMS)
CONNECTOR_FORMAT = EnumTable(CONNECTOR_FORMATS, CONNECTOR_FORMAT_SYNONYMS)
POWER_TYPE = EnumTable(POWER_TYPES, POWER_TYPE_SYNONYMS)
EVSE_STATUS = EnumTable(EVSE_STATUSES, EVSE_STATUS_SYNONYMS)
CAPABILITY = EnumTable(CAPABILITIES)
FACILITY = EnumTable(FACILITIES)
PARKING_TYPE = EnumTable(PARKING_TYPES, LOCATION_TYPE_211_TO_PARKING_TYPE)
PARKING_RESTRICTION = EnumTable(PARKING_RESTRICTIONS)
IMAGE_CATEGORY = EnumTable(IMAGE_CATEGORIES)
ENERGY_SOURCE_CATEGORY = EnumTable(ENERGY_SOURCE_CATEGORIES)
ENVIRONMENTAL_IMPACT_CATEGORY = EnumTable(ENVIRONMENTAL_IMPACT_CATEGORIES)
TOKEN_TYPE = EnumTable(TOKEN_TYPES)
AUTH_METHOD = EnumTable(AUTH_METHODS)
SESSION_STATUS = EnumTable(SESSION_STATUSES, SESSION_STATUS_SYNONYMS)
CDR_DIMENSION_TYPE = EnumTable(CDR_DIMENSION_TYPES)
TARIFF_TYPE = EnumTable(TARIFF_TYPES)
TARIFF_DIMENSION_TYPE = EnumTable(TARIFF_DIMENSION_TYPES)
DAY_OF_WEEK = EnumTable(DAYS_OF_WEEK, DAY_OF_WEEK_SYNONYMS)
RESERVATION_RESTRICTION_TYPE = EnumTable(RESERVATION_RESTRICTION_TYPES)
