"""Text from outside (partners, apps, staff) as we keep and show it."""

from __future__ import annotations

import re

# C0 and C1 control characters but tab, line feed and carriage return: never meaningful in text we keep or show,
# a NUL can't even be stored (PostgreSQL text and jsonb refuse it), and openpyxl refuses the C0 ones in a cell.
# Dropped from OCPI text (ocpi/normalize/values.py), from adopted partner names and spreadsheet cells, refused
# in the console's parameters.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
