from __future__ import annotations

from django.db import migrations


class Migration(migrations.Migration):
    operations: list[migrations.operations.base.Operation] = []
