"""Run inside the peer's virtualenv: read {"kind": ..., "object": ...} lines on stdin and judge each object by
extrawest-ocpi's own OCPI 2.1.1 models (not ours), with fields the models don't name refused (2.2.1 fields
left in would pass a lenient reader and still be wrong). Prints one JSON line per object: {"ok": bool, "error":
text}.

Kinds: location, evse, connector, session (OCPI 2.1.1). Not the CDR: the library's 2.1.1 Cdr names
`end_date_time` where mod_cdrs 2.1.1 has `stop_date_time` (docs/interop.md)."""

from __future__ import annotations

import json
import sys

from py_ocpi.core.data_types import String
from py_ocpi.modules.locations.schemas import StatusSchedule
from py_ocpi.modules.locations.v_2_1_1.schemas import EVSE, Connector, Location
from py_ocpi.modules.sessions.v_2_1_1.schemas import Session
from pydantic import BaseModel, Extra, ValidationError


# Where the library's 2.1.1 models differ from mod_locations 2.1.1, the spec's reading (docs/interop.md):
class EVSE211(EVSE):
    status_schedule: list[StatusSchedule] = []  # spec: StatusSchedule `*`; the library: one


class Connector211(Connector):
    tariff_id: String(max_length=36) | None  # type: ignore # spec: `?`; the library: required


class EVSE211WithConnectors(EVSE211):
    connectors: list[Connector211]


class Location211(Location):
    evses: list[EVSE211WithConnectors] = []


class Session211(Session):
    location: Location211


MODELS: dict[str, type[BaseModel]] = {
    "location": Location211,
    "evse": EVSE211WithConnectors,
    "connector": Connector211,
    "session": Session211,
}


def _forbid_extra(model: type[BaseModel], seen: set[type]) -> None:
    """pydantic 1 ignores unknown fields by default; every model reachable from `model` refuses them here."""
    if model in seen:
        return
    seen.add(model)
    model.__config__.extra = Extra.forbid
    for field in model.__fields__.values():
        for candidate in (field.type_, field.outer_type_):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                _forbid_extra(candidate, seen)


def main() -> None:
    seen: set[type] = set()
    for model in MODELS.values():
        _forbid_extra(model, seen)
    for line in sys.stdin:
        item = json.loads(line)
        try:
            MODELS[item["kind"]].parse_obj(item["object"])
        except ValidationError as exc:
            print(json.dumps({"ok": False, "error": str(exc)}), flush=True)
        else:
            print(json.dumps({"ok": True, "error": ""}), flush=True)


if __name__ == "__main__":
    main()
