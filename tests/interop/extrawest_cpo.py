"""An OCPI 2.2.1 CPO built on extrawest-ocpi (PyPI, FastAPI), the independent peer of tests/interop/.

It runs in its own virtualenv (var/interop-venv, tests/interop/requirements.txt) and imports nothing of ours:
the library serves every OCPI route; this file only supplies what the library asks its user for — the CRUD
hooks (an in-memory store), the authenticator, the adapter — and a control API under /_peer/ for the tests.

    python extrawest_cpo.py --port 8123 --token-a A --locations 120 --tariffs 110

prints `READY <versions url>` when it serves. Locations and tariffs are generated from their index on demand
(so 100,000 of them cost no memory); only objects changed through /_peer/ are stored.

What the library does itself, and what plain HTTP from here does (the library has no client for it):
- served by the library: versions, version details, credentials (POST/PUT/DELETE, including its calls back
  to the eMSP), locations/tariffs/sessions/cdrs lists with paging headers, tokens receiver, commands receiver
  and the asynchronous CommandResult POST (its background task), PUT/POST pushes (`py_ocpi.core.push`);
- plain HTTP (httpx) from here: registering with an eMSP (the library only answers registrations) and PATCH
  pushes (its push helper only PUTs objects and POSTs CDRs).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import secrets
import sys
from datetime import UTC, datetime
from typing import Any

COUNTRY_CODE, PARTY_ID = "IN", "EWX"


def configure(port: int) -> None:
    """The library reads its settings from the environment when first imported."""
    os.environ.update(
        {
            "OCPI_HOST": f"127.0.0.1:{port}",
            "PROTOCOL": "http",
            "COUNTRY_CODE": COUNTRY_CODE,
            "PARTY_ID": PARTY_ID,
            "ENVIRONMENT": "production",
            "COMMAND_AWAIT_TIME": "1",
        }
    )


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def b64(token: str) -> str:
    return base64.b64encode(token.encode()).decode()


# -- the catalogue, generated from an index ---------------------------------------------------------------

EPOCH = "2026-11-01T00:00:00Z"


def location_id(i: int) -> str:
    return f"EWX-L{i:06d}"


def tariff_id(i: int) -> str:
    return f"EWX-T{i:05d}"


def make_location(i: int, tariffs: int) -> dict[str, Any]:
    lid = location_id(i)
    lat, lon = 12.90 + (i % 150) * 0.001, 77.52 + (i // 150 % 150) * 0.001
    tariff = tariff_id(i % tariffs) if tariffs else None
    evses = []
    for j, (standard, fmt, power, volts, amps, watts) in enumerate(
        [
            ("IEC_62196_T2", "SOCKET", "AC_3_PHASE", 400, 32, 22000),
            ("IEC_62196_T2_COMBO", "CABLE", "DC", 920, 200, 60000),
        ],
        start=1,
    ):
        evses.append(
            {
                "uid": f"{lid}-E{j}",
                "evse_id": f"IN*EWX*E{i:06d}{j}",
                "status": "AVAILABLE",
                "capabilities": ["REMOTE_START_STOP_CAPABLE", "RFID_READER"],
                "connectors": [
                    {
                        "id": "1",
                        "standard": standard,
                        "format": fmt,
                        "power_type": power,
                        "max_voltage": volts,
                        "max_amperage": amps,
                        "max_electric_power": watts,
                        "tariff_ids": [tariff] if tariff else [],
                        "last_updated": EPOCH,
                    }
                ],
                "last_updated": EPOCH,
            }
        )
    return {
        "country_code": COUNTRY_CODE,
        "party_id": PARTY_ID,
        "id": lid,
        "publish": True,
        "name": f"EW Interop {i}",
        "address": f"{i % 900 + 1} MG Road",
        "city": "Bengaluru",
        "postal_code": "560001",
        "country": "IND",
        "coordinates": {"latitude": f"{lat:.6f}", "longitude": f"{lon:.6f}"},
        "parking_type": "ON_STREET",
        "evses": evses,
        "operator": {"name": "EW Interop CPO"},
        "time_zone": "Asia/Kolkata",
        "last_updated": EPOCH,
    }


def make_tariff(i: int) -> dict[str, Any]:
    return {
        "country_code": COUNTRY_CODE,
        "party_id": PARTY_ID,
        "id": tariff_id(i),
        "currency": "INR",
        "type": "REGULAR",
        "elements": [
            {"price_components": [{"type": "ENERGY", "price": 18 + i % 7, "vat": 18.0, "step_size": 1}]},
            {"price_components": [{"type": "FLAT", "price": 10, "vat": 18.0, "step_size": 1}]},
        ],
        "last_updated": EPOCH,
    }


class Store:
    """What this CPO holds: N generated locations and tariffs (changed ones stored), sessions, CDRs, the
    eMSPs' tokens it received, the commands it received, and its registered clients."""

    def __init__(self, locations: int, tariffs: int, token_a: str) -> None:
        self.locations, self.tariffs = locations, tariffs
        self.changed: dict[str, dict[str, dict[str, Any]]] = {"locations": {}, "tariffs": {}}
        self.sessions: dict[str, dict[str, Any]] = {}
        self.cdrs: dict[str, dict[str, Any]] = {}
        self.tokens: dict[str, dict[str, Any]] = {}  # key "CC*PID*UID" as the library passed them
        self.token_requests: list[dict[str, Any]] = []
        self.commands: list[dict[str, Any]] = []
        self.token_a = {token_a} if token_a else set()
        # client records: {"token_in": token it presents to us, "token_out": token we present to it,
        # "credentials": its Credentials, "endpoints": its version details}
        self.clients: list[dict[str, Any]] = []
        self.command_results = "ACCEPTED"

    # generated objects, by id or index (ids arrive lowercased: the library's CiString)
    def _index(self, module: str, object_id: str) -> int | None:
        prefix = "EWX-L" if module == "locations" else "EWX-T"
        object_id = str(object_id).upper()
        count = self.locations if module == "locations" else self.tariffs
        if object_id.startswith(prefix) and object_id[len(prefix) :].isdigit():
            index = int(object_id[len(prefix) :])
            return index if 0 <= index < count else None
        return None

    def generated(self, module: str, index: int) -> dict[str, Any]:
        if module == "locations":
            obj = self.changed["locations"].get(location_id(index))
            return obj if obj is not None else make_location(index, self.tariffs)
        obj = self.changed["tariffs"].get(tariff_id(index))
        return obj if obj is not None else make_tariff(index)

    def get(self, module: str, object_id: str) -> dict[str, Any] | None:
        if module in ("locations", "tariffs"):
            index = self._index(module, object_id)
            if index is not None:
                return self.generated(module, index)
            table = self.changed[module]
        else:
            table = self.sessions if module == "sessions" else self.cdrs
        return next((o for k, o in table.items() if k.upper() == str(object_id).upper()), None)

    def count(self, module: str) -> int:
        return self.locations if module == "locations" else self.tariffs

    def client_by_token_in(self, token: str) -> dict[str, Any] | None:
        return next((c for c in self.clients if c["token_in"] == token), None)


STORE: Store


def in_window(obj: dict[str, Any], filters: dict[str, Any]) -> bool:
    stamp = datetime.fromisoformat(obj["last_updated"].replace("Z", "+00:00"))
    date_from, date_to = filters.get("date_from"), filters.get("date_to")
    if date_from is not None and stamp < _aware(date_from):
        return False
    return not (date_to is not None and stamp >= _aware(date_to))


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def build_app(*, advertise_commands: bool, page_limit: int | None = None) -> Any:
    from fastapi import Body, FastAPI, Query
    from py_ocpi import get_application
    from py_ocpi.core.adapter import BaseAdapter
    from py_ocpi.core.authentication.authenticator import Authenticator
    from py_ocpi.core.crud import Crud
    from py_ocpi.core.dependencies import get_endpoints, pagination_filters
    from py_ocpi.core.endpoints.v_2_2_1.utils import cpo_generator
    from py_ocpi.core.enums import Action, ModuleID, RoleEnum
    from py_ocpi.core.push import push_object
    from py_ocpi.core.schemas import Push, Receiver
    from py_ocpi.modules.versions.enums import VersionNumber
    from py_ocpi.modules.versions.v_2_2_1.enums import InterfaceRole

    class Auth(Authenticator):
        @classmethod
        async def get_valid_token_c(cls) -> list[str]:
            return [c["token_in"] for c in STORE.clients]

        @classmethod
        async def get_valid_token_a(cls) -> list[str]:
            return list(STORE.token_a)

    class Store_(Crud):
        @classmethod
        async def get(cls, module: ModuleID, role: RoleEnum, id: Any, *args: Any, **kwargs: Any) -> Any:
            if module == ModuleID.credentials_and_registration:
                client = STORE.client_by_token_in(kwargs.get("auth_token") or "")
                return client and our_credentials(client["token_in"])
            if module == ModuleID.tokens:
                key = f"{kwargs['country_code']}*{kwargs['party_id']}*{id}"
                return STORE.tokens.get(key)
            if module == ModuleID.commands:
                # The "charge point" answers at once: the library then POSTs the CommandResult.
                return {"result": STORE.command_results}
            return STORE.get(module.value, id)

        @classmethod
        async def list(cls, module: ModuleID, role: RoleEnum, filters: dict, *args: Any, **kwargs: Any) -> Any:
            offset, limit = int(filters["offset"]), int(filters["limit"])
            if module.value in ("locations", "tariffs"):
                if filters.get("date_from") or filters.get("date_to"):
                    every = [STORE.generated(module.value, i) for i in range(STORE.count(module.value))]
                    matching = [o for o in every if in_window(o, filters)]
                    page, total = matching[offset : offset + limit], len(matching)
                else:
                    total = STORE.count(module.value)
                    page = [STORE.generated(module.value, i) for i in range(offset, min(offset + limit, total))]
            else:
                table = STORE.sessions if module == ModuleID.sessions else STORE.cdrs
                matching = [o for o in table.values() if in_window(o, filters)]
                page, total = matching[offset : offset + limit], len(matching)
            return page, total, offset + len(page) >= total

        @classmethod
        async def create(cls, module: ModuleID, role: RoleEnum, data: dict, *args: Any, **kwargs: Any) -> Any:
            if module == ModuleID.credentials_and_registration:
                # An eMSP registers with us (it presented Token A): keep its token and endpoints, answer ours.
                token_in = secrets.token_urlsafe(24)
                STORE.clients.append(
                    {
                        "token_in": token_in,
                        "token_out": data["credentials"]["token"],
                        "credentials": data["credentials"],
                        "endpoints": data["endpoints"],
                    }
                )
                STORE.token_a.discard(kwargs.get("auth_token") or "")  # Token A is single-use
                return our_credentials(token_in)
            if module == ModuleID.tokens:
                return cls._token(data, kwargs)
            return data

        @classmethod
        async def update(cls, module: ModuleID, role: RoleEnum, data: dict, id: Any, *args: Any, **kwargs: Any) -> Any:
            if module == ModuleID.credentials_and_registration:
                client = STORE.client_by_token_in(kwargs.get("auth_token") or "")
                assert client is not None
                client.update(token_out=data["credentials"]["token"], credentials=data["credentials"])
                client["endpoints"], client["token_in"] = data["endpoints"], secrets.token_urlsafe(24)
                return our_credentials(client["token_in"])
            if module == ModuleID.tokens:
                return cls._token(data, kwargs)
            return data

        @staticmethod
        def _token(data: dict, kwargs: dict) -> dict:
            key = f"{kwargs['country_code']}*{kwargs['party_id']}*{data['uid']}"
            STORE.tokens[key] = data
            STORE.token_requests.append({"key": key, "token_type": str(kwargs.get("token_type"))})
            return data

        @classmethod
        async def delete(cls, module: ModuleID, role: RoleEnum, id: Any, *args: Any, **kwargs: Any) -> None:
            if module == ModuleID.credentials_and_registration:
                STORE.clients = [c for c in STORE.clients if c["token_in"] != kwargs.get("auth_token")]

        @classmethod
        async def do(
            cls, module: ModuleID, role: Any, action: Action, *args: Any, data: dict | None = None, **kwargs: Any
        ) -> Any:
            if action == Action.get_client_token:
                client = STORE.client_by_token_in(kwargs.get("auth_token") or "")
                return client["token_out"] if client else ""
            if action == Action.send_command:
                command_data = data if data is not None else (args[0] if args else {})
                STORE.commands.append({"command": str(kwargs.get("command")), "data": _jsonable(command_data)})
                return {"result": "ACCEPTED", "timeout": 30}
            return None

    class Adapter(BaseAdapter):
        pass

    def our_credentials(token: str) -> dict[str, Any]:
        return {
            "token": token,
            "url": f"{cpo_generator.protocol}://{cpo_generator.ocpi_host}/ocpi/versions",
            "roles": [
                {
                    "role": "CPO",
                    "business_details": {"name": "EW Interop CPO"},
                    "party_id": PARTY_ID,
                    "country_code": COUNTRY_CODE,
                }
            ],
        }

    app = get_application(
        version_numbers=[VersionNumber.v_2_2_1],
        roles=[RoleEnum.cpo],
        crud=Store_,
        modules=[
            ModuleID.credentials_and_registration,
            ModuleID.locations,
            ModuleID.tariffs,
            ModuleID.sessions,
            ModuleID.cdrs,
            ModuleID.tokens,
            ModuleID.commands,
        ],
        authenticator=Auth,
        adapter=Adapter,
    )
    if advertise_commands:
        # The library mounts the commands receiver but leaves it out of its 2.2.1 CPO version details
        # (core/endpoints/v_2_2_1/cpo.py has no COMMANDS); a CPO running it has to add the endpoint itself.
        endpoints = app.dependency_overrides[get_endpoints]()
        commands = cpo_generator.generate_endpoint(ModuleID.commands, InterfaceRole.receiver)
        with_commands = {k: [*v, commands] for k, v in endpoints.items()}
        app.dependency_overrides[get_endpoints] = lambda: with_commands

    if page_limit is not None:
        # The library's page size is 50 unless the client asks (it has no maximum): a CPO may change it.
        def filters(
            date_from: datetime = Query(default=None),  # noqa: B008
            date_to: datetime = Query(default=None),  # noqa: B008
            offset: int = Query(default=0),
            limit: int = Query(default=page_limit),
        ) -> dict[str, Any]:
            return {"date_from": date_from, "date_to": date_to, "offset": offset, "limit": limit}

        app.dependency_overrides[pagination_filters] = filters

    add_control_api(app, Body, FastAPI, push_object, Push, Receiver, VersionNumber, ModuleID, Adapter)
    return app


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, str):
        return str(value)
    return value


def add_control_api(app: Any, Body: Any, FastAPI: Any, push_object: Any, Push: Any, Receiver: Any, VersionNumber: Any,
                    ModuleID: Any, Adapter: Any) -> None:  # fmt: skip
    """/_peer/: what the tests read and drive. Not OCPI; no authentication (127.0.0.1 only)."""
    import httpx

    def client() -> dict[str, Any]:
        if not STORE.clients:
            raise RuntimeError("no eMSP is registered")
        return STORE.clients[-1]

    def receiver_url(module: str) -> str:
        for endpoint in client()["endpoints"]["endpoints"]:
            if endpoint["identifier"] == module and endpoint.get("role") == "RECEIVER":
                return endpoint["url"]
        raise RuntimeError(f"the eMSP has no {module} receiver")

    def version_details_url() -> str:
        versions = httpx.get(
            client()["credentials"]["url"], headers={"Authorization": f"Token {b64(client()['token_out'])}"}
        ).json()["data"]
        return next(v["url"] for v in versions if v["version"] == "2.2.1")

    @app.get("/_peer/state", include_in_schema=False)
    async def state() -> dict[str, Any]:
        return {
            "clients": [{"url": c["credentials"]["url"], "roles": c["credentials"]["roles"]} for c in STORE.clients],
            "tokens": STORE.tokens,
            "token_requests": STORE.token_requests,
            "commands": STORE.commands,
            "locations": STORE.locations,
            "tariffs": STORE.tariffs,
            "sessions": sorted(STORE.sessions),
            "cdrs": sorted(STORE.cdrs),
        }

    @app.post("/_peer/register", include_in_schema=False)
    async def register(body: dict = Body(...)) -> dict[str, Any]:  # noqa: B008
        """Register with an eMSP that gave us its versions URL and a Token A (plain HTTP: the library has no
        client for this)."""
        token_b = secrets.token_urlsafe(24)
        auth_a = {"Authorization": f"Token {b64(body['token_a'])}"}
        async with httpx.AsyncClient(timeout=20) as http:
            reply = await http.get(body["versions_url"], headers=auth_a)
            if reply.status_code != 200:
                return {"registered": False, "http_status": reply.status_code, "body": reply.json()}
            versions = reply.json()["data"]
            details_url = next(v["url"] for v in versions if v["version"] == "2.2.1")
            details = (await http.get(details_url, headers=auth_a)).json()["data"]
            credentials_url = next(e["url"] for e in details["endpoints"] if e["identifier"] == "credentials")
            record = {"token_in": token_b, "token_out": "", "credentials": {"url": body["versions_url"]}}
            record["endpoints"] = details
            STORE.clients.append(record)  # the eMSP calls us with token B before it answers
            ours = {
                "token": token_b,
                "url": f"http://{os.environ['OCPI_HOST']}/ocpi/versions",
                "roles": [
                    {
                        "role": "CPO",
                        "business_details": {"name": "EW Interop CPO"},
                        "party_id": PARTY_ID,
                        "country_code": COUNTRY_CODE,
                    }
                ],
            }
            reply = await http.post(credentials_url, json=ours, headers=auth_a)
        answer = reply.json()
        if reply.status_code != 200 or answer.get("status_code") != 1000:
            STORE.clients.remove(record)
            return {"registered": False, "http_status": reply.status_code, "body": answer}
        record["token_out"] = answer["data"]["token"]
        record["credentials"] = answer["data"]
        return {"registered": True}

    @app.post("/_peer/objects/{module}/{object_id}", include_in_schema=False)
    async def put_object(module: str, object_id: str, body: dict = Body(...)) -> dict[str, Any]:  # noqa: B008
        """Store (or replace) a session, CDR, location or tariff as given."""
        obj = {**body, "country_code": COUNTRY_CODE, "party_id": PARTY_ID, "id": object_id}
        obj.setdefault("last_updated", now())
        if module in ("locations", "tariffs"):
            STORE.changed[module][object_id] = obj
        else:
            (STORE.sessions if module == "sessions" else STORE.cdrs)[object_id] = obj
        return {"stored": object_id}

    @app.post("/_peer/push/{module}/{object_id}", include_in_schema=False)
    async def push(module: str, object_id: str) -> dict[str, Any]:
        """The library's own push (py_ocpi.core.push.push_object): PUT of a location/session/tariff, POST of
        a CDR, to the registered eMSP's receiver."""
        request = Push(
            module_id=ModuleID(module),
            object_id=object_id,
            receivers=[Receiver(endpoints_url=version_details_url(), auth_token=client()["token_out"])],
        )
        try:
            result = await push_object(VersionNumber.v_2_2_1, request, Store_ref(), Adapter, client()["token_in"])
        except Exception as exc:
            return {"pushed": False, "error": f"{type(exc).__name__}: {exc}"}
        answer = result.dict()["receiver_responses"][0]
        return {"pushed": True, "status_code": answer["status_code"], "response": _jsonable(answer["response"])}

    @app.post("/_peer/patch/{module}/{path:path}", include_in_schema=False)
    async def patch(module: str, path: str, body: dict = Body(...)) -> dict[str, Any]:  # noqa: B008
        """PATCH to the eMSP's receiver, `{endpoint}/{country_code}/{party_id}/{path}` (plain HTTP: the
        library's push helper has no PATCH). The stored object is updated too."""
        body = {**body, "last_updated": body.get("last_updated") or now()}
        base = receiver_url(module)
        url = f"{base.rstrip('/')}/{COUNTRY_CODE}/{PARTY_ID}/{path}"
        async with httpx.AsyncClient(timeout=20) as http:
            reply = await http.patch(url, json=body, headers={"Authorization": f"Token {b64(client()['token_out'])}"})
        if module == "sessions" and path in STORE.sessions:
            STORE.sessions[path].update(body)
        try:
            answer = reply.json()
        except ValueError:
            answer = reply.text[:500]
        return {"url": url, "http_status": reply.status_code, "body": answer}

    @app.post("/_peer/command_results/{result}", include_in_schema=False)
    async def command_results(result: str) -> dict[str, Any]:
        STORE.command_results = result
        return {"result": result}

    def Store_ref() -> Any:
        from py_ocpi.core.dependencies import get_crud

        return app.dependency_overrides[get_crud]()

    del FastAPI


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token-a", default="")
    parser.add_argument("--locations", type=int, default=120)
    parser.add_argument("--tariffs", type=int, default=110)
    parser.add_argument(
        "--as-published",
        action="store_true",
        help="leave the library's version details as they are (without the commands endpoint it omits)",
    )
    parser.add_argument("--page-limit", type=int, help="the page size when the client asks none (library: 50)")
    args = parser.parse_args()
    configure(args.port)

    import uvicorn

    global STORE
    STORE = Store(args.locations, args.tariffs, args.token_a)
    app = build_app(advertise_commands=not args.as_published, page_limit=args.page_limit)
    config = uvicorn.Config(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)

    async def serve() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                task.result()
                return
            await asyncio.sleep(0.05)
        print(f"READY http://127.0.0.1:{args.port}/ocpi/versions", flush=True)
        await task

    asyncio.run(serve())
    sys.exit(0)


if __name__ == "__main__":
    main()
