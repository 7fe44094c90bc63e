"""Reading a stored Location back as OCPI costs a fixed number of queries, however many EVSEs it has."""

from __future__ import annotations

from typing import Any

import pytest

from emsp.models import Partner
from ocpi.rendering import location_as_ocpi
from tests.factories import stored_location

pytestmark = pytest.mark.django_db


def test_a_location_reads_back_in_two_queries_with_its_connectors(
    partner: Partner, django_assert_num_queries: Any
) -> None:
    location = stored_location(partner, evses=6)
    with django_assert_num_queries(2):  # the EVSEs, then all their connectors
        ocpi = location_as_ocpi(location)
    assert len(ocpi["evses"]) == 6
    assert all(len(e["connectors"]) == 1 for e in ocpi["evses"])
