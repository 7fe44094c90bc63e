"""Simulator configuration: the CLI options (shared by `python -m cposim` and the management command)."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from typing import Any

FAULT_NAMES = (
    "slow",
    "http500",
    "no_command_result",
    "forbid_instead_of_401",
    "broken_link",
    "no_link_header",  # pages capped at the limit, with neither Link nor X-Total-Count (X-Limit only)
    "lowercase",
    "wrap_single",
    "trailing_slash",
    "link_elsewhere",
    "bare_errors",
    # the rest of extrawest-ocpi's quirks (docs/interop.md): see cposim/quirks.py and cposim/README.md
    "glued_push_urls",
    "no_request_ids",
    "no_commands_endpoint",
    "status_in_200",
    "null_optionals",
    "cdr_without_evse_uid",
    "status_schedule_object",
    # what CPOs do with reservations (cposim/charging.py)
    "reject_reservations",
    "reserve_ahead_limit",
    "no_reservation_result",
    # what hubs do: deliver a push again when they lost its answer (cposim/emsp_client.py)
    "repeat_pushes",
)
_NUMERIC_FAULTS = {"slow", "http500", "reserve_ahead_limit"}
_NUMERIC_DEFAULTS = {"slow": 1.0, "http500": 0.5, "reserve_ahead_limit": 30.0}
OCPI_VERSIONS = ("2.1.1", "2.2.1", "2.3.0")


@dataclass
class SimConfig:
    """Everything the simulator needs to start; built from CLI options."""

    port: int = 0
    country_code: str = "IN"
    party_id: str = "CPA"
    name: str = "Sim CPO A"
    seed: int = 42
    locations: int = 30
    cities: list[str] = field(default_factory=list)
    locations_file: str | None = None
    currency: str = "INR"
    tariff_profile: str = "a"
    page_limit: int = 50
    token_a: str | None = None
    register_with: str | None = None
    register_token: str | None = None
    token_encoding: str = "base64"  # noqa: S105 - an encoding name, not a secret
    command_delay: float = 1.0
    plug_in_delay: float = 2.0
    meter_interval: float = 5.0
    power_kw: float | None = None
    session_kwh: float = 20.0
    command_timeout: int = 30
    faults: dict[str, Any] = field(default_factory=dict)
    cdr_overcharge: float = 0.0
    ocpi_version: str = "2.2.1"  # the one version we offer and speak (cposim/versions.py converts at the edges)
    hub: list[tuple[str, str]] = field(default_factory=list)  # --hub: the CPO parties we front as a hub (hub.py)


def parse_faults(values: list[str] | None) -> dict[str, Any]:
    """Parse repeatable/comma-separated `--fault` values like `slow=0.5,http500=0.1,lowercase`."""
    faults: dict[str, Any] = {}
    for value in values or []:
        for item in value.split(","):
            item = item.strip()
            if not item:
                continue
            name, _, arg = item.partition("=")
            name = name.strip().lower()
            if name not in FAULT_NAMES:
                raise ValueError(f"unknown fault {name!r}; known: {', '.join(FAULT_NAMES)}")
            faults[name] = normalise_fault(name, arg.strip() or None)
    return faults


def normalise_fault(name: str, value: Any) -> Any:
    """Coerce a fault value: a float for slow/http500/reserve_ahead_limit, a bool for the flags."""
    if name in _NUMERIC_FAULTS:
        if value is None or value is True or value == "":
            return _NUMERIC_DEFAULTS[name]
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"{name} must be a finite number")
        return number
    if isinstance(value, str):
        return value.lower() not in ("0", "false", "no", "off")
    return True if value is None else bool(value)


DEFAULTS = SimConfig()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the simulator options on an argparse parser (defaults: SimConfig's)."""
    p, d = parser, DEFAULTS
    p.add_argument("--port", type=int, default=d.port, help="TCP port on 127.0.0.1 (0 = pick a free one)")
    p.add_argument("--country-code", default=d.country_code, help="our OCPI country_code")
    p.add_argument("--party-id", default=d.party_id, help="our OCPI party_id")
    p.add_argument("--name", default=d.name, help="business name in credentials and locations")
    p.add_argument("--seed", type=int, default=d.seed, help="seed for the synthetic data")
    p.add_argument("--locations", type=int, default=d.locations, help="number of synthetic locations")
    p.add_argument("--cities", default="", help="comma list of built-in city names or Name:lat:lon")
    p.add_argument("--locations-file", default=d.locations_file, help="load Locations from an OCPI file instead")
    p.add_argument("--currency", default=d.currency)
    p.add_argument("--tariff-profile", choices=("a", "b"), default=d.tariff_profile)
    p.add_argument("--page-limit", type=int, default=d.page_limit, help="X-Limit of our list endpoints")
    p.add_argument("--token-a", default=d.token_a, help="Token A we accept for registration (default random)")
    p.add_argument("--register-with", default=d.register_with, help="versions URL of an eMSP to register with")
    p.add_argument("--register-token", default=d.register_token, help="Token A given by that eMSP")
    p.add_argument("--token-encoding", choices=("base64", "raw"), default=d.token_encoding)
    p.add_argument("--command-delay", type=float, default=d.command_delay, help="seconds before a CommandResult")
    p.add_argument("--plug-in-delay", type=float, default=d.plug_in_delay, help="seconds from accepted start to ACTIVE")
    p.add_argument("--meter-interval", type=float, default=d.meter_interval, help="seconds between meter updates")
    p.add_argument("--power-kw", type=float, default=d.power_kw, help="charging power for every EVSE")
    p.add_argument(
        "--session-kwh",
        type=float,
        default=d.session_kwh,
        help="energy an EV takes before it only parks (PARKING_TIME)",
    )
    p.add_argument(
        "--command-timeout", type=int, default=d.command_timeout, help="timeout announced in CommandResponse"
    )
    p.add_argument("--fault", action="append", default=[], help="fault mode(s), repeatable or comma list")
    p.add_argument(
        "--cdr-overcharge", type=float, default=d.cdr_overcharge, help="bill CDRs this fraction above tariff"
    )
    p.add_argument(
        "--ocpi-version",
        choices=OCPI_VERSIONS,
        default=d.ocpi_version,
        help="the one OCPI version we offer, speak and register in",
    )
    p.add_argument("--hub", default="", help="act as an OCPI hub fronting these CPO parties: CC*PID,CC*PID,...")


def config_from_options(opts: dict[str, Any]) -> SimConfig:
    """Build a SimConfig from parsed options (argparse namespace vars or Django's options dict); options
    missing or empty take SimConfig's defaults."""
    d = DEFAULTS
    cities = [c.strip() for c in (opts.get("cities") or "").split(",") if c.strip()]
    return SimConfig(
        port=int(opts.get("port") or d.port),
        country_code=str(opts.get("country_code") or d.country_code).upper(),
        party_id=str(opts.get("party_id") or d.party_id).upper(),
        name=opts.get("name") or d.name,
        seed=int(opts.get("seed") if opts.get("seed") is not None else d.seed),
        locations=int(opts.get("locations") if opts.get("locations") is not None else d.locations),
        cities=cities,
        locations_file=opts.get("locations_file"),
        currency=str(opts.get("currency") or d.currency).upper(),
        tariff_profile=opts.get("tariff_profile") or d.tariff_profile,
        page_limit=max(1, int(opts.get("page_limit") or d.page_limit)),
        token_a=opts.get("token_a"),
        register_with=opts.get("register_with"),
        register_token=opts.get("register_token"),
        token_encoding=opts.get("token_encoding") or d.token_encoding,
        command_delay=float(opts.get("command_delay") if opts.get("command_delay") is not None else d.command_delay),
        plug_in_delay=float(opts.get("plug_in_delay") if opts.get("plug_in_delay") is not None else d.plug_in_delay),
        meter_interval=max(0.05, float(opts.get("meter_interval") or d.meter_interval)),
        power_kw=opts.get("power_kw"),
        session_kwh=float(opts.get("session_kwh") or d.session_kwh),
        command_timeout=int(opts.get("command_timeout") or d.command_timeout),
        faults=parse_faults(opts.get("fault")),
        cdr_overcharge=float(opts.get("cdr_overcharge") or d.cdr_overcharge),
        ocpi_version=ocpi_version(opts.get("ocpi_version")),
        hub=hub_parties(opts.get("hub"), opts.get("ocpi_version"), opts.get("country_code"), opts.get("party_id")),
    )


def ocpi_version(value: str | None) -> str:
    """The --ocpi-version value, checked (the management command's callers may pass any string)."""
    version = str(value or DEFAULTS.ocpi_version)
    if version not in OCPI_VERSIONS:
        raise ValueError(f"unknown OCPI version {version!r}; known: {', '.join(OCPI_VERSIONS)}")
    return version


def hub_parties(value: str | None, version: str | None, country_code: Any, party_id: Any) -> list[tuple[str, str]]:
    """The --hub value `CC*PID,CC*PID,...`: the CPO parties a hub fronts (OCPI 2.2.1 only: 2.1.1 has no hubs,
    and the simulator's 2.3.0 wire has no `hub_party_id`)."""
    parties: list[tuple[str, str]] = []
    for item in (value or "").split(","):
        country, _, party = item.strip().upper().partition("*")
        if not item.strip():
            continue
        if len(country) != 2 or not country.isalpha() or not (len(party) == 3 and party.isalnum() and party.isascii()):
            raise ValueError(f"--hub: {item.strip()!r} is not CC*PID (2 letters, 3 letters or digits)")
        if (country, party) not in parties:
            parties.append((country, party))
    own = (str(country_code or DEFAULTS.country_code).upper(), str(party_id or DEFAULTS.party_id).upper())
    if own in parties:
        raise ValueError(f"--hub: {own[0]}*{own[1]} is the hub itself (--country-code/--party-id)")
    if parties and (version or DEFAULTS.ocpi_version) != "2.2.1":
        raise ValueError("--hub needs --ocpi-version 2.2.1")
    return parties


def build_parser() -> argparse.ArgumentParser:
    """Stand-alone parser for `python -m cposim`."""
    parser = argparse.ArgumentParser(
        prog="python -m cposim", description="OCPI 2.1.1/2.2.1/2.3.0 CPO simulator (test and demo peer of the eMSP)"
    )
    add_arguments(parser)
    return parser
