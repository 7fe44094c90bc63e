"""The ledger's balance checks look their tables up in the schema they were created in, whatever the session's
search_path: a session with another search_path (a schema of its own first, or none of ours) can neither make
a check fail with "relation does not exist" nor point it at another schema's tables of the same name. The
tariff generation's trigger function (0010) was created this way; these two were not."""

from __future__ import annotations

from django.db import migrations

FUNCTIONS = ("billing_ledger_entry_balanced_once()", "billing_ledger_lines_balanced()")


def pin(apps: object, schema_editor: object) -> None:
    if schema_editor.connection.vendor == "postgresql":  # type: ignore[attr-defined]
        for function in FUNCTIONS:
            schema_editor.execute(f"ALTER FUNCTION {function} SET search_path FROM CURRENT")  # type: ignore[attr-defined]


def unpin(apps: object, schema_editor: object) -> None:
    if schema_editor.connection.vendor == "postgresql":  # type: ignore[attr-defined]
        for function in FUNCTIONS:
            schema_editor.execute(f"ALTER FUNCTION {function} RESET search_path")  # type: ignore[attr-defined]


class Migration(migrations.Migration):
    dependencies = [("billing", "0011_lz4_documents")]
    operations = [migrations.RunPython(pin, unpin)]
