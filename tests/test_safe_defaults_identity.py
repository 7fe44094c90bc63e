"""Our own OCPI identity is checked (emsp/safe_defaults.py, identity_problems): OCPI_COUNTRY_CODE, OCPI_PARTY_ID
and OCPI_BUSINESS_NAME go into every token and credentials exchange, PUBLIC_BASE_URL heads every URL we hand out;
set wrong, they had gone out unchecked. `manage.py check` (and every management command, the release step's
migrate too) names each one, in every environment."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
from django.core.checks import run_checks

from emsp.safe_defaults import LONGEST_PATH, URL_MAX, identity_problems
from tests.test_safe_defaults import REPO

GOOD = {
    "country_code": "IN",
    "party_id": "EMS",
    "business_name": "Open eMSP",
    "public_base_url": "https://emsp.example.com",
}


def test_our_defaults_and_a_plain_identity_are_fine() -> None:
    assert identity_problems(**GOOD) == []
    assert identity_problems(country_code="NL", party_id="T2M", business_name="Énergie ✓ " + "x" * 90,
                             public_base_url="https://" + "e" * (URL_MAX - len(LONGEST_PATH) - 8)) == []  # fmt: skip


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"country_code": "IND"}, "OCPI_COUNTRY_CODE"),
        ({"country_code": "in"}, "OCPI_COUNTRY_CODE"),
        ({"country_code": "I1"}, "OCPI_COUNTRY_CODE"),
        ({"country_code": "IN\n"}, "OCPI_COUNTRY_CODE"),
        ({"party_id": "EMSP"}, "OCPI_PARTY_ID"),
        ({"party_id": "ems"}, "OCPI_PARTY_ID"),
        ({"party_id": "EM"}, "OCPI_PARTY_ID"),
        ({"party_id": "EÄS"}, "OCPI_PARTY_ID"),
        ({"business_name": ""}, "OCPI_BUSINESS_NAME"),
        ({"business_name": "   "}, "OCPI_BUSINESS_NAME"),
        ({"business_name": "Open eMSP\t"}, "OCPI_BUSINESS_NAME"),
        ({"business_name": "Open\u2028eMSP"}, "OCPI_BUSINESS_NAME"),
        ({"business_name": "x" * 101}, "OCPI_BUSINESS_NAME"),
        ({"public_base_url": "https://" + "e" * (URL_MAX - len(LONGEST_PATH) - 7)}, "PUBLIC_BASE_URL"),
    ],
)
def test_it_names_each_identity_setting_a_partner_would_refuse(change: dict[str, str], named: str) -> None:
    problems = identity_problems(**{**GOOD, **change})

    assert len(problems) == 1
    assert problems[0].startswith(named)


def test_the_longest_url_we_hand_out_fits_under_a_base_url_the_check_takes(settings: Any, db: None) -> None:
    from emsp.models import Command
    from ocpi.rendering import command_response_url

    settings.PUBLIC_BASE_URL = "https://" + "e" * (URL_MAX - len(LONGEST_PATH) - 8)
    assert identity_problems(**{**GOOD, "public_base_url": settings.PUBLIC_BASE_URL}) == []
    longest = max(len(command_response_url(Command(type=t))) for t in Command.Type.values)

    assert longest <= URL_MAX


def test_manage_py_check_names_them(settings: Any) -> None:
    settings.OCPI_PARTY_ID = "EMSP"
    settings.OCPI_COUNTRY_CODE = "IND"
    settings.OCPI_BUSINESS_NAME = "Open eMSP\t" + "x" * 120

    errors = [m for m in run_checks() if m.id == "emsp.E010"]

    assert all(m.is_serious() for m in errors)
    assert sorted(m.msg.split()[0] for m in errors) == ["OCPI_BUSINESS_NAME", "OCPI_COUNTRY_CODE", "OCPI_PARTY_ID"]


def test_our_settings_pass_the_check() -> None:
    assert [m for m in run_checks() if m.id == "emsp.E010"] == []


def test_a_development_machine_is_stopped_before_anything_is_sent() -> None:
    """The release step's `migrate` and `runserver` run the checks as `check` does."""
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=REPO,
        env={
            "PATH": os.environ.get("PATH", ""),
            "DJANGO_SETTINGS_MODULE": "emsp.settings",
            "DJANGO_ENV": "development",
            "DATABASE_URL": "",
            "REDIS_URL": "",
            "OCPI_PARTY_ID": "EMSP",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode != 0
    assert "(emsp.E010) OCPI_PARTY_ID must be 3 capital letters or digits" in result.stderr
