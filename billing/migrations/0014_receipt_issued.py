"""DriverReceipt.issued: true once its numbered document is stored; the receipts already issued are marked
here, the rest are left to the beat's sweep (billing.tasks.issue_due_receipts), which issues them. On PostgreSQL
the column keeps a database default of false, so processes of the release before, still running while this one
rolls out, go on inserting receipts (docs/operations.md, Upgrades)."""

from django.db import migrations, models


def keep_a_database_default(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("ALTER TABLE billing_driverreceipt ALTER COLUMN issued SET DEFAULT false")


MARK_ISSUED = """
    UPDATE billing_driverreceipt SET issued = TRUE
    WHERE EXISTS (SELECT 1 FROM billing_issueddocument d
                  WHERE d.kind IN ('RECEIPT', 'CREDIT') AND d.reference = 'cdr:' || billing_driverreceipt.cdr_id)
"""


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0013_lz4_documents_pdf"),
        ("emsp", "0024_session_indexes"),
    ]

    operations = [
        migrations.AddField(
            model_name="driverreceipt",
            name="issued",
            field=models.BooleanField(default=False),
        ),
        migrations.RunPython(keep_a_database_default, migrations.RunPython.noop),
        migrations.RunSQL(MARK_ISSUED, migrations.RunSQL.noop),
        migrations.AddIndex(
            model_name="driverreceipt",
            index=models.Index(
                condition=models.Q(("issued", False)), fields=["created_at"], name="driverreceipt_unissued"
            ),
        ),
    ]
