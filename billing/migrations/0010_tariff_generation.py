# The tariffs' generation (billing/tariff_cache.py): a one-row table moved by a statement trigger on every write
# to billing_tariff, so catalogue search keeps tariffs between searches and knows when they change. PostgreSQL
# only; elsewhere search reads its tariffs each time. The function runs with the search_path it was created
# under, so a session with another one (pg_dump's restore of data alone, say) still finds the table.

from django.db import migrations

BUMP = (
    "INSERT INTO billing_tariff_generation (id, n) VALUES (1, nextval('billing_tariff_generation_seq')) "
    "ON CONFLICT (id) DO UPDATE SET n = EXCLUDED.n"
)
CREATE = [
    "CREATE SEQUENCE IF NOT EXISTS billing_tariff_generation_seq",
    "CREATE TABLE IF NOT EXISTS billing_tariff_generation (id smallint PRIMARY KEY CHECK (id = 1), n bigint NOT NULL)",
    BUMP,
    f"""CREATE OR REPLACE FUNCTION billing_tariff_generation_bump() RETURNS trigger LANGUAGE plpgsql
        SET search_path FROM CURRENT AS $$ BEGIN {BUMP}; RETURN NULL; END $$""",
    "DROP TRIGGER IF EXISTS billing_tariff_generation_bump ON billing_tariff",
    """CREATE TRIGGER billing_tariff_generation_bump BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON billing_tariff
        FOR EACH STATEMENT EXECUTE FUNCTION billing_tariff_generation_bump()""",
]
DROP = [
    "DROP TRIGGER IF EXISTS billing_tariff_generation_bump ON billing_tariff",
    "DROP FUNCTION IF EXISTS billing_tariff_generation_bump()",
    "DROP TABLE IF EXISTS billing_tariff_generation",
    "DROP SEQUENCE IF EXISTS billing_tariff_generation_seq",
]


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for statement in CREATE:
            schema_editor.execute(statement)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for statement in DROP:
            schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0009_ledger_lean_indexes"),
    ]

    operations = [migrations.RunPython(create, drop, elidable=False)]
