"""Re-encrypt every encrypted column with the first key of FIELD_ENCRYPTION_KEYS (after a new key was put
first); the old keys can then be dropped from the list."""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.core.management.base import BaseCommand
from django.db import connection, transaction

from emsp import crypto


class Command(BaseCommand):
    help = "Re-encrypt encrypted columns (partner tokens, drivers' contact details) with the current first key."

    def handle(self, *args: Any, **options: Any) -> None:
        crypto.forget_keys()
        for model in apps.get_models():
            fields = [
                f
                for f in model._meta.concrete_fields
                if isinstance(f, crypto.EncryptedTextField | crypto.EncryptedJSONField)
            ]
            if not fields:
                continue
            columns = [f.column for f in fields]
            table, pk = model._meta.db_table, model._meta.pk.column
            done = 0
            with transaction.atomic(), connection.cursor() as cursor:
                # The stored text itself, not the decrypted values: re-encrypting needs no round trip through JSON.
                cursor.execute(f"SELECT {pk}, {', '.join(columns)} FROM {table}")  # noqa: S608 - names from metadata
                for row in cursor.fetchall():
                    values = [crypto.reencrypt(value or "") for value in row[1:]]
                    with connection.cursor() as update:
                        assignments = ", ".join(f"{c} = %s" for c in columns)
                        update.execute(f"UPDATE {table} SET {assignments} WHERE {pk} = %s", [*values, row[0]])  # noqa: S608
                    done += 1
            self.stdout.write(f"{model._meta.label}: {done} rows re-encrypted ({', '.join(columns)})")
