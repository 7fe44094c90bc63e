"""Safe defaults (emsp/safe_defaults.py, emsp/settings.py): production unless told otherwise, and production
refuses unsafe settings naming each one; every environment variable the settings read is in README's table."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from emsp.safe_defaults import DEVELOPMENT_SECRET_KEY, production_problems

REPO = Path(__file__).resolve().parents[1]
GOOD_SECRET = "s" * 20 + "0123456789abcdefghijklmnopqrstuvwxyz"
SAFE = {
    "debug": False,
    "secret_key": GOOD_SECRET,
    "public_base_url": "https://emsp.example.com",
    "broker_url": "redis://redis.internal:6379/0",
    "allowed_hosts": ["emsp.example.com"],
    "field_encryption_keys": ["a-fernet-key"],
}
SAFE_ENV = {
    "DJANGO_SECRET_KEY": GOOD_SECRET,
    "PUBLIC_BASE_URL": "https://emsp.example.com",
    "REDIS_URL": "redis://127.0.0.1:6379/15",
    "DJANGO_ALLOWED_HOSTS": "emsp.example.com",
    "FIELD_ENCRYPTION_KEYS": "x7pXJvLQh2m5sD0nqk3r9Q4tY8uW1zB6cE0fG2hJ4kM=",
}


def load_settings(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Import the settings in a fresh process with exactly this environment (plus PATH)."""
    return subprocess.run(
        [sys.executable, "-c", "from django.conf import settings; print(settings.DJANGO_ENV, settings.DEBUG)"],
        cwd=REPO,
        env={"PATH": os.environ.get("PATH", ""), "DJANGO_SETTINGS_MODULE": "emsp.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_it_finds_nothing_wrong_with_safe_production_settings() -> None:
    assert production_problems(**SAFE) == []  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"debug": True}, "DJANGO_DEBUG"),
        ({"secret_key": ""}, "DJANGO_SECRET_KEY"),
        ({"secret_key": DEVELOPMENT_SECRET_KEY}, "DJANGO_SECRET_KEY"),
        ({"secret_key": "django-insecure-" + "x" * 50}, "DJANGO_SECRET_KEY"),
        ({"secret_key": "short-secret"}, "DJANGO_SECRET_KEY"),
        ({"public_base_url": "http://emsp.example.com"}, "PUBLIC_BASE_URL"),
        ({"broker_url": "filesystem://"}, "REDIS_URL"),
        ({"allowed_hosts": []}, "DJANGO_ALLOWED_HOSTS"),
        ({"field_encryption_keys": []}, "FIELD_ENCRYPTION_KEYS"),
    ],
)
def test_it_names_each_unsafe_production_setting(change: dict[str, object], named: str) -> None:
    problems = production_problems(**{**SAFE, **change})  # type: ignore[arg-type]
    assert len(problems) == 1
    assert problems[0].startswith(named)


def test_it_runs_the_tests_as_test() -> None:
    # pyproject.toml (pytest-env) sets it before the settings load, and the processes tests start inherit it.
    assert settings.DJANGO_ENV == "test"
    assert os.environ["DJANGO_ENV"] == "test"
    assert not settings.PRODUCTION


def test_it_starts_as_production_and_refuses_when_django_env_is_unset() -> None:
    env_file = REPO / ".env"
    if env_file.exists() and "DJANGO_ENV" in env_file.read_text():
        pytest.skip(".env sets DJANGO_ENV on this machine")
    result = load_settings({})
    assert result.returncode != 0
    assert "Refusing to start with unsafe production settings" in result.stderr
    for name in ("DJANGO_SECRET_KEY", "PUBLIC_BASE_URL", "REDIS_URL", "DJANGO_ALLOWED_HOSTS"):
        assert name in result.stderr
    assert "DJANGO_ENV is unset, so these are production settings" in result.stderr


@pytest.mark.parametrize(
    ("command", "refused"), [(["makemigrations", "--check", "--dry-run"], False), (["check"], True)]
)
def test_only_schema_file_commands_run_on_unset_production_settings(command: list[str], refused: bool) -> None:
    """`manage.py makemigrations --check` without DJANGO_ENV (an operator's or a check's) serves nothing and reads
    no secret: it runs; anything else still refuses."""
    env_file = REPO / ".env"
    if env_file.exists() and "DJANGO_ENV" in env_file.read_text():
        pytest.skip(".env sets DJANGO_ENV on this machine")
    result = subprocess.run(
        [sys.executable, "manage.py", *command],
        cwd=REPO,
        env={"PATH": os.environ.get("PATH", ""), "DATABASE_URL": "", "DJANGO_SETTINGS_MODULE": "emsp.settings"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (result.returncode != 0) is refused, result.stderr[-2000:]
    assert ("Refusing to start with unsafe production settings" in result.stderr) is refused


def test_it_starts_as_production_with_safe_settings() -> None:
    env_file = REPO / ".env"
    if env_file.exists() and "DJANGO_ENV" in env_file.read_text():
        pytest.skip(".env sets DJANGO_ENV on this machine")
    result = load_settings(SAFE_ENV)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["production", "False"]


def test_it_refuses_debug_in_production_naming_the_setting() -> None:
    result = load_settings({**SAFE_ENV, "DJANGO_ENV": "production", "DJANGO_DEBUG": "true"})
    assert result.returncode != 0
    assert "DJANGO_DEBUG is on" in result.stderr
    assert "DJANGO_ENV is unset" not in result.stderr


def test_it_refuses_an_unknown_django_env() -> None:
    result = load_settings({"DJANGO_ENV": "prod"})
    assert result.returncode != 0
    assert "DJANGO_ENV must be development, test or production, not 'prod'" in result.stderr


def test_it_runs_make_targets_as_development() -> None:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_ENV"}
    result = subprocess.run(
        ["make", "-s", "--eval", "print-django-env: ; @echo $$DJANGO_ENV", "print-django-env"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "development"


# --- one table documents every environment variable ------------------------------------------------------


def settings_env_names() -> set[str]:
    source = (REPO / "emsp" / "settings.py").read_text()
    return set(re.findall(r"\benv(?:\.\w+)?\(\s*[\"']([A-Z][A-Z0-9_]*)[\"']", source))


def readme_table_names() -> list[str]:
    """The first column's `NAMES` of README's one configuration table (`<CLASS>` stands for any part)."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return [name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_<>]*)`", row.split("|")[1])]


def documented(name: str, table: list[str]) -> bool:
    return any(re.fullmatch(re.sub(r"<[A-Z]+>", "[A-Z0-9_]+", entry), name) for entry in table)


def test_it_finds_the_environment_variables_the_settings_read() -> None:
    names = settings_env_names()
    assert {"DJANGO_ENV", "DATABASE_URL", "BECKN_DOMAINS", "RETENTION_QUOTES_DAYS"} <= names
    assert len(names) > 50


def test_it_documents_every_environment_variable_in_the_readme_table() -> None:
    table = readme_table_names()
    missing = sorted(name for name in settings_env_names() if not documented(name, table))
    assert missing == [], f"add these to README's Configuration table: {missing}"
