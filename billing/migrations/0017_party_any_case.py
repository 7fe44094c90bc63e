# A party's tariffs found in any case (emsp/services/partners.py::party_objects_moved, when the party changes
# connection), built without blocking tariff writes on PostgreSQL (emsp/migration_ops.py).

import django.db.models.functions.text
from django.db import migrations, models

from emsp.migration_ops import AddIndexOnline


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("billing", "0016_place_ids_of_39"),
        ("emsp", "0031_party_any_case"),
    ]

    operations = [
        AddIndexOnline(
            model_name="tariff",
            index=models.Index(
                django.db.models.functions.text.Upper("country_code"),
                django.db.models.functions.text.Upper("party_id"),
                name="tariff_party_any_case",
            ),
        ),
    ]
