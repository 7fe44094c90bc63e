# The catalogue's nearest-first search on PostgreSQL (issue 15): the `cube` extension and a GiST index on each
# EVSE's point on the unit sphere (emsp/nearest.py). Built without blocking status PATCHes and ingest. Other
# databases (SQLite in development and tests) keep the (latitude, longitude) B-tree and a bounding box.

from django.db import migrations

from emsp.nearest import INDEX_NAME, point_sql


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("CREATE EXTENSION IF NOT EXISTS cube")
    schema_editor.execute(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {INDEX_NAME} ON emsp_evse USING gist (({point_sql()}))")


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX_NAME}")


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("emsp", "0019_retention_indexes"),
    ]

    operations = [migrations.RunPython(create, drop, elidable=False)]
