# Each booking records the consumer app that ordered it and the journey it was ordered in (Booking.app_id,
# Booking.app_transaction_id). Until now only the journey pointed at its booking, one at a time: an order cancelled
# and followed by another in the same journey lost its app, which then could no longer find it.
#
# Backfill: the journey's link where it still points at the booking; else the booking's Beckn payment, which keeps
# its journey as `bap_id|transaction_id` (billing.Payment.journey; a hashed journey, too long to keep whole, gives
# the app only).

from django.db import migrations, models

BATCH = 1000


def backfill(apps, schema_editor):
    Booking = apps.get_model("emsp", "Booking")
    BecknTransaction = apps.get_model("beckn", "BecknTransaction")
    Payment = apps.get_model("billing", "Payment")
    found = {}
    payments = Payment.objects.filter(booking__isnull=False).exclude(bap_id="").order_by("pk")
    for booking_id, bap_id, journey in payments.values_list("booking_id", "bap_id", "journey").iterator(BATCH):
        prefix = f"{bap_id}|"
        found.setdefault(booking_id, (bap_id, journey[len(prefix) :] if journey.startswith(prefix) else ""))
    journeys = BecknTransaction.objects.filter(booking__isnull=False)
    for booking_id, bap_id, transaction_id in journeys.values_list("booking_id", "bap_id", "transaction_id").iterator(
        BATCH
    ):
        found[booking_id] = (bap_id, transaction_id)
    rows = []
    for booking in Booking.objects.filter(pk__in=list(found)).only("pk").iterator(BATCH):
        booking.app_id, booking.app_transaction_id = found[booking.pk]
        rows.append(booking)
    Booking.objects.bulk_update(rows, ["app_id", "app_transaction_id"], batch_size=BATCH)


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0015_receipt_sweeps"),
        ("beckn", "0008_lz4_bodies"),
        ("emsp", "0024_session_indexes"),
    ]

    operations = [
        migrations.AddField(
            model_name="booking",
            name="app_id",
            field=models.CharField(
                blank=True, help_text="The consumer app (Beckn bap_id) that ordered it.", max_length=255
            ),
        ),
        migrations.AddField(
            model_name="booking",
            name="app_transaction_id",
            field=models.CharField(
                blank=True, help_text="The app's journey it was ordered in (Beckn transaction_id).", max_length=255
            ),
        ),
        migrations.AddIndex(
            model_name="booking",
            index=models.Index(fields=["app_id", "app_transaction_id"], name="booking_app_journey"),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop, elidable=True),
    ]
