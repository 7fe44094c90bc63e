"""Charging behaviour: commands, reservations, RFID swipes and sessions. The meter and the CDR a session ends
in are in meter.py."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from .common import ci, clone, display_text, get_tz, iso, log, new_token, parse_dt, utcnow
from .config import SimConfig
from .emsp_client import CallResult, EmspClient
from .meter import Runtime, advance_meter, build_cdr, cdr_token, now_ms
from .pricing import price_session
from .scheduler import Scheduler
from .state import Store

COMMANDS = ("START_SESSION", "STOP_SESSION", "RESERVE_NOW", "CANCEL_RESERVATION", "UNLOCK_CONNECTOR")
INOPERATIVE = {"INOPERATIVE", "OUTOFORDER", "UNKNOWN", "PLANNED", "REMOVED"}


@dataclass
class CommandOutcome:
    """Synchronous answer to a command POST plus what to do later."""

    http_status: int
    ocpi_status: int
    response: dict[str, Any] | None
    message: str = ""
    entry: dict[str, Any] | None = None


class Engine:
    """Owns the simulated charge points: every state change is stored and pushed to the eMSP."""

    def __init__(self, store: Store, cfg: SimConfig, client: EmspClient, scheduler: Scheduler) -> None:
        self.store = store
        self.cfg = cfg
        self.client = client
        self.scheduler = scheduler
        self.runtimes: dict[str, Runtime] = {}
        self.claimed: set[tuple[str, str]] = set()
        self.run_tag = new_token()[:6].upper().replace("-", "X").replace("_", "Y")
        self._counter = 0

    # --- helpers ----------------------------------------------------------------------------------

    def _response(self, result: str, message: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {"result": result, "timeout": self.cfg.command_timeout}
        if message:
            out["message"] = display_text(message)
        return out

    def push_evse_status(self, location_id: str, evse_uid: str, status: str) -> CallResult | None:
        """Store a new EVSE status and PATCH it to the eMSP locations receiver."""
        patch = self.store.set_evse_status(location_id, evse_uid, status)
        if patch is None:
            return None
        with self.store.lock:
            loc = self.store.location(location_id)
            loc_id = loc["id"] if loc else location_id
            evse = self.store.evse(loc, evse_uid) if loc else None
            uid = evse["uid"] if evse else evse_uid
        return self.client.patch_evse(loc_id, uid, patch)

    def _evse_outcome(self, loc: dict[str, Any], evse: dict[str, Any], token_uid: str | None) -> str:
        """CommandResult an EVSE would give for a new start/reservation right now."""
        key = (ci(loc["id"]), ci(evse["uid"]))
        status = str(evse.get("status", "UNKNOWN")).upper()
        if key in self.claimed:
            return "EVSE_OCCUPIED"
        if status == "AVAILABLE":
            return "ACCEPTED"
        if status == "RESERVED":
            res = self._reservation_on(loc["id"], evse["uid"])
            if res and token_uid and ci(res["token"].get("uid", "")) == ci(token_uid):
                return "ACCEPTED"
            return "EVSE_OCCUPIED"
        if status in INOPERATIVE:
            return "EVSE_INOPERATIVE"
        return "EVSE_OCCUPIED"

    def _any_evse(
        self, loc: dict[str, Any], capability: str, token_uid: str | None
    ) -> tuple[dict[str, Any] | None, str]:
        """For a command naming no EVSE: the first EVSE with `capability` that would accept it, else the
        first one with its outcome; (None, "") when no EVSE has the capability."""
        capable = [e for e in loc.get("evses") or [] if capability in e.get("capabilities", [])]
        if not capable:
            return None, ""
        for evse in capable:
            if self._evse_outcome(loc, evse, token_uid) == "ACCEPTED":
                return evse, "ACCEPTED"
        return capable[0], self._evse_outcome(loc, capable[0], token_uid)

    def _reservation_on(self, location_id: str, evse_uid: str) -> dict[str, Any] | None:
        for res in self.store.reservations.values():
            if ci(res["location_id"]) == ci(location_id) and ci(res["evse_uid"]) == ci(evse_uid):
                return res
        return None

    def _log_entry(self, command: str, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": str(uuid.uuid4()),
            "command": command,
            "received_at": iso(utcnow(), ms=True),
            "request": clone(body),
            "response": None,
            "result": None,
            "result_http_status": None,
            "result_sent_at": None,
        }

    def _send_result(self, entry: dict[str, Any], result: str, message: str = "") -> None:
        """POST the CommandResult to the response_url (unless the no_command_result fault is on)."""
        body: dict[str, Any] = {"result": result}
        if message:
            body["message"] = display_text(message)
        with self.store.lock:
            entry["result"] = body
            fault = "no_command_result" if self.store.faults.get("no_command_result") else None
            if fault is None and entry["command"] == "RESERVE_NOW" and self.store.faults.get("no_reservation_result"):
                fault = "no_reservation_result"
        if fault:
            log(f"command {entry['command']} result {result} suppressed (fault {fault})")
            with self.store.lock:
                entry["result_suppressed"] = True
            return
        res = self.client.post_command_result(entry["request"]["response_url"], body)
        with self.store.lock:
            entry["result_http_status"] = res.status
            entry["result_sent_at"] = iso(utcnow(), ms=True)

    # --- commands ---------------------------------------------------------------------------------

    def handle_command(self, command: str, body: Any) -> CommandOutcome:
        """Validate a command, answer synchronously and schedule its asynchronous result."""
        command = command.upper()
        if command not in COMMANDS or (command == "CANCEL_RESERVATION" and self.cfg.ocpi_version == "2.1.1"):
            return CommandOutcome(404, 2000, self._response("NOT_SUPPORTED", f"unknown command {command}"))
        if not isinstance(body, dict) or not body.get("response_url"):
            return CommandOutcome(200, 2001, None, "body must be an object with response_url")
        entry = self._log_entry(command, body)
        handler = getattr(self, f"_cmd_{command.lower()}")
        outcome: CommandOutcome = handler(body, entry)
        entry["response"] = outcome.response
        entry["ocpi_status"] = outcome.ocpi_status
        if outcome.response is not None:
            self.store.log_command(entry)
        outcome.entry = entry
        return outcome

    def _locate(self, body: dict[str, Any], need_evse: bool = False) -> tuple[Any, Any, CommandOutcome | None]:
        with self.store.lock:
            loc = self.store.location(str(body.get("location_id", "")))
            if loc is None:
                return None, None, CommandOutcome(200, 2003, self._response("REJECTED", "unknown location"))
            evse = None
            if body.get("evse_uid"):
                evse = self.store.evse(loc, str(body["evse_uid"]))
                if evse is None:
                    return loc, None, CommandOutcome(200, 2003, self._response("REJECTED", "unknown EVSE"))
            elif need_evse:
                return loc, None, CommandOutcome(200, 2001, None, "evse_uid is required")
            return loc, evse, None

    def _cmd_start_session(self, body: dict[str, Any], entry: dict[str, Any]) -> CommandOutcome:
        token = body.get("token")
        if not isinstance(token, dict) or not token.get("uid") or not body.get("location_id"):
            return CommandOutcome(200, 2001, None, "token and location_id are required")
        loc, evse, err = self._locate(body)
        if err:
            return err
        with self.store.lock:
            if evse is None:
                evse, result = self._any_evse(loc, "REMOTE_START_STOP_CAPABLE", token["uid"])
                if evse is None:
                    return CommandOutcome(200, 1000, self._response("NOT_SUPPORTED", "no remote start here"))
            else:
                if "REMOTE_START_STOP_CAPABLE" not in evse.get("capabilities", []):
                    return CommandOutcome(200, 1000, self._response("NOT_SUPPORTED", "EVSE not remote startable"))
                result = self._evse_outcome(loc, evse, token["uid"])
            connector_id = body.get("connector_id")
            if connector_id and self.store.connector(evse, str(connector_id)) is None:
                return CommandOutcome(200, 2003, self._response("REJECTED", "unknown connector"))
            connector_id = str(connector_id or evse["connectors"][0]["id"])
            target = (loc["id"], evse["uid"], connector_id)
            if result == "ACCEPTED":
                self.claimed.add((ci(loc["id"]), ci(evse["uid"])))
        entry["target"] = {"location_id": target[0], "evse_uid": target[1], "connector_id": target[2]}
        self.scheduler.call_later(self.cfg.command_delay, self._start_result, entry, result, target)
        return CommandOutcome(200, 1000, self._response("ACCEPTED"))

    def _start_result(self, entry: dict[str, Any], result: str, target: tuple[str, str, str]) -> None:
        self._send_result(entry, result)
        if result == "ACCEPTED":
            self.scheduler.call_later(self.cfg.plug_in_delay, self._plug_in, entry, target)

    def _plug_in(self, entry: dict[str, Any], target: tuple[str, str, str]) -> None:
        body = entry["request"]
        token = body["token"]
        auth_ref = body.get("authorization_reference")
        with self.store.lock:
            res = self._reservation_on(target[0], target[1])
            if res and ci(res["token"].get("uid", "")) == ci(token.get("uid", "")):
                self.store.reservations.pop((ci(res["location_id"]), ci(res["reservation_id"])), None)
                auth_ref = auth_ref or res.get("authorization_reference")
        session = self.create_session(target, cdr_token(token), "COMMAND", auth_ref)
        with self.store.lock:
            entry["session_id"] = session["id"]

    def _cmd_stop_session(self, body: dict[str, Any], entry: dict[str, Any]) -> CommandOutcome:
        sid = str(body.get("session_id") or "")
        with self.store.lock:
            session = self.store.session(sid)
            rt = self.runtimes.get(ci(sid))
            if session is None:
                return CommandOutcome(200, 1000, self._response("UNKNOWN_SESSION", "unknown session"))
            if rt is None or not rt.active:
                return CommandOutcome(200, 1000, self._response("REJECTED", f"session is {session['status']}"))
        self.scheduler.call_later(self.cfg.command_delay, self._stop_result, entry, sid)
        return CommandOutcome(200, 1000, self._response("ACCEPTED"))

    def _stop_result(self, entry: dict[str, Any], session_id: str) -> None:
        self._send_result(entry, "ACCEPTED")
        self.finish_session(session_id)

    def _cmd_reserve_now(self, body: dict[str, Any], entry: dict[str, Any]) -> CommandOutcome:
        token = body.get("token")
        if not isinstance(token, dict) or not body.get("reservation_id") or not body.get("expiry_date"):
            return CommandOutcome(200, 2001, None, "token, reservation_id and expiry_date are required")
        try:
            expiry = parse_dt(str(body["expiry_date"]))
        except ValueError:
            return CommandOutcome(200, 2001, None, "expiry_date is not a DateTime")
        if expiry <= utcnow():
            return CommandOutcome(200, 1000, self._response("REJECTED", "expiry_date is in the past"))
        loc, evse, err = self._locate(body)
        if err:
            return err
        with self.store.lock:
            ahead_limit = self.store.faults.get("reserve_ahead_limit")
            reject_all = bool(self.store.faults.get("reject_reservations"))
        if ahead_limit and expiry > utcnow() + timedelta(minutes=min(float(ahead_limit), 1e7)):
            # As real CPOs do: a reservation is taken only so far ahead (fault reserve_ahead_limit).
            log(f"RESERVE_NOW {body['reservation_id']} refused: expiry more than {ahead_limit:g} min ahead")
            return CommandOutcome(
                200, 1000, self._response("REJECTED", f"reservations are taken at most {ahead_limit:g} minutes ahead")
            )
        if reject_all:  # the command is taken, the charger refuses it (fault reject_reservations)
            if evse is not None:
                entry["target"] = {"location_id": loc["id"], "evse_uid": evse["uid"]}
            log(f"RESERVE_NOW {body['reservation_id']} will be REJECTED (fault reject_reservations)")
            self.scheduler.call_later(self.cfg.command_delay, self._reserve_result, entry, "REJECTED", None)
            return CommandOutcome(200, 1000, self._response("ACCEPTED"))
        rid = str(body["reservation_id"])
        with self.store.lock:
            existing = self.store.reservations.get((ci(loc["id"]), ci(rid)))
            if existing and (evse is None or ci(evse["uid"]) == ci(existing["evse_uid"])):
                existing.update(
                    token=clone(token),
                    expiry_date=iso(expiry),
                    version=existing["version"] + 1,
                    authorization_reference=body.get("authorization_reference"),
                )
                self.scheduler.call_later(self.cfg.command_delay, self._reserve_result, entry, "ACCEPTED", None)
                self._schedule_expiry(existing)
                return CommandOutcome(200, 1000, self._response("ACCEPTED"))
            if evse is None:
                evse, result = self._any_evse(loc, "RESERVABLE", None)
                if evse is None:
                    return CommandOutcome(200, 1000, self._response("NOT_SUPPORTED", "no reservable EVSE"))
            else:
                if "RESERVABLE" not in evse.get("capabilities", []):
                    return CommandOutcome(200, 1000, self._response("NOT_SUPPORTED", "EVSE is not RESERVABLE"))
                result = self._evse_outcome(loc, evse, None)
                if str(evse.get("status")).upper() == "RESERVED":
                    result = "EVSE_OCCUPIED"
            reservation = None
            if result == "ACCEPTED":
                self.claimed.add((ci(loc["id"]), ci(evse["uid"])))
                reservation = {
                    "reservation_id": rid,
                    "location_id": loc["id"],
                    "evse_uid": evse["uid"],
                    "token": clone(token),
                    "expiry_date": iso(expiry),
                    "version": 1,
                    "authorization_reference": body.get("authorization_reference"),
                    "active": False,
                }
        entry["target"] = {"location_id": loc["id"], "evse_uid": evse["uid"]}
        self.scheduler.call_later(self.cfg.command_delay, self._reserve_result, entry, result, reservation)
        return CommandOutcome(200, 1000, self._response("ACCEPTED"))

    def _reserve_result(self, entry: dict[str, Any], result: str, reservation: dict[str, Any] | None) -> None:
        if reservation is not None:
            key = (ci(reservation["location_id"]), ci(reservation["evse_uid"]))
            with self.store.lock:
                self.store.reservations[(ci(reservation["location_id"]), ci(reservation["reservation_id"]))] = (
                    reservation
                )
                reservation["active"] = True
                self.claimed.discard(key)
            self.push_evse_status(reservation["location_id"], reservation["evse_uid"], "RESERVED")
            self._schedule_expiry(reservation)
        self._send_result(entry, result)

    def _schedule_expiry(self, reservation: dict[str, Any]) -> None:
        delay = (parse_dt(reservation["expiry_date"]) - utcnow()).total_seconds()
        self.scheduler.call_later(max(0.0, delay), self._expire, reservation, reservation["version"])

    def _expire(self, reservation: dict[str, Any], version: int) -> None:
        key = (ci(reservation["location_id"]), ci(reservation["reservation_id"]))
        with self.store.lock:
            current = self.store.reservations.get(key)
            if current is not reservation or reservation["version"] != version:
                return
            self.store.reservations.pop(key, None)
            loc = self.store.location(reservation["location_id"])
            evse = self.store.evse(loc, reservation["evse_uid"]) if loc else None
            still_reserved = evse is not None and str(evse.get("status")).upper() == "RESERVED"
        log(f"reservation {reservation['reservation_id']} expired")
        if still_reserved:
            self.push_evse_status(reservation["location_id"], reservation["evse_uid"], "AVAILABLE")

    def _cmd_cancel_reservation(self, body: dict[str, Any], entry: dict[str, Any]) -> CommandOutcome:
        rid = str(body.get("reservation_id") or "")
        if not rid:
            return CommandOutcome(200, 2001, None, "reservation_id is required")
        self.scheduler.call_later(self.cfg.command_delay, self._cancel_result, entry, rid)
        return CommandOutcome(200, 1000, self._response("ACCEPTED"))

    def _cancel_result(self, entry: dict[str, Any], rid: str) -> None:
        with self.store.lock:
            key = next((k for k in self.store.reservations if k[1] == ci(rid)), None)
            reservation = self.store.reservations.pop(key, None) if key else None
        if reservation is None:
            self._send_result(entry, "UNKNOWN_RESERVATION")
            return
        self._send_result(entry, "ACCEPTED")
        self.push_evse_status(reservation["location_id"], reservation["evse_uid"], "AVAILABLE")

    def _cmd_unlock_connector(self, body: dict[str, Any], entry: dict[str, Any]) -> CommandOutcome:
        if not body.get("location_id") or not body.get("evse_uid") or not body.get("connector_id"):
            return CommandOutcome(200, 2001, None, "location_id, evse_uid and connector_id are required")
        _loc, evse, err = self._locate(body, need_evse=True)
        if err:
            return err
        with self.store.lock:
            if self.store.connector(evse, str(body["connector_id"])) is None:
                return CommandOutcome(200, 2003, self._response("REJECTED", "unknown connector"))
        self.scheduler.call_later(self.cfg.command_delay, self._send_result, entry, "ACCEPTED")
        return CommandOutcome(200, 1000, self._response("ACCEPTED"))

    # --- RFID swipe (control API) -----------------------------------------------------------------

    def swipe(
        self,
        location_id: str,
        evse_uid: str,
        token_uid: str,
        token_type: str = "RFID",  # noqa: S107 - a TokenType, not a secret
    ) -> dict[str, Any]:
        """Simulate an RFID swipe: local whitelist or real-time authorization, then start if ALLOWED."""
        with self.store.lock:
            loc = self.store.location(location_id)
            evse = self.store.evse(loc, evse_uid) if loc else None
            if loc is None or evse is None:
                return {"started": False, "reason": "unknown location/EVSE"}
            outcome = self._evse_outcome(loc, evse, token_uid)
            if outcome != "ACCEPTED":
                return {"started": False, "reason": outcome}
            self.claimed.add((ci(loc["id"]), ci(evse["uid"])))
            local = next(
                (
                    t
                    for (_, _, uid, typ), t in self.store.tokens.items()
                    if uid == ci(token_uid) and typ == ci(token_type)
                ),
                None,
            )
            loc_id, uid = loc["id"], evse["uid"]
            connector_id = evse["connectors"][0]["id"]
        auth: dict[str, Any] = {}
        token = clone(local) if local else None
        auth_ref = None
        method = None
        if local and local.get("valid", True) and str(local.get("whitelist", "")).upper() == "ALWAYS":
            method = "WHITELIST"
        else:
            rta = self.client.authorize(token_uid, token_type, loc_id, uid)
            auth = rta.as_dict()
            info = rta.body.get("data") if isinstance(rta.body, dict) else None
            if isinstance(info, list) and info:
                info = info[0]
            if rta.ok and isinstance(info, dict) and str(info.get("allowed", "")).upper() == "ALLOWED":
                method = "AUTH_REQUEST"
                token = info.get("token") or token
                auth_ref = info.get("authorization_reference")
            elif (
                (rta.status is None or rta.status >= 500)
                and local
                and local.get("valid", True)
                and str(local.get("whitelist", "")).upper() in ("ALLOWED_OFFLINE", "ALLOWED")
            ):
                method = "WHITELIST"  # eMSP unreachable: fall back to the pushed whitelist
        if method is None:
            with self.store.lock:
                self.claimed.discard((ci(loc_id), ci(uid)))
            return {"started": False, "reason": "not authorized", "authorization": auth}
        token = token or {"uid": token_uid, "type": token_type}
        session = self.create_session((loc_id, uid, connector_id), cdr_token(token), method, auth_ref)
        return {"started": True, "session_id": session["id"], "auth_method": method, "authorization": auth}

    # --- sessions ---------------------------------------------------------------------------------

    def create_session(
        self, target: tuple[str, str, str], token: dict[str, Any], auth_method: str, auth_ref: str | None
    ) -> dict[str, Any]:
        """Start charging on an EVSE: store + PUT the ACTIVE Session, EVSE CHARGING, start the meter."""
        loc_id, evse_uid, connector_id = target
        now = now_ms()
        with self.store.lock:
            self._counter += 1
            sid = f"S{self.run_tag}-{self._counter:04d}"
            loc = self.store.location(loc_id)
            evse = self.store.evse(loc, evse_uid)
            conn = self.store.connector(evse, connector_id) or evse["connectors"][0]
            tariff_ids = conn.get("tariff_ids") or []
            tariff = self.store.tariff(tariff_ids[0]) if tariff_ids else None
            power = self.cfg.power_kw or self._connector_kw(conn)
            session: dict[str, Any] = {
                "country_code": self.cfg.country_code,
                "party_id": self.cfg.party_id,
                "id": sid,
                "start_date_time": iso(now, ms=True),
                "kwh": 0.0,
                "cdr_token": token,
                "auth_method": auth_method,
                **({"authorization_reference": auth_ref} if auth_ref else {}),
                "location_id": loc["id"],
                "evse_uid": evse["uid"],
                "connector_id": conn["id"],
                "currency": tariff["currency"] if tariff else self.cfg.currency,
                "charging_periods": [],
                "status": "ACTIVE",
                "last_updated": iso(now),
            }
            rt = Runtime(
                sid,
                loc["id"],
                evse["uid"],
                conn["id"],
                clone(tariff) if tariff else None,
                get_tz(loc.get("time_zone")),
                float(power),
                self.cfg.session_kwh,
                now,
                now,
            )
            session["total_cost"] = self._cost(rt, []).total.price()
            self.store.sessions[ci(sid)] = session
            self.runtimes[ci(sid)] = rt
            self.claimed.discard((ci(loc["id"]), ci(evse["uid"])))
            body = clone(session)
        with rt.lock:
            self.client.put_session(body)
            self.push_evse_status(loc_id, evse_uid, "CHARGING")
        log(f"session {sid} ACTIVE on {loc_id}/{evse_uid} ({auth_method}, {power} kW)")
        self.scheduler.call_later(self.cfg.meter_interval, self._meter_tick, sid)
        return body

    @staticmethod
    def _connector_kw(conn: dict[str, Any]) -> float:
        if conn.get("max_electric_power"):
            return float(conn["max_electric_power"]) / 1000
        volt, amp = float(conn.get("max_voltage") or 230), float(conn.get("max_amperage") or 32)
        factor = 1.732 if conn.get("power_type") == "AC_3_PHASE" else 1.0
        return round(volt * amp * factor / 1000, 1)

    def _cost(self, rt: Runtime, periods: list[dict[str, Any]]) -> Any:
        return price_session(rt.tariff, periods, rt.started, rt.tz)

    def _meter_tick(self, session_id: str) -> None:
        rt = self.runtimes.get(ci(session_id))
        if rt is None:
            return
        with rt.lock:
            if not rt.active:
                return
            new = advance_meter(rt, now_ms())
            with self.store.lock:
                session = self.store.session(session_id)
                session["charging_periods"].extend(new)
                cost = self._cost(rt, session["charging_periods"]).total.price()
                now = iso(utcnow())
                session.update(kwh=rt.published_kwh, total_cost=cost, last_updated=now)
                patch = {
                    "kwh": rt.published_kwh,
                    "charging_periods": clone(new),
                    "total_cost": cost,
                    "last_updated": now,
                }
            self.client.patch_session(session["id"], patch)
        self.scheduler.call_later(self.cfg.meter_interval, self._meter_tick, session_id)

    def finish_session(self, session_id: str) -> dict[str, Any] | None:
        """Stop charging: Session COMPLETED (PATCH), EVSE AVAILABLE (PATCH), then POST the CDR."""
        rt = self.runtimes.get(ci(session_id))
        if rt is None:
            return None
        with rt.lock:
            if not rt.active:
                return None
            rt.active = False
            end = now_ms()
            new = advance_meter(rt, end)
            with self.store.lock:
                session = self.store.session(session_id)
                session["charging_periods"].extend(new)
                cost = self._cost(rt, session["charging_periods"]).total.price()
                now = iso(utcnow())
                session.update(
                    status="COMPLETED",
                    end_date_time=iso(end, ms=True),
                    kwh=rt.published_kwh,
                    total_cost=cost,
                    last_updated=now,
                )
                patch = {
                    "status": "COMPLETED",
                    "end_date_time": session["end_date_time"],
                    "kwh": rt.published_kwh,
                    "charging_periods": clone(new),
                    "total_cost": cost,
                    "last_updated": now,
                }
                loc = self.store.location(rt.location_id)
                evse = self.store.evse(loc, rt.evse_uid)
                cdr = build_cdr(self.cfg, rt, session, loc, evse, self.store.connector(evse, rt.connector_id))
                self.store.cdrs[ci(cdr["id"])] = cdr
            self.client.patch_session(session["id"], patch)
            self.push_evse_status(rt.location_id, rt.evse_uid, "AVAILABLE")
            res = self.client.post_cdr(clone(cdr))
            with self.store.lock:
                self.store.cdr_locations[cdr["id"]] = res.headers.get("Location") or res.headers.get("location")
        log(f"session {session_id} COMPLETED, CDR {cdr['id']} total {cdr['total_cost']}")
        return cdr
