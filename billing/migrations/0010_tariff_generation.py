# The tariffs' generation (billing/tariff_cache.py): a one-row table moved by a statement trigger on every write
# to billing_tariff, so catalogue search keeps tariffs between searches and knows when they change. PostgreSQL
# only; elsewhere search reads its tariffs each time.

from django.db import migrations

from billing.tariff_cache import CREATE_SQL, DROP_SQL


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for statement in CREATE_SQL:
            schema_editor.execute(statement)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for statement in DROP_SQL:
            schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0009_ledger_lean_indexes"),
    ]

    operations = [migrations.RunPython(create, drop, elidable=False)]
