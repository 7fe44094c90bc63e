"""A `Link` whose rel value is in single quotes (`<…?offset=50>; rel='next'`), as some CPOs send it, names the next
page too (lenient in, ocpi/client.py `_rel_names_next`): the walk had stopped after the first page, the rest of the
list unread. The RFC 8288 forms read as before (tests/ocpi/test_credentials_review_fixes.py)."""

from __future__ import annotations

from typing import Any

import pytest

from ocpi.client import OcpiClient, _next_link
from tests.factories import PartnerFactory
from tests.fakes import FakePeer, envelope

pytestmark = pytest.mark.django_db

ENDPOINT = "http://127.0.0.1:9/ocpi/cpo/2.2.1"  # tests/factories.py PartnerFactory
LOCATIONS = f"{ENDPOINT}/locations"


def walked(peer: FakePeer, link: str) -> list[str]:
    """The URLs a walk asks for when the first page (one object, no total) carries `link`."""

    def cpo(call: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        first = call["url"] == LOCATIONS
        return 200, envelope([{"id": "L1"}] if first else []), {"Link": link} if first else {}

    peer.route("GET", LOCATIONS, cpo)
    for _ in OcpiClient(PartnerFactory()).iter_pages(LOCATIONS, module="locations"):
        pass
    return [call["url"].removeprefix(LOCATIONS) for call in peer.calls]


@pytest.mark.parametrize(
    "link",
    [
        f"<{LOCATIONS}?offset=1>; rel='next'",
        f"<{LOCATIONS}?offset=1>;rel='next'",
        f"<{LOCATIONS}?offset=1>; REL='Next'",
        f"<{LOCATIONS}?offset=1>; rel = 'next' ",
        f"<{LOCATIONS}?offset=1>; rel='prev next'",
        f"<{LOCATIONS}?offset=0>; rel='prev', <{LOCATIONS}?offset=1>; rel='next'",
        f"<{LOCATIONS}?offset=1>; title=\"see also; rel='prev'\"; rel='next'",  # the quoted `;` still separates nothing
        f"{LOCATIONS}?offset=1; rel='next'",  # without the angle brackets either
    ],
)
def test_a_next_link_in_single_quotes_is_followed(peer: FakePeer, link: str) -> None:
    assert walked(peer, link) == ["", "?offset=1"]


@pytest.mark.parametrize(
    "link",
    [
        f"<{LOCATIONS}?offset=1>; rel='prev'",
        f"<{LOCATIONS}?offset=1>; rel='nextpage'",
        f"<{LOCATIONS}?offset=1>; rel='next",  # unbalanced: not a quoted value
        f"<{LOCATIONS}?offset=1>; rel=\"'next'\"",  # the quote characters are then part of the relation type
        f"<{LOCATIONS}?offset=1>; rel='prev'; rel='next'",  # only the first rel counts (RFC 8288 §3.3)
    ],
)
def test_a_single_quoted_rel_naming_no_next_page_is_the_end(peer: FakePeer, link: str) -> None:
    assert walked(peer, link) == [""]


@pytest.mark.parametrize(
    ("link", "expected"),
    [
        (f'<{LOCATIONS}?ids=a,b>; rel="next"', f"{LOCATIONS}?ids=a,b"),
        (f"<{LOCATIONS}?ids=a,b>; rel='next'", f"{LOCATIONS}?ids=a,b"),
        (f'<{LOCATIONS}?offset=1>; title="first, then"; rel="next"', f"{LOCATIONS}?offset=1"),
        (f"<{LOCATIONS}?offset=1>; title=it's; rel='next'", f"{LOCATIONS}?offset=1"),  # a lone `'` quotes nothing
        (f'<{LOCATIONS}?offset=0>; rel="prev", <{LOCATIONS}?offset=1>; rel="prev next"', f"{LOCATIONS}?offset=1"),
    ],
)
def test_quoted_strings_still_hold_their_separators(link: str, expected: str) -> None:
    assert _next_link(link, LOCATIONS) == expected
