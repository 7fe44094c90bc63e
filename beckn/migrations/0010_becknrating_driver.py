"""BecknRating.driver: the journey's driver when the rating came. Earlier ratings get their journey's driver where
that is certain: the journey holds no order of another driver (an app may go on with a journey for another driver
after its order ended, and the journey then names that driver), and a rating of an order or of its support names
an order of that driver. The others stay without one: a driver's new rating of a charger, site, operator or a
journey's support replaces none of them (one of an order replaces the app's earlier one, as before)."""

import django.db.models.deletion
from django.db import migrations, models
from django.db.models import Exists, F, OuterRef, Q, Subquery


def drivers_of_earlier_ratings(apps, schema_editor):
    BecknRating = apps.get_model("beckn", "BecknRating")
    BecknTransaction = apps.get_model("beckn", "BecknTransaction")
    Booking = apps.get_model("emsp", "Booking")
    another_drivers_order = Booking.objects.filter(
        app_id=OuterRef("transaction__bap_id"),
        app_transaction_id=OuterRef("transaction__transaction_id"),
        driver__isnull=False,
    ).exclude(driver_id=OuterRef("transaction__driver_id"))
    of_another_driver = Booking.objects.filter(order_id=OuterRef("ref_id"), driver__isnull=False).exclude(
        driver_id=OuterRef("transaction__driver_id")
    )
    certain = (
        BecknRating.objects.filter(transaction__driver__isnull=False)
        .exclude(Exists(another_drivers_order))
        # The journey's latest order, of a booking from before Booking.app_id was kept.
        .exclude(
            Q(transaction__booking__driver__isnull=False) & ~Q(transaction__booking__driver=F("transaction__driver"))
        )
        .exclude(Q(category__iexact="order") | Q(category__iexact="support"), Exists(of_another_driver))
    )
    BecknRating.objects.filter(pk__in=certain.values("pk")).update(
        driver=Subquery(BecknTransaction.objects.filter(pk=OuterRef("transaction_id")).values("driver_id")[:1])
    )


class Migration(migrations.Migration):
    dependencies = [
        ("beckn", "0009_update_command"),
        ("emsp", "0031_party_any_case"),
    ]

    operations = [
        migrations.AddField(
            model_name="becknrating",
            name="driver",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="beckn_ratings",
                to="emsp.driver",
            ),
        ),
        migrations.RunPython(drivers_of_earlier_ratings, migrations.RunPython.noop),
    ]
