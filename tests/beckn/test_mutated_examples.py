"""Every action's published examples, mutated: hostile values (NUL, huge and absurd numbers, dates at the ends
of the calendar, wrong types) put in at random places, fields removed. Whatever the BAP sends, it hears a NACK
or an error naming the field: the worker never fails a request (the catch-all's "please retry" and a FAILED
message row), nothing answers 5xx. Seeded, so a failure repeats. Reads ../shared/vectors/beckn in place."""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from beckn.models import BecknMessage
from tests.beckn.test_actions import confirm, init, item_of, search_message, select

pytestmark = pytest.mark.django_db

ACTIONS = ("search", "select", "init", "confirm", "status", "track", "update", "cancel", "rating", "support")
HOSTILE = [None, "", "\x00", "a\x00b", 10**40, -(10**40), 1e308, -0.0, 1.5, True, [], {}, [None], {"a": None},
           "9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "x" * 3000, "\u202e", "-1", "1e400", 0, -1, 2**63,
           "NaN", "Infinity", "PT99999999999999H", "12.9,77.5", "91,181"]  # fmt: skip
REQUESTS_PER_SEED = 40


def _examples(vectors: Path) -> dict[str, list[dict[str, Any]]]:
    root = vectors / "beckn"
    found: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(root.rglob("*.json")):
        try:
            stack = [json.loads(path.read_text())]
        except (ValueError, UnicodeDecodeError):
            continue
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                context, message = node.get("context"), node.get("message")
                if isinstance(context, dict) and isinstance(message, dict) and context.get("action") in ACTIONS:
                    found.setdefault(context["action"], []).append(message)
                stack += list(node.values())
            elif isinstance(node, list):
                stack += node
    return found


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*prefix, index))


def _mutated(rng: random.Random, message: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(message)
    places = [p for p in _paths(out) if p]
    for _ in range(rng.randint(1, 3)):
        if not places:
            break
        place, parent = rng.choice(places), out
        try:
            for key in place[:-1]:
                parent = parent[key]
            if rng.random() < 0.8:
                parent[place[-1]] = copy.deepcopy(rng.choice(HOSTILE))
            elif isinstance(parent, dict):
                del parent[place[-1]]
        except (KeyError, IndexError, TypeError):  # an earlier change took the path away
            pass
    return json.loads(json.dumps(out))  # as the wire carries it (keys strings)


@pytest.mark.parametrize("seed", range(8))
def test_no_mutated_example_fails_the_worker(bap: Any, vectors: Path, seed: int) -> None:
    examples = _examples(vectors)
    rng = random.Random(seed)
    item = item_of(bap)
    # A journey for the order actions to find, and to mutate the messages of.
    select(bap, item)
    init(bap)
    order_id = confirm(bap)["message"]["order"]["id"]
    ours = {"search": search_message(),
            "select": {"order": {"provider": {"id": "IN*CPA"}, "items": [{"id": item, "quantity": {"selected": {
                "measure": {"value": "5", "unit": "kWh"}}}}]}},
            "init": {"order": {"provider": {"id": "IN*CPA"}, "billing": {"name": "Asha", "email": "asha@example.com",
                                                                          "phone": "+919845000000"}}},
            "confirm": {"order": {"provider": {"id": "IN*CPA"}, "payments": [{"status": "NOT-PAID"}]}},
            "status": {"order_id": order_id}, "track": {"order_id": order_id},
            "cancel": {"order_id": order_id, "cancellation_reason_id": "changed-plans"},
            "update": {"update_target": "order.fulfillments[0].state", "order": {
                "id": order_id, "fulfillments": [{"state": {"descriptor": {"code": "start-charging"}}}]}},
            "rating": {"ratings": [{"rating_category": "Order", "id": order_id, "value": "4"}]},
            "support": {"support": {"ref_id": order_id}}}  # fmt: skip
    failed = []
    for _ in range(REQUESTS_PER_SEED):
        action = rng.choice(ACTIONS)
        # Half our own journey's messages (they reach the order's handling), half the published examples.
        base = ours[action] if rng.random() < 0.5 else rng.choice(examples.get(action) or [{}])
        message = _mutated(rng, base)
        body = json.dumps({"context": bap.bap.context(action), "message": message}).encode()
        response = bap(action, {}, raw=body)
        assert response.status_code < 500, (action, message)
        rows = BecknMessage.objects.filter(status=BecknMessage.Status.FAILED)
        failed += [(action, json.dumps(message)[:300], error) for error in rows.values_list("error", flat=True)]
        rows.delete()
    assert not failed, failed[:3]
