"""deploy/backup.py on the test PostgreSQL database: a dump with its manifest, restored into a fresh database that
passes every check (migrations, row counts, triggers, id sequences, the ledger's trial balance); and `verify`
failing, naming each, once the restored database differs from the backup."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from django.db import connection

from billing.models import LedgerAccount
from billing.services import ledger
from tests.e2e.platform import database_url
from tests.factories import DriverFactory, PartnerFactory, TokenFactory

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql" or not (shutil.which("pg_dump") and shutil.which("pg_restore")),
    reason="backups are PostgreSQL's pg_dump/pg_restore: set DATABASE_URL and install the client tools",
)


def backup(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "deploy/backup.py", *args],
        cwd=REPO,
        env={**os.environ, "DATABASE_URL": database_url()},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def restore_url(transactional_db: None) -> Iterator[str]:
    """A database name of our own beside the test database; dropped afterwards."""
    name = f"{settings.DATABASES['default']['NAME']}_restore"
    url = database_url().rsplit("/", 1)[0] + f"/{name}"
    yield url
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_it_restores_a_backup_into_a_fresh_database_and_checks_it(restore_url: str, tmp_path: Path) -> None:
    drivers = DriverFactory.create_batch(3)
    TokenFactory(driver=drivers[0])
    PartnerFactory()
    receivable = ledger.account("driver:1:receivable", "INR", LedgerAccount.Kind.ASSET)
    fees = ledger.account("revenue:fees", "INR", LedgerAccount.Kind.REVENUE)
    ledger.post(event="charge", legs=[ledger.Leg(receivable, Decimal("118.00")), ledger.Leg(fees, Decimal("-118.00"))])

    dumped = backup("dump", "--out", str(tmp_path))
    assert dumped.returncode == 0, dumped.stderr
    dump = Path(dumped.stdout.strip())
    manifest = json.loads(dump.with_suffix(".manifest.json").read_text())
    assert manifest["tables"]["emsp_driver"] == 3 and manifest["tables"]["emsp_token"] >= 1
    assert manifest["tables"]["billing_ledgerline"] == 2
    assert "billing_ledgerline.ledgerline_immutable" in manifest["triggers"]

    checked = backup("restore-check", str(dump), "--into", restore_url, "--replace")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "every check passed" in checked.stdout
    again = backup("restore-check", str(dump), "--into", restore_url)  # never over an existing database
    assert again.returncode == 2 and "exists" in again.stderr

    # The restored copy drifts from the backup: a migration record and the tokens gone, a sequence reset.
    with psycopg.connect(restore_url, autocommit=True) as conn:
        conn.execute("DELETE FROM django_migrations WHERE id = (SELECT max(id) FROM django_migrations)")
        conn.execute("DELETE FROM emsp_token")
        conn.execute("SELECT setval(pg_get_serial_sequence('billing_ledgerline', 'id'), 1, false)")
    verified = backup("verify", str(dump), "--database", restore_url)
    assert verified.returncode == 1, verified.stdout + verified.stderr
    failures = [line for line in verified.stdout.splitlines() if line.startswith("FAIL ")]
    assert any(line.startswith("FAIL django_migrations:") for line in failures), failures
    assert f"FAIL emsp_token: 0 rows restored, {manifest['tables']['emsp_token']} backed up" in failures
    assert any(line.startswith("FAIL billing_ledgerline: sequence") for line in failures), failures
    assert any("migrate --check" in line for line in failures), failures
