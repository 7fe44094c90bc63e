"""Text from outside (partners, apps, staff) as we keep and show it."""

from __future__ import annotations

import re

# C0 and C1 control characters but tab, line feed and carriage return: never meaningful in text we keep or show,
# a NUL can't even be stored (PostgreSQL text and jsonb refuse it), and openpyxl refuses the C0 ones in a cell.
# Dropped from OCPI text (ocpi/normalize/values.py), from adopted partner names and spreadsheet cells, refused
# in the console's parameters.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def storable(text: str) -> str:
    """Text as a database column can hold it: PostgreSQL refuses NUL in text, so a NUL becomes U+FFFD (a hostile
    body, URL, header or partner's refusal must still leave its trace)."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text
