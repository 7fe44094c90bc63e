"""What a request's context may carry into our signed callbacks, and which versions we serve, as a review of
the BPP's authentication found them: a 0.9-style `city`/`country` or extra location keys had been echoed into
on_* bodies the core 1.1.0 ONIX schemas refuse, and any version starting "1.1" (1.10.0, 1.123) was served."""

from __future__ import annotations

from typing import Any

import pytest

from tests.beckn.conformance import onix_errors
from tests.beckn.test_actions import search_message

pytestmark = pytest.mark.django_db


def test_fields_core_1_1_0_has_no_place_for_are_not_echoed_into_our_callbacks(bap: Any) -> None:
    location = {"city": {"code": "std:080", "extra": 1}, "country": {"code": "IND"}, "shell": "x" * 2000}
    answer = bap("search", search_message(), city="std:080", country="IND", core_version="1.1.0", location=location)
    assert answer.status_code == 200
    (callback,) = bap.bap.callbacks("on_search")
    assert not onix_errors("on_search", callback)
    context = callback["context"]
    assert context["location"] == {"city": {"code": "std:080"}, "country": {"code": "IND"}}
    assert not {"city", "country", "core_version", "key"} & set(context)


@pytest.mark.parametrize("version", ["1.10.0", "1.1-rc-anything", "1.123", "1.1.0\n"])
def test_a_version_other_than_1_1_x_is_refused(bap: Any, version: str) -> None:
    answer = bap("search", search_message(), version=version)
    assert answer.status_code == 400
    assert answer.json()["error"]["paths"] == "context.version"


@pytest.mark.parametrize("version", ["1.1.0", "1.1", "1.1.1"])
def test_1_1_x_is_served(bap: Any, version: str) -> None:
    assert bap("search", search_message(), version=version).status_code == 200
