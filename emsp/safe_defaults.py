"""What production refuses to start with (emsp/settings.py calls this; README, *Safe defaults*), and our OCPI
identity as the spec has it, in every environment (a system check). Pure: the settings are passed in, so tests
need no reload; only the check reads them, when it runs."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from django.core import checks

ENVIRONMENTS = ("development", "test", "production")
DEVELOPMENT_SECRET_KEY = "dev-only-insecure-key-0123456789-abcdefghijklmnopqrstuvwxyz"  # noqa: S105 - public on purpose
NO_SERVER_BROKERS = ("filesystem://", "memory://")
UNSET_HINT = (
    "DJANGO_ENV is unset, so these are production settings. On a development machine set DJANGO_ENV=development "
    "(make run, make demo and the tests do)."
)


# Management commands that only write or compare schema files: they serve nothing, call no partner and read no
# secret, so production's refusal doesn't stop them (`manage.py makemigrations --check` on a machine without
# DJANGO_ENV, as CI's and an operator's checks run it).
OFFLINE_COMMANDS = frozenset({"makemigrations"})


def offline_command(argv: list[str]) -> bool:
    """Is this process `manage.py <one of OFFLINE_COMMANDS>`?"""
    return len(argv) > 1 and argv[0].endswith("manage.py") and argv[1] in OFFLINE_COMMANDS


def production_problems(
    *,
    debug: bool,
    secret_key: str,
    public_base_url: str,
    broker_url: str,
    allowed_hosts: list[str],
    field_encryption_keys: list[str],
    redis_url: str | None = None,
) -> list[str]:
    """Each unsafe production setting, one line each, naming the environment variable to set. `redis_url` is
    REDIS_URL as set (emsp/settings.py passes it; None leaves it unchecked): the broker may be RabbitMQ, but the
    cache, rate limits and Beckn message-id sightings are Redis's whatever the broker."""
    problems = []
    if debug:
        problems.append("DJANGO_DEBUG is on: never in production (error pages show settings and code to anyone).")
    # Django's own deploy check (security.W009) asks for 50 characters and 5 different ones.
    if not secret_key or secret_key == DEVELOPMENT_SECRET_KEY or secret_key.startswith("django-insecure-"):
        problems.append(
            "DJANGO_SECRET_KEY is unset or a development key: set a random one of 50+ characters "
            "(python -c 'import secrets; print(secrets.token_urlsafe(64))')."
        )
    elif len(secret_key) < 50 or len(set(secret_key)) < 5:
        problems.append("DJANGO_SECRET_KEY is too weak: use 50+ random characters.")
    if not public_base_url.startswith("https://"):
        problems.append(
            f"PUBLIC_BASE_URL must be an https:// URL in production (it is {public_base_url!r}): partners "
            "are handed URLs under it and send their tokens to them."
        )
    if broker_url.startswith(NO_SERVER_BROKERS):
        problems.append(
            "REDIS_URL is unset (and CELERY_BROKER_URL too): production needs a real Celery broker, Redis or "
            "RabbitMQ (the filesystem queue is for one development machine)."
        )
    elif redis_url is not None and not redis_url.strip():
        problems.append(
            "REDIS_URL is unset: production needs Redis also when CELERY_BROKER_URL names RabbitMQ. The cache, "
            "rate limits and Beckn message-id sightings live there; without it each process would keep its own "
            "in memory (limits per process, duplicate Beckn messages not seen)."
        )
    if not [host for host in allowed_hosts if host.strip()]:
        problems.append("DJANGO_ALLOWED_HOSTS is empty: every request would be refused (400). List our host names.")
    if not [key for key in field_encryption_keys if key.strip()]:
        problems.append("FIELD_ENCRYPTION_KEYS is required in production (manage.py encryption_key makes one).")
    return problems


def refusal_message(problems: list[str], *, env_was_set: bool) -> str:
    lines = ["Refusing to start with unsafe production settings:", *(f"  - {p}" for p in problems)]
    if not env_was_set:
        lines.append(UNSET_HINT)
    return "\n".join(lines)


# --- our OCPI identity (OCPI_* and PUBLIC_BASE_URL): sent to every partner, whatever the environment ----------

# types.asciidoc: country_code CiString(2) (ISO 3166-1 alpha-2), party_id CiString(3) (ISO 15118), in every
# Token, header and Credentials role we send; BusinessDetails.name string(100), printable; a URL string(255).
OCPI_COUNTRY_CODE_RE = re.compile(r"[A-Z]{2}")
OCPI_PARTY_ID_RE = re.compile(r"[A-Z0-9]{3}")
BUSINESS_NAME_MAX = 100
URL_MAX = 255
# The longest path we append to PUBLIC_BASE_URL in a URL handed to a partner: a command's response_url
# (ocpi/rendering.py::command_response_url; the longest type, a UUID).
LONGEST_PATH = "/ocpi/emsp/2.2.1/commands/CANCEL_RESERVATION/" + "0" * 36


def identity_problems(*, country_code: str, party_id: str, business_name: str, public_base_url: str) -> list[str]:
    """Each of our identity settings a partner would refuse, one line each, naming the environment variable. Set
    as they are, they go out unchecked in every token, header and credentials exchange: a CPO refusing them
    refuses all of it, or files our tokens under a party that is not ours."""
    problems = []
    if not OCPI_COUNTRY_CODE_RE.fullmatch(country_code):
        problems.append(f"OCPI_COUNTRY_CODE must be 2 capital letters, ISO 3166-1 alpha-2 (it is {country_code!r}).")
    if not OCPI_PARTY_ID_RE.fullmatch(party_id):
        problems.append(f"OCPI_PARTY_ID must be 3 capital letters or digits, ISO 15118 (it is {party_id!r}).")
    if not business_name.strip() or not business_name.isprintable() or len(business_name) > BUSINESS_NAME_MAX:
        problems.append(
            f"OCPI_BUSINESS_NAME must be printable text (no tabs or line breaks) of 1 to {BUSINESS_NAME_MAX} "
            f"characters, our credentials' business_details.name (it is {business_name[:120]!r}, "
            f"{len(business_name)} characters)."
        )
    longest = URL_MAX - len(LONGEST_PATH)
    if len(public_base_url) > longest:
        problems.append(
            f"PUBLIC_BASE_URL must be at most {longest} characters (it is {len(public_base_url)}): the URLs we "
            f"hand to partners under it (a command's response_url) are OCPI URLs of at most {URL_MAX}."
        )
    return problems


def identity_settings(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """identity_problems of the settings, as errors of `manage.py check` and of every management command before
    it runs (the release step's `migrate` too): a mistyped party stops a deploy, and a development machine, before
    anything is sent."""
    from django.conf import settings

    return [
        checks.Error(problem, hint="Set it in the environment (README, Configuration).", id="emsp.E010")
        for problem in identity_problems(
            country_code=settings.OCPI_COUNTRY_CODE,
            party_id=settings.OCPI_PARTY_ID,
            business_name=settings.OCPI_BUSINESS_NAME,
            public_base_url=settings.PUBLIC_BASE_URL,
        )
    ]
