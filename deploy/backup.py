"""Back up the platform's PostgreSQL database and prove a backup restores (docs/operations.md, "Backups and
restore"). Run from the repository root with the platform's environment (DATABASE_URL and the production
settings), PostgreSQL's client tools (pg_dump, pg_restore) on PATH, of the server's major version or newer:

  python deploy/backup.py dump --out /var/backups/emsp
      pg_dump -Fc of DATABASE_URL, plus a manifest taken in the same snapshot: each table's row count and the
      database's triggers. Prints the dump's path.

  python deploy/backup.py restore-check /var/backups/emsp/emsp-20260101T020000Z.dump \\
      --into postgres://postgres@db-scratch:5432/emsp_restore_check [--replace]
      Restores the dump into a database it creates (refusing one that exists unless --replace), then `verify`.

  python deploy/backup.py verify /var/backups/emsp/emsp-20260101T020000Z.dump --database URL
      The checks alone, on a database restored from that dump: `manage.py migrate --check` (the dump matches
      this code's migrations), every table's row count equals the manifest's, the same triggers (the ledger's
      guards among them), every id sequence ahead of its table's largest id (new rows won't collide), and each
      currency's ledger trial balance at zero (billing.finance.trial_balances).

Exit status: 0 when every check passes, 1 when one fails (each failure printed), 2 when it could not run.
tests/e2e/test_backup_restore.py runs it against the test database."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

REPO = Path(__file__).resolve().parents[1]
TABLES = """
    SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY 1
"""
TRIGGERS = """
    SELECT c.relname || '.' || t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'public' AND NOT t.tgisinternal ORDER BY 1
"""
# The restored database, from Django's side: pending migrations, and the ledger's books per currency.
DJANGO_CHECKS = """
import json, django
django.setup()
from django.core.management import call_command
result = {"migrations_pending": False, "unbalanced": {}}
try:
    call_command("migrate", check=True, verbosity=0)
except SystemExit as exc:
    result["migrations_pending"] = bool(exc.code)
from billing.finance import trial_balances
result["unbalanced"] = {book.currency: str(book.total) for book in trial_balances() if not book.balanced}
print("DJANGO_CHECKS " + json.dumps(result))
"""


class CannotRun(Exception):
    """The backup could not be taken or checked at all (exit status 2)."""


def libpq_url(url: str) -> str:
    """DATABASE_URL as libpq and pg_dump read it (django-environ also accepts postgres://, pgsql://...)."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql", "pgsql", "postgis"):
        raise CannotRun(f"not a PostgreSQL URL: {parts.scheme}://…")
    return urlunsplit(("postgresql", *parts[1:]))


def database_name(url: str) -> str:
    name = urlsplit(url).path.lstrip("/")
    if not name:
        raise CannotRun("the database URL names no database")
    return name


def redacted(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{host}:{parts.port or 5432}/{database_name(url)}"


def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)
    except FileNotFoundError as exc:
        raise CannotRun(f"{command[0]} not found: install PostgreSQL's client tools") from exc


def row_counts(conn: psycopg.Connection[Any], tables: list[str]) -> dict[str, int]:
    counts = {}
    for table in tables:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
        counts[table] = row[0] if row else 0
    return counts


def dump(database_url: str, out_dir: Path, exclude_data: list[str]) -> Path:
    """pg_dump -Fc of the database, and its manifest from the same snapshot (pg_export_snapshot)."""
    url = libpq_url(database_url)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = out_dir / f"emsp-{stamp}.dump"
    with psycopg.connect(url) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        with conn.transaction():
            row = conn.execute("SELECT pg_export_snapshot()").fetchone()
            snapshot = row[0] if row else ""
            tables = [r[0] for r in conn.execute(TABLES)]
            unknown = sorted(set(exclude_data) - set(tables))
            if unknown:
                raise CannotRun(f"--exclude-data: no such table {', '.join(unknown)}")
            excluded = set(exclude_data)
            for table in exclude_data:  # a partitioned table's partitions hold its rows
                excluded |= {r[0] for r in conn.execute("SELECT relid::text FROM pg_partition_tree(%s)", [table])}
            counts = row_counts(conn, [t for t in tables if t not in excluded])
            counts |= dict.fromkeys(sorted(set(exclude_data)), 0)  # restored empty
            manifest = {
                "created_at": datetime.now(UTC).isoformat(),
                "database": redacted(url),
                "server_version": conn.info.server_version,
                "excluded_data": sorted(excluded),
                "tables": counts,
                "triggers": [r[0] for r in conn.execute(TRIGGERS)],
            }
            command = ["pg_dump", "--format=custom", f"--snapshot={snapshot}", f"--file={path}", f"--dbname={url}"]
            command += [f"--exclude-table-data={table}" for table in sorted(excluded)]
            done = run(command)
            if done.returncode:
                path.unlink(missing_ok=True)
                raise CannotRun(f"pg_dump failed: {done.stderr.strip()}")
    manifest_path(path).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return path


def manifest_path(dump_path: Path) -> Path:
    return dump_path.with_suffix(".manifest.json")


def maintenance_url(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/postgres", parts.query, ""))


def create_database(url: str, *, replace: bool) -> None:
    name = database_name(url)
    with psycopg.connect(maintenance_url(url), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if exists and not replace:
            raise CannotRun(f"database {name} exists: restore-check restores into a fresh one (--replace drops it)")
        if exists:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))


def restore(dump_path: Path, into_url: str, *, replace: bool, jobs: int) -> None:
    url = libpq_url(into_url)
    create_database(url, replace=replace)
    command = ["pg_restore", "--no-owner", "--no-privileges", "--exit-on-error", f"--jobs={jobs}"]
    done = run([*command, f"--dbname={url}", str(dump_path)])
    if done.returncode:
        raise CannotRun(f"pg_restore failed: {done.stderr.strip()}")


def sequences_behind(conn: psycopg.Connection[Any], tables: list[str]) -> list[str]:
    """Tables whose id sequence would hand out an id that is already taken."""
    behind = []
    for table in tables:
        row = conn.execute(
            "SELECT pg_get_serial_sequence(quote_ident(%s), a.attname) FROM pg_attribute a "
            "WHERE a.attrelid = quote_ident(%s)::regclass AND a.attname = 'id' AND NOT a.attisdropped",
            [table, table],
        ).fetchone()
        if not row or not row[0]:
            continue
        sequence = row[0]
        seq = conn.execute(sql.SQL("SELECT last_value, is_called FROM {}").format(sql.SQL(sequence))).fetchone()
        top = conn.execute(sql.SQL("SELECT max(id) FROM {}").format(sql.Identifier(table))).fetchone()
        if not seq or not top or top[0] is None:
            continue
        next_id = seq[0] + 1 if seq[1] else seq[0]
        if next_id <= top[0]:
            behind.append(f"{table}: sequence {sequence} would hand out {next_id}, but ids go up to {top[0]}")
    return behind


def verify(dump_path: Path, database_url: str) -> list[str]:
    """Every check on the restored database; the failures, one line each."""
    url = libpq_url(database_url)
    manifest = json.loads(manifest_path(dump_path).read_text())
    failures: list[str] = []
    with psycopg.connect(url, autocommit=True) as conn:
        tables = [r[0] for r in conn.execute(TABLES)]
        if sorted(tables) != sorted(manifest["tables"]):
            missing = sorted(set(manifest["tables"]) - set(tables))
            extra = sorted(set(tables) - set(manifest["tables"]))
            failures.append(f"tables differ: missing {missing}, not in the backup {extra}")
        counts = row_counts(conn, [t for t in tables if t in manifest["tables"]])
        for table, expected in sorted(manifest["tables"].items()):
            if table in counts and counts[table] != expected:
                failures.append(f"{table}: {counts[table]} rows restored, {expected} backed up")
        triggers = [r[0] for r in conn.execute(TRIGGERS)]
        if triggers != manifest["triggers"]:
            lost = sorted(set(manifest["triggers"]) - set(triggers))
            extra = sorted(set(triggers) - set(manifest["triggers"]))
            failures.append(f"triggers differ: missing {lost}, not in the backup {extra}")
        failures += sequences_behind(conn, tables)
    env = {**os.environ, "DATABASE_URL": database_url, "DJANGO_SETTINGS_MODULE": "emsp.settings"}
    done = run([sys.executable, "-c", DJANGO_CHECKS], cwd=REPO, env=env, timeout=600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("DJANGO_CHECKS ")]
    if done.returncode or not lines:
        raise CannotRun(f"the Django checks did not run: {done.stderr.strip()[-2000:]}")
    result = json.loads(lines[-1].removeprefix("DJANGO_CHECKS "))
    if result["migrations_pending"]:
        failures.append("manage.py migrate --check: migrations of this code are not applied in the backup")
    for currency, total in sorted(result["unbalanced"].items()):
        failures.append(f"ledger: the {currency} trial balance is {total}, not 0")
    return failures


def report(failures: list[str], what: str) -> int:
    for failure in failures:
        print(f"FAIL {failure}")
    if failures:
        print(f"{what}: {len(failures)} check(s) failed")
        return 1
    print(f"{what}: every check passed (migrations, row counts, triggers, sequences, ledger trial balance)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p_dump = commands.add_parser("dump", help="pg_dump DATABASE_URL with its manifest")
    p_dump.add_argument("--out", type=Path, default=Path())
    p_dump.add_argument(
        "--exclude-data",
        action="append",
        default=[],
        metavar="TABLE",
        help="back up this table's definition but not its rows (e.g. the message logs); repeatable",
    )
    p_restore = commands.add_parser("restore-check", help="restore a dump into a fresh database and verify it")
    p_restore.add_argument("dump", type=Path)
    p_restore.add_argument("--into", required=True, help="URL of the database to create and restore into")
    p_restore.add_argument("--replace", action="store_true", help="drop that database first if it exists")
    p_restore.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1))
    p_verify = commands.add_parser("verify", help="the checks alone, on a database restored from the dump")
    p_verify.add_argument("dump", type=Path)
    p_verify.add_argument("--database", required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "dump":
            database_url = os.environ.get("DATABASE_URL", "")
            if not database_url:
                raise CannotRun("DATABASE_URL is not set")
            print(dump(database_url, args.out, args.exclude_data))
            return 0
        if not manifest_path(args.dump).exists():
            raise CannotRun(f"no manifest {manifest_path(args.dump)} beside the dump (made by `dump`)")
        if args.command == "restore-check":
            restore(args.dump, args.into, replace=args.replace, jobs=args.jobs)
            return report(verify(args.dump, args.into), f"restored {args.dump.name} into {redacted(args.into)}")
        return report(verify(args.dump, args.database), f"{redacted(args.database)} against {args.dump.name}")
    except (CannotRun, psycopg.Error) as exc:
        print(f"ERROR {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
