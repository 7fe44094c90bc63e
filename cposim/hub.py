"""`--hub`: one simulator process as an OCPI 2.2.1 Hub fronting several CPO parties (transport_and_format
§"Message Routing", mod_hub_client_info). The simulator's own party is the hub; its Locations and Tariffs are
spread over the parties it fronts, and each object carries its owner's country_code/party_id.

What the hub checks in what it is sent: `OCPI-from-*` names the eMSP of the token, `OCPI-to-*` names a party it
fronts — or the hub itself for a GET All of a sender list ("GET All via Hubs") and a Token push (a "Broadcast
Push") — and the object a request is about belongs to that party. A strict hub: Open Routing Requests (no
`OCPI-to-*`) are refused, so that an eMSP's routing mistakes show. Refusals are hub errors (status_codes §4xxx:
4001 unknown receiver, 4003 receiver not connected) or 2001/2003 as the party would answer. Every routed request
is recorded (GET /_sim/state → `hub.received`), so tests can assert how they were addressed.

What the hub sends the eMSP (EVSE patches, Sessions, CDRs, CommandResults, real-time authorizations) carries
`OCPI-from-*` of the party that owns the object (emsp_client.py asks `sender_of_result` for CommandResults),
`OCPI-to-*` of the eMSP. Its ClientInfo list is a Sender interface (`hubclientinfo`, a configuration module:
no routing headers) and is PUT to the eMSP's receiver after registration and on every status change."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .common import ci, clone, iso, log, utcnow
from .emsp_client import CallResult
from .transport import Reply, Request

if TYPE_CHECKING:
    from collections.abc import Callable

    from .config import SimConfig
    from .emsp_client import EmspClient
    from .scheduler import Scheduler
    from .state import Store

Party = tuple[str, str]

# mod_hub_client_info ConnectionStatus; with all but CONNECTED "no requests can be sent" to the party.
CONNECTION_STATUSES = ("CONNECTED", "OFFLINE", "PLANNED", "SUSPENDED")
# status_codes §"4xxx: Hub errors".
UNKNOWN_RECEIVER = 4001
CONNECTION_PROBLEM = 4003
# Sender lists the hub answers itself when addressed (GET All via Hubs), combining its parties' objects.
SENDER_LISTS = frozenset({"locations", "tariffs", "sessions", "cdrs"})
# transport §"Message Routing": configuration modules carry no routing headers.
UNROUTED = frozenset({"versions", "details", "credentials", "hubclientinfo"})
MAX_RECORDED = 2000


def party_key(party: Party | None) -> str | None:
    return f"{party[0]}*{party[1]}" if party else None


def header_party(req: Request, way: str) -> Party | None:
    """The party of the `OCPI-{way}-*` headers, upper-cased; None when either is missing."""
    country_code = (req.headers.get(f"OCPI-{way}-country-code") or "").strip().upper()
    party_id = (req.headers.get(f"OCPI-{way}-party-id") or "").strip().upper()
    return (country_code, party_id) if country_code and party_id else None


def party_tariff_id(party_id: str, tariff_id: str) -> str:
    """A Tariff id of one fronted party: the profile's id under the party's prefix, so that the parties'
    tariffs differ in the one table the simulator keys by id."""
    return f"{party_id}-{tariff_id}"[:36]


def _error(status_code: int, message: str, http_status: int) -> Reply:
    body = {"status_code": status_code, "status_message": message, "timestamp": iso(utcnow())}
    return Reply(http_status, body)


class StampedByLocation(dict[str, dict[str, Any]]):
    """Sessions or CDRs stored with the party of their Location: the charging engine makes them for the
    simulator's own party, which behind a hub is the owner of the EVSE."""

    def __init__(self, store: Store, location_of: Callable[[dict[str, Any]], str], items: dict[str, Any]) -> None:
        super().__init__(items)
        self.store = store
        self.location_of = location_of

    def __setitem__(self, key: str, obj: dict[str, Any]) -> None:
        loc = self.store.location(self.location_of(obj))
        if loc is not None:
            obj["country_code"], obj["party_id"] = loc["country_code"], loc["party_id"]
        super().__setitem__(key, obj)


def spread_catalogue(store: Store, parties: list[Party], hub_name: str) -> None:
    """Give every fronted party the profile's tariffs (their own ids) and deal the Locations out among the
    parties in turn, each re-stamped with its owner (EVSE ids, tariff ids, operator)."""
    with store.lock:
        profile = list(store.tariffs.values())
        tariffs: dict[str, dict[str, Any]] = {}
        for country_code, party_id in parties:
            for tariff in profile:
                own = clone(tariff)
                own.update(country_code=country_code, party_id=party_id, id=party_tariff_id(party_id, tariff["id"]))
                tariffs[ci(own["id"])] = own
        store.tariffs = tariffs
        for i, loc in enumerate(store.locations.values()):
            country_code, party_id = parties[i % len(parties)]
            loc.update(country_code=country_code, party_id=party_id, operator={"name": party_name(hub_name, party_id)})
            for evse in loc.get("evses") or []:
                if str(evse.get("evse_id", "")).count("*") >= 2:
                    evse["evse_id"] = f"{country_code}*{party_id}*{evse['evse_id'].split('*', 2)[2]}"
                for connector in evse.get("connectors") or []:
                    ids = connector.get("tariff_ids") or []
                    connector["tariff_ids"] = [party_tariff_id(party_id, t) for t in ids]
        store.sessions = StampedByLocation(store, lambda s: str(s.get("location_id", "")), store.sessions)
        store.cdrs = StampedByLocation(store, lambda c: str((c.get("cdr_location") or {}).get("id", "")), store.cdrs)


def party_name(hub_name: str, party_id: str) -> str:
    return f"{party_id} via {hub_name}"


class Hub:
    """The hub: its parties and their ClientInfo, the routing checks, and the record of what it was sent."""

    def __init__(self, cfg: SimConfig, store: Store, client: EmspClient, scheduler: Scheduler) -> None:
        self.cfg = cfg
        self.store = store
        self.client = client
        self.scheduler = scheduler
        self.own: Party = (cfg.country_code, cfg.party_id)
        self.parties: list[Party] = list(cfg.hub)
        now = iso(utcnow())
        self.client_info: dict[Party, dict[str, Any]] = {
            (cc, pid): {"party_id": pid, "country_code": cc, "role": "CPO", "status": "CONNECTED", "last_updated": now}
            for cc, pid in self.parties
        }
        self.received: list[dict[str, Any]] = []
        self.result_party: dict[str, Party] = {}  # a command's response_url → the party the command was for
        spread_catalogue(store, self.parties, cfg.name)

    # --- identity ---------------------------------------------------------------------------------

    def credentials_roles(self) -> list[dict[str, Any]]:
        """A 2.2.1 hub's CredentialsRoles: role HUB for itself, then a CPO role per party it fronts."""
        hub = {"role": "HUB", "country_code": self.own[0], "party_id": self.own[1]}
        roles = [{**hub, "business_details": {"name": self.cfg.name}}]
        for country_code, party_id in self.parties:
            business = {"name": party_name(self.cfg.name, party_id)}
            roles.append(
                {"role": "CPO", "country_code": country_code, "party_id": party_id, "business_details": business}
            )
        return roles

    def fronts(self, party: Party | None) -> bool:
        return party is not None and party in self.client_info

    # --- what the eMSP sends us -------------------------------------------------------------------

    def route_in(self, req: Request, module: str, rest: list[str]) -> Reply | None:
        """Check the routing of one functional request and record it; a Reply when it is refused."""
        sender, receiver = header_party(req, "from"), header_party(req, "to")
        refusal = self._refusal(req, module, rest, sender, receiver)
        entry = {
            "method": req.method,
            "path": req.path,
            "module": module,
            "from": party_key(sender),
            "to": party_key(receiver),
            "status_code": refusal.body["status_code"] if refusal else None,
            "at": iso(utcnow(), ms=True),
        }
        with self.store.lock:
            self.received.append(entry)
            del self.received[:-MAX_RECORDED]
        if refusal is not None:
            log(f"hub refused {req.method} {req.path} from {entry['from']} to {entry['to']}: {refusal.body}")
            refusal.headers.update(self._answer_headers(self.own, sender))
        return refusal

    def _refusal(
        self, req: Request, module: str, rest: list[str], sender: Party | None, receiver: Party | None
    ) -> Reply | None:
        if sender is None or receiver is None:
            return _error(2001, "OCPI-from-* and OCPI-to-* are required through this hub (no open routing)", 400)
        with self.store.lock:
            peer = self.store.peer
        emsp = tuple(str(p or "").upper() for p in (peer.party() if peer else (None, None)))
        if sender != emsp:
            return _error(2001, f"OCPI-from-* {party_key(sender)} is not the party of this token", 400)
        get_all = req.method == "GET" and not rest and module in SENDER_LISTS
        if receiver == self.own:
            if get_all or (module == "tokens" and req.method in ("PUT", "PATCH")):
                return None  # GET All via Hubs; Broadcast Push of a Token
            return _error(2001, f"{req.method} {module} goes to the party that owns the object, not to the hub", 404)
        if not self.fronts(receiver):
            return _error(UNKNOWN_RECEIVER, f"Unknown receiver {party_key(receiver)}", 404)
        with self.store.lock:
            status = self.client_info[receiver]["status"]  # type: ignore[index]
        if status != "CONNECTED":
            return _error(CONNECTION_PROBLEM, f"{party_key(receiver)} is {status} at the hub", 502)
        if get_all or module == "tokens":
            return None
        return self._owner_refusal(req, module, rest, receiver)

    def _owner_refusal(self, req: Request, module: str, rest: list[str], receiver: Party) -> Reply | None:
        """A direct request about one object: the object must be the receiving party's (the party answers for
        its own objects only, as if the others did not exist)."""
        if module == "locations":
            return self._location_refusal(rest[0] if rest else "", receiver)
        if module == "sessions":
            return self._session_refusal(rest[0] if rest else "", receiver)
        if module != "commands" or req.method != "POST":
            return None
        body = req.json()
        if not isinstance(body, dict):
            return None  # the command handler answers an unusable body
        if body.get("location_id"):
            refusal = self._location_refusal(str(body["location_id"]), receiver)
        elif body.get("session_id"):
            refusal = self._session_refusal(str(body["session_id"]), receiver)
        else:
            refusal = self._reservation_refusal(str(body.get("reservation_id") or ""), receiver)
        if refusal is None and body.get("response_url"):
            with self.store.lock:
                self.result_party[str(body["response_url"])] = receiver
        return refusal

    def _location_refusal(self, location_id: str, receiver: Party) -> Reply | None:
        owner = self.owner(location_id)
        if owner is None or owner == receiver:
            return None  # unknown everywhere: the handler answers 2003 itself
        return _error(2003, f"Unknown location {location_id} at {party_key(receiver)}", 404)

    def _session_refusal(self, session_id: str, receiver: Party) -> Reply | None:
        with self.store.lock:
            session = self.store.session(session_id)
            owner = (session["country_code"], session["party_id"]) if session else None
        if owner is None or owner == receiver:
            return None
        return _error(2001, f"Unknown session {session_id} at {party_key(receiver)}", 404)

    def _reservation_refusal(self, reservation_id: str, receiver: Party) -> Reply | None:
        with self.store.lock:
            found = next((r for k, r in self.store.reservations.items() if k[1] == ci(reservation_id)), None)
        if found is None:
            return None
        return self._location_refusal(found["location_id"], receiver)

    def owner(self, location_id: str) -> Party | None:
        with self.store.lock:
            loc = self.store.location(location_id)
            return (str(loc["country_code"]), str(loc["party_id"])) if loc else None

    def answer_headers(self, req: Request) -> dict[str, str]:
        """Routing headers of our answer: from the party that answers (the receiver the request named), to the
        requester (transport: "Direct response" / "GET All via Hubs response")."""
        receiver = header_party(req, "to")
        return self._answer_headers(receiver if receiver == self.own or self.fronts(receiver) else self.own, None)

    @staticmethod
    def _answer_headers(answerer: Party, requester: Party | None) -> dict[str, str]:
        headers = {"OCPI-from-country-code": answerer[0], "OCPI-from-party-id": answerer[1]}
        if requester is not None:
            headers.update({"OCPI-to-country-code": requester[0], "OCPI-to-party-id": requester[1]})
        return headers

    def addressed(self, req: Request, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A sender list as its receiver has it: a party's own objects when the GET names one party, every
        party's when it names the hub (or nobody: the hubclientinfo list)."""
        receiver = header_party(req, "to")
        if not self.fronts(receiver):
            return items
        return [i for i in items if (ci(i.get("country_code")), ci(i.get("party_id"))) == receiver]

    def sender_of_result(self, response_url: str) -> Party | None:
        """The party a CommandResult comes from: the one its command was addressed to."""
        with self.store.lock:
            return self.result_party.get(response_url)

    # --- ClientInfo -------------------------------------------------------------------------------

    def client_infos(self) -> list[dict[str, Any]]:
        with self.store.lock:
            return clone(list(self.client_info.values()))

    def announce_later(self, delay: float) -> None:
        """PUT every party's ClientInfo to the eMSP after `delay` s: an eMSP that registers with us takes us for
        a hub only once it has read our credentials answer."""
        self.scheduler.call_later(delay, self.announce)

    def announce(self) -> list[dict[str, Any]]:
        return [self.put_client_info(info).as_dict() for info in self.client_infos()]

    def put_client_info(self, info: dict[str, Any]) -> CallResult:
        """PUT one ClientInfo to the eMSP's hubclientinfo receiver (no routing headers: a configuration module)."""
        with self.store.lock:
            peer = self.store.peer
        url = peer.endpoint("hubclientinfo", "RECEIVER") if peer else None
        if peer is None or not url:
            log(f"OUT skip ClientInfo {info['country_code']}*{info['party_id']}: no eMSP hubclientinfo receiver")
            return CallResult(None, error="no eMSP hubclientinfo receiver")
        target = "/".join([url.rstrip("/"), *(quote(info[k], safe="") for k in ("country_code", "party_id"))])
        return self.client.call("PUT", target, info, token=peer.token_out, routing=False, what="client info")

    # --- control API ------------------------------------------------------------------------------

    def c_client_info(self, body: dict[str, Any]) -> Reply:
        """POST /_sim/client_info {country_code, party_id, status, push?}: a party's connection status changes and
        the eMSP is told (unless `push` is false: a hub whose word was lost); without a party, every ClientInfo is
        PUT again."""
        if not body.get("party_id"):
            return Reply(200, {"pushed": self.announce()})
        party = (str(body.get("country_code") or "").upper(), str(body["party_id"]).upper())
        status = str(body.get("status") or "").upper()
        if not self.fronts(party):
            return Reply(404, {"error": f"the hub fronts no party {party_key(party)}"})
        if status not in CONNECTION_STATUSES:
            return Reply(400, {"error": f"status must be one of {list(CONNECTION_STATUSES)}"})
        with self.store.lock:
            info = self.client_info[party]
            info.update(status=status, last_updated=iso(utcnow()))
            info = clone(info)
        log(f"hub: {party_key(party)} is {status}")
        pushed = self.put_client_info(info).as_dict() if body.get("push", True) is not False else None
        return Reply(200, {"client_info": info, "push": pushed})

    def view(self) -> dict[str, Any]:
        """The hub's part of GET /_sim/state."""
        with self.store.lock:
            return {
                "parties": clone(list(self.client_info.values())),
                "received": clone(self.received),
                "command_results_from": {url: party_key(p) for url, p in self.result_party.items()},
            }
