# A party's locations found in any case (emsp/services/partners.py::party_objects_moved, when the party changes
# connection), built without blocking the catalogue's writes on PostgreSQL (emsp/migration_ops.py).

import django.db.models.functions.text
from django.db import migrations, models

from emsp.migration_ops import AddIndexOnline


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("emsp", "0030_place_ids_of_39"),
    ]

    operations = [
        AddIndexOnline(
            model_name="location",
            index=models.Index(
                django.db.models.functions.text.Upper("country_code"),
                django.db.models.functions.text.Upper("party_id"),
                name="location_party_any_case",
            ),
        ),
    ]
