"""Routing: the OCPI CPO interfaces (2.2.1 inside; 2.1.1 or 2.3.0 on the wire with `--ocpi-version`, through
versions.py) and the `/_sim/` control API, and the Simulator that wires them to the HTTP server (transport.py)."""

from __future__ import annotations

import functools
import random
import threading
import time
import uuid
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import urlencode

from . import versions as wire
from .charging import Engine
from .common import ci, clone, iso, log, new_token, parse_dt, utcnow
from .config import FAULT_NAMES, SimConfig, normalise_fault
from .emsp_client import EmspClient, RegistrationError
from .hub import UNROUTED, Hub
from .quirks import render
from .scheduler import Scheduler
from .state import WE_ARE_SERVER, Peer, Store
from .transport import BadJson, Handler, Reply, Request

EVSE_STATUSES = {
    "AVAILABLE",
    "BLOCKED",
    "CHARGING",
    "INOPERATIVE",
    "OUTOFORDER",
    "PLANNED",
    "REMOVED",
    "RESERVED",
    "UNKNOWN",
}
TOKEN_REQUIRED = (
    "country_code",
    "party_id",
    "uid",
    "type",
    "contract_id",
    "issuer",
    "valid",
    "whitelist",
    "last_updated",
)
MODULES = (
    ("credentials", "SENDER"),
    ("locations", "SENDER"),
    ("tariffs", "SENDER"),
    ("sessions", "SENDER"),
    ("cdrs", "SENDER"),
    ("tokens", "RECEIVER"),
    ("commands", "RECEIVER"),
)
CONFIG_MODULES = {"versions", "details", "credentials"}


def envelope(data: Any = None, status_code: int = 1000, message: str = "Success") -> dict[str, Any]:
    """OCPI response envelope; `data` is omitted when None."""
    out: dict[str, Any] = {}
    if data is not None:
        out["data"] = data
    out.update(status_code=status_code, status_message=message, timestamp=iso(utcnow()))
    return out


# Lists are sorted by last_updated on every page: with 100k locations, parsing each timestamp every time
# made a page cost ~0.7 s. The distinct timestamps are few; remember them.
parsed_dt = functools.lru_cache(maxsize=1 << 16)(parse_dt)


def bare_error(reply: Reply) -> Reply:
    """The bare_errors fault: an error as a web framework renders it (`{"detail": "..."}`, FastAPI's shape),
    not in the OCPI envelope; an OCPI error that came with HTTP 200 gets HTTP 400."""
    body = reply.body
    if not isinstance(body, dict) or int(body.get("status_code") or 1000) < 2000:
        return reply
    status = reply.status if reply.status >= 400 else 400
    return Reply(status, {"detail": body.get("status_message") or "error"}, reply.headers)


def query_string(req: Request) -> str:
    return f"?{urlencode(req.query, doseq=True)}" if req.query else ""


class App:
    """Request handling for the simulator (framework-free)."""

    hub: Hub | None = None  # --hub: we front several CPO parties (hub.py)

    def __init__(self, cfg: SimConfig, store: Store, client: EmspClient, engine: Engine) -> None:
        self.cfg = cfg
        self.store = store
        self.client = client
        self.engine = engine
        self.rng = random.Random(cfg.seed)
        self.base_url = ""
        self.version = cfg.ocpi_version

    # --- entry ------------------------------------------------------------------------------------

    def handle(self, req: Request) -> Reply:
        """Route one request; adds id headers, applies faults."""
        rid = req.headers.get("X-Request-ID") or str(uuid.uuid4())
        cid = req.headers.get("X-Correlation-ID") or str(uuid.uuid4())
        path = "/" + "/".join(p for p in req.path.split("/") if p)
        is_control = path == "/_sim" or path.startswith("/_sim/")
        try:
            reply = (self.control if is_control else self.ocpi)(req, path)
        except BadJson as exc:
            reply = Reply(400, envelope(None, 2000, f"invalid JSON: {exc}"))
        except Exception as exc:
            log(f"ERROR {req.method} {path}: {type(exc).__name__}: {exc}")
            reply = Reply(500, envelope(None, 3000, f"internal error: {type(exc).__name__}"))
        if not is_control and self.fault("bare_errors"):
            reply = bare_error(reply)
        if is_control or not self.fault("no_request_ids"):
            reply.headers.setdefault("X-Request-ID", rid)
            reply.headers.setdefault("X-Correlation-ID", cid)
        return reply

    # --- OCPI -------------------------------------------------------------------------------------

    def ocpi(self, req: Request, path: str) -> Reply:
        """The OCPI interfaces under /ocpi."""
        with self.store.lock:
            faults = dict(self.store.faults)
        if faults.get("slow"):
            time.sleep(float(faults["slow"]))
        if faults.get("http500") and self.rng.random() < float(faults["http500"]):
            return Reply(500, envelope(None, 3000, "simulated server error (fault http500)"))
        parts = path.strip("/").split("/")
        if faults.get("trailing_slash") and len(parts) == 3 and parts[1] == self.version and not req.path.endswith("/"):
            # Like a web framework whose routes end in "/" (Starlette's redirect_slashes): the list lives at
            # ".../locations/" and ".../locations" is answered with a redirect.
            return Reply(307, None, {"Location": self.module_url(parts[2]) + query_string(req)})
        if parts[0] != "ocpi":
            return Reply(404, envelope(None, 2000, "not found"))
        if parts[1:] in ([], ["versions"]):
            module, rest = "versions", []
        elif parts[1] == self.version and len(parts) == 2:
            module, rest = "details", []
        elif parts[1] == self.version:
            module, rest = parts[2], parts[3:]
        else:
            return Reply(404, envelope(None, 2000, f"unknown path {path}"))
        who = self.store.identify(req.headers.get("Authorization"))
        allowed = who is not None if module in CONFIG_MODULES else who == "peer"
        if not allowed and faults.get("status_in_200"):  # a refusal as an OCPI server error with HTTP 200
            return Reply(200, envelope([], 3000, "Unauthorized"))
        if not allowed:
            code = 403 if faults.get("forbid_instead_of_401") else 401
            return Reply(
                code,
                envelope(None, 2000, "missing, invalid or unusable token"),
                {"WWW-Authenticate": "Token"},
            )
        handler = getattr(self, f"m_{module}", None)
        if handler is None:
            return Reply(404, envelope(None, 2000, f"unknown module {module}"))
        if self.hub is not None and module not in UNROUTED:
            refused = self.hub.route_in(req, module, rest)
            if refused is not None:
                return refused
        reply: Reply = handler(req, rest, who)
        if module not in UNROUTED and self.version != "2.1.1":  # 2.1.1 has no routing headers
            reply.headers.update(
                self.store.routing_headers(
                    req.headers.get("OCPI-from-country-code"), req.headers.get("OCPI-from-party-id")
                )
            )
            if self.hub is not None:
                reply.headers.update(self.hub.answer_headers(req))
        data = reply.body.get("data") if isinstance(reply.body, dict) else None
        if data is not None and module not in CONFIG_MODULES:  # quirks never break the handshake
            data = render(data, faults)
            if faults.get("wrap_single") and isinstance(data, dict):
                data = [data]
            reply.body["data"] = data
        return reply

    @staticmethod
    def _not_allowed(allowed: str) -> Reply:
        return Reply(405, envelope(None, 2000, "method not allowed"), {"Allow": allowed})

    def fault(self, name: str) -> Any:
        with self.store.lock:
            return self.store.faults.get(name)

    def module_url(self, module: str) -> str:
        """Absolute URL of one of our modules (ending in "/" under the trailing_slash fault)."""
        return f"{self.base_url}/ocpi/{self.version}/{module}" + ("/" if self.fault("trailing_slash") else "")

    def m_versions(self, req: Request, rest: list[str], who: str) -> Reply:
        """GET versions."""
        if req.method != "GET":
            return self._not_allowed("GET")
        # Only the version we speak, so that a negotiation ("the highest both offer") lands on it.
        return Reply(200, envelope([{"version": self.version, "url": f"{self.base_url}/ocpi/{self.version}"}]))

    def m_details(self, req: Request, rest: list[str], who: str) -> Reply:
        """GET version details: our modules and interface roles."""
        if req.method != "GET":
            return self._not_allowed("GET")
        endpoints = [{"identifier": m, "role": role, "url": self.module_url(m)} for m, role in MODULES]
        if self.fault("no_commands_endpoint"):  # served, but left out of the details (extrawest-ocpi 2.2.1)
            endpoints = [e for e in endpoints if e["identifier"] != "commands"]
        if self.hub is not None:
            endpoints.append({"identifier": "hubclientinfo", "role": "SENDER", "url": self.module_url("hubclientinfo")})
        endpoints = wire.endpoints_out(self.version, endpoints)
        return Reply(200, envelope({"version": self.version, "endpoints": endpoints}))

    # --- credentials ------------------------------------------------------------------------------

    def m_credentials(self, req: Request, rest: list[str], who: str) -> Reply:
        """Credentials as server: GET/POST/PUT/DELETE with the 405 rules."""
        if rest:
            return Reply(404, envelope(None, 2000, "not found"))
        token = self.store.caller_token(req.headers.get("Authorization")) or ""
        if req.method == "GET":
            return Reply(200, envelope(self.client.our_credentials(token)))
        if req.method == "DELETE":
            if who != "peer":
                return self._not_allowed("GET, POST")
            with self.store.lock:
                self.store.peer = None
                self.store.token_a_valid = True  # simulator convenience: the same Token A may register again
            log("eMSP unregistered (credentials DELETE)")
            return Reply(200, envelope(None))
        if req.method not in ("POST", "PUT"):
            return self._not_allowed("GET, POST, PUT, DELETE")
        if req.method == "POST" and who == "peer":
            return Reply(405, envelope(None, 2000, "already registered; use PUT"), {"Allow": "GET, PUT, DELETE"})
        if req.method == "PUT" and who != "peer":
            return Reply(405, envelope(None, 2000, "not registered; use POST"), {"Allow": "GET, POST"})
        body = req.json()
        if isinstance(body, list) and body:
            body = body[0]
        body = wire.credentials_in(self.version, body)
        if not isinstance(body, dict) or not isinstance(body.get("token"), str) or not body.get("url"):
            return Reply(200, envelope(None, 2001, "credentials need token, url and roles"))
        if not isinstance(body.get("roles"), list) or not body["roles"]:
            return Reply(200, envelope(None, 2001, "credentials need at least one role"))
        try:
            version_url, endpoints = self.client.fetch_endpoints(str(body["url"]), body["token"])
        except RegistrationError as exc:
            log(f"credentials {req.method} failed: {exc.message}")
            return Reply(200, envelope(None, exc.code, exc.message))
        token_c = new_token()
        with self.store.lock:
            previous = self.store.peer
            self.store.peer = Peer(
                versions_url=str(body["url"]),
                version_url=version_url,
                endpoints=endpoints,
                token_out=body["token"],
                token_in=token_c,
                roles=list(body["roles"]),
                direction=previous.direction if (previous and req.method == "PUT") else WE_ARE_SERVER,
            )
            self.store.token_a_valid = False
        log(f"eMSP registered via credentials {req.method} from {body['url']}")
        if self.hub is not None:
            self.hub.announce_later(1.0)  # once the eMSP has read our answer, it takes our ClientInfo
        return Reply(200, envelope(self.client.our_credentials(token_c)))

    # --- sender lists -----------------------------------------------------------------------------

    def paginate(self, req: Request, items: list[dict[str, Any]], module: str) -> Reply:
        """date_from (incl) / date_to (excl) / offset / limit, ordered by last_updated, with Link headers."""
        try:
            date_from = parse_dt(req.q("date_from")) if req.q("date_from") else None
            date_to = parse_dt(req.q("date_to")) if req.q("date_to") else None
            offset = int(req.q("offset") or 0)
            limit = int(req.q("limit")) if req.q("limit") else self.cfg.page_limit
        except ValueError as exc:
            return Reply(200, envelope(None, 2001, f"invalid parameter: {exc}"))
        if offset < 0 or limit < 0:
            return Reply(200, envelope(None, 2001, "offset and limit must be >= 0"))
        limit = min(limit, self.cfg.page_limit)
        if self.hub is not None:
            items = self.hub.addressed(req, items)
        rows = []
        for item in items:
            updated = parsed_dt(item["last_updated"])
            if date_from and updated < date_from:
                continue
            if date_to and updated >= date_to:
                continue
            rows.append((updated, str(item.get("id", "")), item))
        rows.sort(key=lambda r: (r[0], r[1]))
        page = clone([r[2] for r in rows[offset : offset + limit]])  # the caller's quirks may change it
        if self.version != "2.2.1":
            page = [self.wire_out(module, item) for item in page]
        headers = {"X-Total-Count": str(len(rows)), "X-Limit": str(self.cfg.page_limit)}
        if self.fault("no_link_header"):  # no next page named, nor the total: only X-Limit says pages are capped
            del headers["X-Total-Count"]
        elif limit and offset + limit < len(rows):
            params = {k: req.q(k) for k in ("date_from", "date_to") if req.q(k)}
            params.update(offset=str(offset + limit), limit=str(limit))
            url = f"{self.module_url(module)}?{urlencode(params)}"
            if self.fault("broken_link"):
                url = "null"
            elif self.fault("link_elsewhere"):  # another scheme and path than the list's own
                url = "https" + url.removeprefix("http").replace(f"/{module}", f"/{module}/page", 1)
            headers["Link"] = f'<{url}>; rel="next"'
        return Reply(200, envelope(page), headers)

    def wire_out(self, module: str, obj: dict[str, Any]) -> dict[str, Any]:
        """One object of a sender list in our version (2.1.1 Sessions and CDRs embed their Location)."""
        if module == "locations":
            return wire.location_out(self.version, obj)
        if module == "tariffs":
            return wire.tariff_out(self.version, obj)
        location_id = obj.get("location_id") or (obj.get("cdr_location") or {}).get("id") or ""
        with self.store.lock:
            loc = clone(self.store.location(str(location_id)))
        if module == "sessions":
            return wire.session_out(self.version, obj, loc)
        return wire.cdr_out(self.version, obj, loc)

    def m_locations(self, req: Request, rest: list[str], who: str) -> Reply:
        """Locations sender: paginated list, or one Location/EVSE/Connector."""
        if req.method != "GET":
            return self._not_allowed("GET")
        with self.store.lock:
            if not rest:
                items = list(self.store.locations.values())  # paginate copies the page it returns
            else:
                loc = self.store.location(rest[0])
                if loc is None:
                    return Reply(404, envelope(None, 2003, f"unknown location {rest[0]}"))
                obj: Any = loc
                if len(rest) >= 2:
                    obj = self.store.evse(loc, rest[1])
                    if obj is None:
                        return Reply(404, envelope(None, 2003, f"unknown EVSE {rest[1]}"))
                if len(rest) >= 3:
                    obj = self.store.connector(obj, rest[2])
                    if obj is None:
                        return Reply(404, envelope(None, 2003, f"unknown connector {rest[2]}"))
                if len(rest) > 3:
                    return Reply(404, envelope(None, 2000, "not found"))
                out = (wire.location_out, wire.evse_out, wire.connector_out)[len(rest) - 1]
                return Reply(200, envelope(out(self.version, clone(obj))))
        return self.paginate(req, items, "locations")

    def m_tariffs(self, req: Request, rest: list[str], who: str) -> Reply:
        """Tariffs sender: paginated list."""
        if req.method != "GET":
            return self._not_allowed("GET")
        if rest:
            return Reply(404, envelope(None, 2000, "not found"))
        return self.paginate(req, self.store.snapshot("tariffs"), "tariffs")

    def m_cdrs(self, req: Request, rest: list[str], who: str) -> Reply:
        """CDRs sender: paginated list."""
        if req.method != "GET":
            return self._not_allowed("GET")
        if rest:
            return Reply(404, envelope(None, 2000, "not found"))
        return self.paginate(req, self.store.snapshot("cdrs"), "cdrs")

    def m_sessions(self, req: Request, rest: list[str], who: str) -> Reply:
        """Sessions sender: paginated list (date_from required) and PUT charging_preferences."""
        if len(rest) == 2 and rest[1] == "charging_preferences" and self.version != "2.1.1":
            if req.method != "PUT":
                return self._not_allowed("PUT")
            body = req.json()
            with self.store.lock:
                session = self.store.session(rest[0])
            if session is None:
                return Reply(404, envelope(None, 2001, f"unknown session {rest[0]}"))
            if not isinstance(body, dict) or not body.get("profile_type"):
                return Reply(200, envelope(None, 2001, "ChargingPreferences need profile_type"))
            result = "ACCEPTED" if session["status"] == "ACTIVE" else "NOT_POSSIBLE"
            return Reply(200, envelope(result))
        if rest:
            return Reply(404, envelope(None, 2000, "not found"))
        if req.method != "GET":
            return self._not_allowed("GET")
        if not req.q("date_from"):
            return Reply(200, envelope(None, 2001, "date_from is required for sessions"))
        return self.paginate(req, self.store.snapshot("sessions"), "sessions")

    def m_hubclientinfo(self, req: Request, rest: list[str], who: str) -> Reply:
        """HubClientInfo sender (--hub only): the parties we front, as ClientInfo (paginated)."""
        if self.hub is None or rest:
            return Reply(404, envelope(None, 2000, "not found"))
        if req.method != "GET":
            return self._not_allowed("GET")
        return self.paginate(req, self.hub.client_infos(), "hubclientinfo")

    # --- receivers --------------------------------------------------------------------------------

    def m_tokens(self, req: Request, rest: list[str], who: str) -> Reply:
        """Tokens receiver: GET/PUT/PATCH {cc}/{pid}/{uid}[?type=]."""
        if len(rest) != 3:
            return Reply(404, envelope(None, 2000, "use tokens/{country_code}/{party_id}/{token_uid}"))
        cc, pid, uid = rest
        ttype = (req.q("type") or "RFID").upper()
        key = (ci(cc), ci(pid), ci(uid), ci(ttype))
        if self.version == "2.1.1":  # no ?type= in 2.1.1: the uid names the token
            with self.store.lock:
                key = next((k for k in self.store.tokens if k[:3] == key[:3]), key)
        if req.method == "GET":
            with self.store.lock:
                token = clone(self.store.tokens.get(key))
            if token is None:
                return Reply(404, envelope(None, 2004, "unknown token"))
            return Reply(200, envelope(wire.token_out(self.version, token)))
        body = wire.token_in(self.version, req.json(), cc, pid)
        if req.method == "PUT":
            if not isinstance(body, dict):
                return Reply(200, envelope(None, 2001, "body must be a Token"))
            missing = [f for f in TOKEN_REQUIRED if body.get(f) is None]
            if missing:
                return Reply(200, envelope(None, 2001, f"missing fields: {', '.join(missing)}"))
            if (ci(body["uid"]), ci(body["country_code"]), ci(body["party_id"])) != (
                ci(uid),
                ci(cc),
                ci(pid),
            ):
                return Reply(200, envelope(None, 2001, "uid/country_code/party_id differ from the URL"))
            key = (ci(cc), ci(pid), ci(uid), ci(body["type"]))
            with self.store.lock:
                existed = key in self.store.tokens
                self.store.tokens[key] = clone(body)
            return Reply(200 if existed else 201, envelope(None))
        if req.method == "PATCH":
            if not isinstance(body, dict):
                return Reply(200, envelope(None, 2001, "body must be an object"))
            if not body.get("last_updated"):
                return Reply(200, envelope(None, 2001, "PATCH requires last_updated"))
            with self.store.lock:
                token = self.store.tokens.get(key)
                if token is None:
                    return Reply(404, envelope(None, 2004, "unknown token"))
                token.update({k: v for k, v in body.items() if k not in ("uid", "country_code", "party_id")})
            return Reply(200, envelope(None))
        return self._not_allowed("GET, PUT, PATCH")

    def m_commands(self, req: Request, rest: list[str], who: str) -> Reply:
        """Commands receiver: POST {command} → CommandResponse; the CommandResult follows asynchronously."""
        if len(rest) != 1:
            return Reply(404, envelope(None, 2000, "use commands/{command}"))
        if req.method != "POST":
            return self._not_allowed("POST")
        with self.store.lock:
            emsp_party = self.store.peer.party() if self.store.peer else (None, None)
        body = wire.command_in(self.version, req.json(), (str(emsp_party[0] or ""), str(emsp_party[1] or "")))
        outcome = self.engine.handle_command(rest[0], body)
        message = outcome.message or (outcome.response or {}).get("message", [{}])[0].get("text", "Success")
        response = wire.command_response_out(self.version, outcome.response)
        return Reply(outcome.http_status, envelope(response, outcome.ocpi_status, message))

    # --- control API ------------------------------------------------------------------------------

    def control(self, req: Request, path: str) -> Reply:
        """The unauthenticated /_sim/ API (127.0.0.1 only)."""
        if req.client_ip not in ("127.0.0.1", "::1"):
            return Reply(403, {"error": "control API is local only"})
        name = path[len("/_sim/") :] if path.startswith("/_sim/") else ""
        if req.method == "GET":
            if name == "state":
                return Reply(200, self.state())
            if name in ("locations", "tariffs", "sessions", "cdrs", "tokens", "commands", "reservations"):
                return Reply(200, self.store.snapshot(name))
            return Reply(404, {"error": f"unknown control resource {name!r}"})
        if req.method != "POST":
            return Reply(405, {"error": "GET or POST"})
        body = req.json() or {}
        if not isinstance(body, dict):
            return Reply(400, {"error": "body must be a JSON object"})
        handler = getattr(self, f"c_{name}", None) or getattr(self.hub, f"c_{name}", None)
        if handler is None:
            return Reply(404, {"error": f"unknown control action {name!r}"})
        return handler(body)

    def state(self) -> dict[str, Any]:
        """Summary for GET /_sim/state."""
        with self.store.lock:
            peer = self.store.peer
            out: dict[str, Any] = {
                "party": {
                    "country_code": self.cfg.country_code,
                    "party_id": self.cfg.party_id,
                    "name": self.cfg.name,
                    "role": "CPO",
                },
                "versions_url": f"{self.base_url}/ocpi/versions",
                "registered": peer is not None,
                "direction": peer.direction if peer else None,
                "emsp_versions_url": peer.versions_url if peer else None,
                "emsp_endpoints": clone(peer.endpoints) if peer else [],
                "emsp_roles": clone(peer.roles) if peer else [],
                **self.store.token_view(),
                "token_encoding": self.cfg.token_encoding,
                "tariff_profile": self.cfg.tariff_profile,
                "faults": dict(self.store.faults),
                "counts": self.store.counts(),
                "last_registration_error": self.store.last_registration_error,
            }
        if self.hub is not None:
            out["party"]["role"] = "HUB"
            out["hub"] = self.hub.view()
        return out

    def c_evse_status(self, body: dict[str, Any]) -> Reply:
        """Set an EVSE status and push the PATCH."""
        status = str(body.get("status", "")).upper()
        if status not in EVSE_STATUSES:
            return Reply(400, {"error": f"status must be one of {sorted(EVSE_STATUSES)}"})
        res = self.engine.push_evse_status(str(body.get("location_id", "")), str(body.get("evse_uid", "")), status)
        if res is None:
            return Reply(404, {"error": "unknown location/EVSE"})
        return Reply(200, {"status": status, "push_status": res.status, "push": res.as_dict()})

    def c_faults(self, body: dict[str, Any]) -> Reply:
        """Set/clear fault modes at runtime."""
        updates = body.get("set") or {}
        clear = body.get("clear") or []
        if not isinstance(updates, dict) or not isinstance(clear, list):
            return Reply(400, {"error": 'use {"set": {...}, "clear": [...]}'})
        unknown = [n for n in [*updates, *clear] if n not in FAULT_NAMES]
        if unknown:
            return Reply(400, {"error": f"unknown faults {unknown}; known: {list(FAULT_NAMES)}"})
        try:
            values = {n: normalise_fault(n, v) for n, v in updates.items()}
        except (TypeError, ValueError) as exc:
            return Reply(400, {"error": f"a fault value is not valid: {exc}"})
        with self.store.lock:
            for n in clear:
                self.store.faults.pop(n, None)
            for n, value in values.items():
                if value in (False, 0, 0.0):
                    self.store.faults.pop(n, None)
                else:
                    self.store.faults[n] = value
            faults = dict(self.store.faults)
        log(f"faults now {faults}")
        return Reply(200, {"faults": faults})

    def c_start_session(self, body: dict[str, Any]) -> Reply:
        """Simulated RFID swipe."""
        for f in ("location_id", "evse_uid", "token_uid"):
            if not body.get(f):
                return Reply(400, {"error": f"{f} is required"})
        result = self.engine.swipe(
            str(body["location_id"]),
            str(body["evse_uid"]),
            str(body["token_uid"]),
            str(body.get("token_type") or "RFID").upper(),
        )
        return Reply(200, result)

    def c_stop_session(self, body: dict[str, Any]) -> Reply:
        """Stop a session from the charger side; the CDR follows."""
        cdr = self.engine.finish_session(str(body.get("session_id", "")))
        if cdr is None:
            return Reply(404, {"error": "no active session with that id"})
        return Reply(200, {"session_id": body["session_id"], "cdr": cdr})

    def c_register(self, body: dict[str, Any]) -> Reply:
        """Register with an eMSP at runtime (we are the credentials client)."""
        url, token = body.get("versions_url"), body.get("token_a")
        if not url or not token:
            return Reply(400, {"error": "versions_url and token_a are required"})
        try:
            self.client.register(str(url), str(token), attempts=int(body.get("attempts") or 3), pause=0.5)
        except RegistrationError as exc:
            return Reply(502, {"registered": False, "error": exc.message, "ocpi_status": exc.code})
        return Reply(200, self.state())

    def c_touch(self, body: dict[str, Any]) -> Reply:
        """Bump last_updated of n Locations."""
        return Reply(200, {"touched": self.store.touch(int(body.get("n") or 1))})


class Simulator:
    """Wires store, client, engine and HTTP server; start() binds, stop() shuts down cleanly."""

    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.store = Store(cfg)
        self.client = EmspClient(self.store, cfg)
        self.scheduler = Scheduler()
        self.engine = Engine(self.store, cfg, self.client, self.scheduler)
        self.app = App(cfg, self.store, self.client, self.engine)
        if cfg.hub:  # one process as a hub fronting several CPO parties
            self.app.hub = self.client.hub = Hub(cfg, self.store, self.client, self.scheduler)
        self.httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> str:
        """Bind 127.0.0.1:port, serve in a thread; returns the base URL."""
        httpd = ThreadingHTTPServer(("127.0.0.1", self.cfg.port), Handler)
        httpd.daemon_threads = True
        httpd.app = self.app  # type: ignore[attr-defined]
        self.httpd = httpd
        port = httpd.server_address[1]
        base = f"http://127.0.0.1:{port}"
        self.app.base_url = base
        self.client.base_url = base
        self.scheduler.start()
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="cposim-http", daemon=True
        )
        self._thread.start()
        return base

    def register_in_background(self, versions_url: str, token_a: str, on_done: Any = None) -> None:
        """--register-with: register after start, retrying while the eMSP is not up yet."""

        def run() -> None:
            try:
                self.client.register(versions_url, token_a, attempts=10, pause=1.0)
            except RegistrationError as exc:
                log(f"registration with {versions_url} gave up: {exc.message}")
                return
            if on_done:
                on_done()

        threading.Thread(target=run, name="cposim-register", daemon=True).start()

    def stop(self) -> None:
        """Stop serving and drop scheduled jobs."""
        self.scheduler.stop()
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=2)
