"""Benchmark: the CPU one OCPI request costs the web process, in one process, without HTTP or a load generator.

Usage: .venv/bin/python bench/bench_ocpi_calls.py [--requests 2000] [--kind patch|authorize|session|cdr|location|both]
       valgrind --tool=callgrind --instr-atstart=no .venv/bin/python bench/bench_ocpi_calls.py --callgrind ...

Each request is handed to the WSGI application gunicorn serves (emsp.wsgi: the OCPI lane in front of Django) as
a WSGI environ, on PostgreSQL: EVSE status PATCHes, each newer than the last, real-time authorizations with
LocationReferences, and (`--kind session`) Session PATCHes of 500 ongoing sessions (energy, cost and a charging
period each, as a CPO sends every minute or so) and (`--kind cdr`) new CDRs POSTed (stored, their processing
queued: give REDIS_URL for the queue production uses) and (`--kind location`) whole locations PUT again, as a
pushing CPO sends a changed one. Printed: CPU time per request (time.process_time: the client
side of the database calls included) and, apart, the CPU of the PostgreSQL backend serving it (/proc).

On a virtual machine whose neighbours take CPU (steal time), CPU time per request moves by tens of per cent
from run to run. Under callgrind (--callgrind) instrumentation is switched on for the measured requests only
(callgrind_control), and the instruction count it prints ("Collected") divided by --requests is the same to
0.1 % run after run: the figure to compare two versions of the code by (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from django_env import machine, setup

TOKEN_HEADER = "Token YmVuY2gtY3BvLXRva2Vu"  # base64 of the bench CPO's token (bench_ocpi_http.seed)


def environ(method: str, path: str, body: bytes) -> dict[str, Any]:
    return {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "CONTENT_LENGTH": str(len(body)),
        "CONTENT_TYPE": "application/json",
        "HTTP_AUTHORIZATION": TOKEN_HEADER,
    }


def requester(kind: str) -> Callable[[int], None]:
    from emsp.models import Evse
    from emsp.wsgi import application
    from tests.factories import ocpi_location

    paths = [
        f"/ocpi/emsp/2.2.1/locations/IN/BEN/{loc}/{uid}"
        for loc, uid in Evse.objects.values_list("location__location_id", "uid")
    ]
    start = datetime.now(UTC) - timedelta(minutes=50)
    run = f"{int(time.time()):x}"  # sessions of this run: those of an earlier one are newer than these PATCHes
    if kind == "session":
        for i in range(SESSIONS):  # not measured: the sessions the PATCHes go to
            put = environ(
                "PUT", f"/ocpi/emsp/2.2.1/sessions/IN/BEN/{run}-{i:05d}", session_body(f"{run}-{i:05d}", i, start)
            )
            b"".join(application(put, lambda status, headers, exc_info=None: None))

    def one(n: int) -> None:
        if kind == "location":  # a whole location PUT again, a second newer each time
            obj = ocpi_location("IN", "BEN", f"LOC{n % 1000:05d}", last_updated=stamp_at(start + timedelta(seconds=n)))
            request = environ("PUT", f"/ocpi/emsp/2.2.1/locations/IN/BEN/LOC{n % 1000:05d}", orjson.dumps(obj))
        elif kind == "cdr":  # a new CDR each time, for one of our tokens at one of the CPO's EVSEs
            ended = start + timedelta(seconds=n)
            request = environ("POST", "/ocpi/emsp/2.2.1/cdrs", cdr_body(f"{run}-{n:06d}", n % 1000, ended))
        elif kind == "session":
            stamp = start + timedelta(seconds=60 + n)
            period = {"start_date_time": (stamp - timedelta(seconds=60)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                      "dimensions": [{"type": "ENERGY", "volume": 0.2}]}  # fmt: skip
            body = orjson.dumps({"kwh": round(0.2 * (n // SESSIONS + 1), 1), "charging_periods": [period],
                                 "total_cost": {"excl_vat": 0.5, "incl_vat": 0.59},
                                 "last_updated": stamp.strftime("%Y-%m-%dT%H:%M:%SZ")})  # fmt: skip
            request = environ("PATCH", f"/ocpi/emsp/2.2.1/sessions/IN/BEN/{run}-{n % SESSIONS:05d}", body)
        elif kind == "authorize":
            body = b'{"location_id": "LOC00001", "evse_uids": ["LOC00001-E1"]}'
            request = environ("POST", f"/ocpi/emsp/2.2.1/tokens/RFID{n % 1000:06d}/authorize", body)
        else:  # a millisecond newer each time: never refused as older, never in the future
            stamp = (start + timedelta(milliseconds=n)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            status = ("AVAILABLE", "CHARGING")[n % 2]
            body = f'{{"status": "{status}", "last_updated": "{stamp}"}}'.encode()
            request = environ("PATCH", paths[n % len(paths)], body)
        seen: dict[str, str] = {}
        answer = b"".join(application(request, lambda status, headers, exc_info=None: seen.update(status=status)))
        if not seen["status"].startswith(("200", "201")) or b'"status_code":1000' not in answer:
            raise SystemExit(f"unexpected answer: {seen['status']} {answer[:300]!r}")

    return one


SESSIONS = 500


def session_body(session_id: str, i: int, start: datetime) -> bytes:
    """An ongoing session of the bench CPO, as its first PUT."""
    return orjson.dumps({
        "country_code": "IN", "party_id": "BEN", "id": session_id, "start_date_time": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "kwh": 0, "cdr_token": {"uid": f"RFID{i:06d}", "type": "RFID", "contract_id": f"IN-EMS-C{i:08d}",
                                "country_code": "IN", "party_id": "EMS"},
        "auth_method": "WHITELIST", "location_id": f"LOC{i:05d}", "evse_uid": f"LOC{i:05d}-E1", "connector_id": "1",
        "currency": "INR", "status": "ACTIVE", "last_updated": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
    })  # fmt: skip


def stamp_at(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def cdr_body(cdr_id: str, i: int, ended: datetime) -> bytes:
    """A final CDR of one hour and 10 kWh for token RFID{i} at LOC{i}, priced by the CPO."""
    started, stamp = ended - timedelta(hours=1), lambda d: d.strftime("%Y-%m-%dT%H:%M:%SZ")
    return orjson.dumps({
        "country_code": "IN", "party_id": "BEN", "id": cdr_id, "start_date_time": stamp(started),
        "end_date_time": stamp(ended), "session_id": f"S-{cdr_id}",
        "cdr_token": {"country_code": "IN", "party_id": "EMS", "uid": f"RFID{i:06d}", "type": "RFID",
                      "contract_id": f"IN-EMS-C{i:08d}"},
        "auth_method": "AUTH_REQUEST",
        "cdr_location": {"id": f"LOC{i:05d}", "address": "1 MG Road", "city": "Bengaluru", "country": "IND",
                         "coordinates": {"latitude": "12.971599", "longitude": "77.594566"},
                         "evse_uid": f"LOC{i:05d}-E1", "evse_id": f"IN*BEN*ELOC{i:05d}1", "connector_id": "1",
                         "connector_standard": "IEC_62196_T2_COMBO", "connector_format": "CABLE",
                         "connector_power_type": "DC"},
        "currency": "INR",
        "tariffs": [{"country_code": "IN", "party_id": "BEN", "id": "T1", "currency": "INR",
                     "elements": [{"price_components": [{"type": "ENERGY", "price": 18.5, "vat": 18.0, "step_size": 1}]}],
                     "last_updated": "2026-01-01T00:00:00Z"}],
        "charging_periods": [{"start_date_time": stamp(started), "dimensions": [{"type": "ENERGY", "volume": 10}],
                              "tariff_id": "T1"}],
        "total_cost": {"excl_vat": 185.0, "incl_vat": 218.3}, "total_energy": 10, "total_time": 1,
        "last_updated": stamp(ended + timedelta(minutes=5)),
    })  # fmt: skip


def backend_cpu() -> float:
    """CPU seconds the PostgreSQL backend of Django's connection has used (it runs on this machine)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--kind", choices=("patch", "authorize", "session", "cdr", "location", "both"), default="both")
    parser.add_argument("--fresh", action="store_true", help="recreate and seed the benchmark database")
    parser.add_argument(
        "--callgrind", action="store_true", help="switch callgrind's instrumentation on around the loop"
    )
    args = parser.parse_args()
    if args.callgrind and args.kind == "both":
        parser.error("--callgrind counts one kind of request at a time: give --kind patch or --kind authorize")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.setdefault("OCPI_RATE_LIMIT_PER_MINUTE", "0")
    setup(fresh=args.fresh)
    from django.conf import settings

    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "127.0.0.1"]
    from bench_ocpi_http import TOKEN, seed

    from emsp.models import Partner, hash_token

    # The database is shared with other benchmarks (bench_ingest.py's partner is ZZ*BEN too): seeded unless it holds
    # the CPO whose token these requests carry, else recreated first.
    if args.fresh or not Partner.objects.filter(incoming_token_hash=hash_token(TOKEN)).exists():
        if not args.fresh:
            from django.db import connections

            connections.close_all()
            setup(fresh=True)
        seed(1000, 1000)
    print(machine())
    for kind in ("patch", "authorize") if args.kind == "both" else (args.kind,):
        one = requester(kind)
        for n in range(50):  # warm: the connection, prepared statements, caches
            one(n)
        if args.callgrind:
            subprocess.run(["callgrind_control", "--instr=on", str(os.getpid())], check=True, capture_output=True)
        began, began_backend = time.process_time(), backend_cpu()
        for n in range(50, 50 + args.requests):
            one(n)
        spent, backend = time.process_time() - began, backend_cpu() - began_backend
        if args.callgrind:
            subprocess.run(["callgrind_control", "--instr=off", str(os.getpid())], check=True, capture_output=True)
        print(f"{kind}: {spent / args.requests * 1000:.3f} ms CPU a request ({args.requests} requests); PostgreSQL's "
              f"backend {backend / args.requests * 1000:.3f} ms")  # fmt: skip
    planned_each_time()


def planned_each_time() -> None:
    """The prepared statements PostgreSQL planned on every call (custom plans past the first five): each pays
    its planning again, as the catalogue statement did before 2026-12-04 (docs/benchmarks.md)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT custom_plans, generic_plans, left(regexp_replace(statement, '\\s+', ' ', 'g'), 110) "
                       "FROM pg_prepared_statements WHERE custom_plans > 5 ORDER BY custom_plans DESC")  # fmt: skip
        rows = cursor.fetchall()
    print(f"prepared statements planned on every call: {len(rows)}")
    for custom, generic, text in rows:
        print(f"  {custom} custom, {generic} generic: {text}")


if __name__ == "__main__":
    main()
