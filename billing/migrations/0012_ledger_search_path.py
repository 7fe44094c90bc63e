"""The database's own checks look their tables up in the schema the platform's tables live in, whatever the
session's search_path: a session with another search_path, or a schema named after the connecting role (which
PostgreSQL's default path, "$user", public, reads first), can neither make a check fail with "relation does not
exist" nor point it at another schema's tables of the same name. Each function gets that schema by name, then
pg_temp (so a temporary table can't stand in either): the two ledger balance checks, and the tariff generation's
trigger function, whose `SET search_path FROM CURRENT` (0010) kept the path's text, "$user" included."""

from __future__ import annotations

from django.db import migrations

LEDGER = ("billing_ledger_entry_balanced_once()", "billing_ledger_lines_balanced()")
TARIFFS = "billing_tariff_generation_bump()"


def pin(apps: object, schema_editor: object) -> None:
    connection = schema_editor.connection  # type: ignore[attr-defined]
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT quote_ident(current_schema())")
        schema = cursor.fetchone()[0]
    for function in (*LEDGER, TARIFFS):
        schema_editor.execute(f"ALTER FUNCTION {function} SET search_path = {schema}, pg_temp")  # type: ignore[attr-defined]


def unpin(apps: object, schema_editor: object) -> None:
    if schema_editor.connection.vendor == "postgresql":  # type: ignore[attr-defined]
        for function in LEDGER:
            schema_editor.execute(f"ALTER FUNCTION {function} RESET search_path")  # type: ignore[attr-defined]
        schema_editor.execute(f"ALTER FUNCTION {TARIFFS} SET search_path FROM CURRENT")  # type: ignore[attr-defined]


class Migration(migrations.Migration):
    dependencies = [("billing", "0011_lz4_documents")]
    operations = [migrations.RunPython(pin, unpin)]
