"""DriverReceipt.sweeps and next_sweep_at: the beat's sweep (billing.tasks.issue_due_receipts) counts its tries at
a receipt and puts the next one off, doubling, up to a day. `sweeps` has a database default, so processes of the
release before go on inserting receipts while this one rolls out (docs/operations.md, Upgrades)."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('billing', '0014_receipt_issued'),
    ]

    operations = [
        migrations.AddField(
            model_name='driverreceipt',
            name='next_sweep_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='driverreceipt',
            name='sweeps',
            field=models.PositiveSmallIntegerField(db_default=0, default=0),
        ),
    ]
