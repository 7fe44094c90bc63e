# Driver accounts opened through a consumer app belong to it (emsp 0012): accounts from before take the app of
# their Beckn journeys. One that several apps used is left unassigned (""): no app finds it by contact any more,
# and the next order through an app opens a new account of that app.

from django.db import migrations


def assign_apps(apps, schema_editor):
    transaction_model = apps.get_model("beckn", "BecknTransaction")
    driver_model = apps.get_model("emsp", "Driver")
    seen: dict[int, set[str]] = {}
    for driver_id, bap_id in transaction_model.objects.exclude(driver=None).values_list("driver_id", "bap_id"):
        seen.setdefault(driver_id, set()).add(bap_id)
    for driver_id, bap_ids in seen.items():
        if len(bap_ids) == 1:
            driver_model.objects.filter(pk=driver_id, app_id="").update(app_id=next(iter(bap_ids)))


class Migration(migrations.Migration):
    dependencies = [
        ("beckn", "0004_contact_details_encrypted"),
        ("emsp", "0012_drivers_per_app"),
    ]

    operations = [migrations.RunPython(assign_apps, migrations.RunPython.noop)]
