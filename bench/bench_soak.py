"""Soak test: ten minutes of mixed traffic at a fixed rate through the deployed process set, watching for errors,
latency drift, memory growth and queue build-up.

Usage: .venv/bin/python bench/bench_soak.py [--rate 300] [--duration 600] [--warmup 30]

The processes are deploy/Procfile's, started with its commands: gunicorn with deploy/gunicorn.conf.py, a worker
on the `latency` queue, a worker on the `bulk` queue and the beat, on PostgreSQL and Redis, with Prometheus
multiprocess metrics and JSON logs at INFO as in production. Two settings differ from deploy/env.example:
DJANGO_ENV=development with DJANGO_DEBUG=false (production insists on an https base URL, and the BAP's callback
receiver here is plain http on 127.0.0.1), and GUNICORN_MAX_REQUESTS=0, so that no worker is recycled and a leak
shows as growth instead of being reset.

The traffic, open loop (latency from each request's scheduled time, so queueing can't hide), per second at 300:
  60 signed Beckn searches (5 km around a city; the on_search is awaited at the BAP's receiver),
  30 signed Beckn selects (an EVSE from the catalogue, 1-30 kWh; the on_select is awaited),
 120 OCPI EVSE status PATCHes from the CPO, 60 real-time authorizations, 30 CDR POSTs (each a new CDR).
An error is: no answer, an HTTP status other than 200/201, an OCPI status_code other than 1000, a Beckn NACK,
a callback that never arrives or carries an error. RSS of every process (each gunicorn and Celery child
included) is read from /proc every 10 s, and the Celery queues' depth from Redis every 5 s.
"""

from __future__ import annotations

import argparse
import base64
import os
import queue
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.client import HTTPConnection, HTTPException
from pathlib import Path
from typing import Any

import orjson
import redis
import requests
from bap_receiver import Receiver
from django_env import REPO, free_port, machine, setup
from load import percentile

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/8")
CPO_TOKEN = "soak-cpo-token"
OCPI_HEADERS = {
    "Authorization": "Token " + base64.b64encode(CPO_TOKEN.encode()).decode(),
    "Content-Type": "application/json",
}
CITIES = [(12.9716, 77.5946), (28.6139, 77.2090), (19.0760, 72.8777), (13.0827, 80.2707)]
# Requests per second of each kind at --rate 300; scaled for other rates.
MIX = {"search": 60, "select": 30, "evse_patch": 120, "authorize": 60, "cdr_post": 30}
TARIFF = {
    "country_code": "IN", "party_id": "SOK", "id": "T1", "currency": "INR",
    "elements": [{"price_components": [{"type": "ENERGY", "price": 18.5, "vat": 18.0, "step_size": 1}]}],
    "last_updated": "2026-01-01T00:00:00Z",
}  # fmt: skip


# --- the data -----------------------------------------------------------------------------------------------


def seed(locations: int, tokens: int) -> dict[str, Any]:
    """A CPO with `locations` locations of 2 EVSEs around four cities (spread σ 0.1°, about 11 km: at 4,000
    locations a 5 km search around a centre finds some 190 EVSEs, a dense city's), its tariff, and our tokens. Locations with an
    even number are patched by the CPO during the soak; the odd ones are what the BAP selects (so a select never
    meets a charger the PATCHes just made busy)."""
    from billing.services import tariff_put
    from emsp.models import Driver, Partner, Token, hash_token
    from emsp.services.catalogue import locations_store
    from tests.factories import ocpi_location

    rng = random.Random(5)
    partner = Partner.objects.create(
        name="Soak CPO", country_code="IN", party_id="SOK", state="CONNECTED", incoming_token_hash=hash_token(CPO_TOKEN)
    )
    tariff_put(partner, TARIFF)
    objs = []
    for i in range(locations):
        lat, lon = CITIES[i % len(CITIES)]
        objs.append(
            ocpi_location("IN", "SOK", f"L{i:05d}", evses=2, latitude=lat + rng.gauss(0, 0.1),
                          longitude=lon + rng.gauss(0, 0.1))
        )  # fmt: skip
    for start in range(0, len(objs), 500):
        locations_store(partner, objs[start : start + 500])
    driver = Driver.objects.create(name="Soak driver")
    Token.objects.bulk_create(
        [
            Token(driver=driver, uid=f"SOAK{i:06d}", uid_key=f"SOAK{i:06d}", contract_id=f"IN-EMS-S{i:08d}", issuer="x")
            for i in range(tokens)
        ]
    )
    from django.db import connection

    with connection.cursor() as cursor:  # fresh statistics, as autovacuum would have them on a live database
        cursor.execute("ANALYZE")
    return {
        "patch_paths": [f"/ocpi/emsp/2.2.1/locations/IN/SOK/L{i:05d}/L{i:05d}-E{e}" for i in range(0, locations, 2)
                        for e in (1, 2)],
        "select_items": [(f"L{i:05d}", f"L{i:05d}-E{e}") for i in range(1, locations, 2) for e in (1, 2)],
        "tokens": [f"SOAK{i:06d}" for i in range(tokens)],
    }  # fmt: skip


def cdr_body(cdr_id: str, token_uid: str, location_id: str, kwh: int, ended: datetime) -> bytes:
    """A spec-valid CDR for one of our tokens at one of the CPO's EVSEs, priced as the CPO's tariff says."""
    started = ended - timedelta(hours=1)
    excl = round(kwh * 18.5, 2)
    stamp = lambda d: d.strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
    return orjson.dumps(
        {
            "country_code": "IN", "party_id": "SOK", "id": cdr_id,
            "start_date_time": stamp(started), "end_date_time": stamp(ended), "session_id": f"S-{cdr_id}",
            "cdr_token": {"country_code": "IN", "party_id": "EMS", "uid": token_uid, "type": "RFID",
                          "contract_id": "IN-EMS-S" + token_uid[4:].rjust(8, "0")},
            "auth_method": "AUTH_REQUEST",
            "cdr_location": {
                "id": location_id, "address": "1 MG Road", "city": "Bengaluru", "country": "IND",
                "coordinates": {"latitude": "12.971599", "longitude": "77.594566"},
                "evse_uid": f"{location_id}-E1", "evse_id": f"IN*SOK*E{location_id}1", "connector_id": "1",
                "connector_standard": "IEC_62196_T2_COMBO", "connector_format": "CABLE", "connector_power_type": "DC",
            },
            "currency": "INR", "tariffs": [TARIFF],
            "charging_periods": [{"start_date_time": stamp(started), "dimensions": [{"type": "ENERGY", "volume": kwh}],
                                  "tariff_id": "T1"}],
            "total_cost": {"excl_vat": excl, "incl_vat": round(excl * 1.18, 2)},
            "total_energy_cost": {"excl_vat": excl, "incl_vat": round(excl * 1.18, 2)},
            "total_energy": kwh, "total_time": 1, "last_updated": stamp(ended + timedelta(minutes=5)),
        }
    )  # fmt: skip


# --- the processes ------------------------------------------------------------------------------------------


def process_env(port: int, tmp: Path) -> dict[str, str]:
    (tmp / "metrics").mkdir(exist_ok=True)
    base = f"http://127.0.0.1:{port}"
    return {
        **os.environ,
        "PATH": f"{REPO / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "DJANGO_ENV": "development",
        "DJANGO_DEBUG": "false",
        "DATABASE_URL": os.environ["DATABASE_URL"],
        "REDIS_URL": REDIS_URL,
        "PUBLIC_BASE_URL": base,
        "BECKN_SUBSCRIBER_URL": f"{base}/beckn",
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_MAX_REQUESTS": "0",
        "GUNICORN_ACCESS_LOG": "1",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp / "metrics"),
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "CELERY_BEAT_SCHEDULE": str(tmp / "celerybeat-schedule"),
        "ALLOW_PRIVATE_NETWORKS": "true",
        # Measure the platform, not the rate limiter (emsp/ratelimit.py): one BAP and one CPO send it all.
        "OCPI_RATE_LIMIT_PER_MINUTE": "0",
        "BECKN_RATE_LIMIT_PER_MINUTE": "0",
    }


def procfile_commands() -> dict[str, list[str]]:
    """deploy/Procfile's lines, split into argv (the soak runs exactly what an operator runs)."""
    commands = {}
    for line in (REPO / "deploy" / "Procfile").read_text().splitlines():
        if line and not line.startswith("#") and ":" in line:
            name, command = line.split(":", 1)
            commands[name.strip()] = command.split()
    return commands


def start_processes(port: int, tmp: Path) -> dict[str, subprocess.Popen[bytes]]:
    env = process_env(port, tmp)
    procs = {}
    for name, argv in procfile_commands().items():
        log = (tmp / f"{name}.log").open("ab")
        procs[name] = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return procs
        except requests.RequestException:
            pass
        time.sleep(0.5)
    stop_processes(procs)
    raise SystemExit(f"the platform did not become ready; logs in {tmp}")


def stop_processes(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    for proc in procs.values():
        proc.terminate()
    for proc in procs.values():
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()


@dataclass(frozen=True)
class ProcessInfo:
    parent: int
    command: str
    cpu_seconds: float  # user + system so far, its own and that of its children that ended (waited for)


def process_table() -> dict[int, ProcessInfo]:
    """Every process on the machine, from /proc/<pid>/stat (threads are counted in their process)."""
    tick = os.sysconf("SC_CLK_TCK")
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        command, rest = text.split(" (", 1)[1].rsplit(")", 1)
        fields = rest.split()
        # utime, stime, cutime, cstime: a PostgreSQL backend that ended (a connection closed) counts in the
        # postmaster's cutime; counted alone, PostgreSQL's share showed as 0.06 cores of a busy machine.
        used = sum(int(v) for v in fields[11:15])
        table[int(stat.parent.name)] = ProcessInfo(int(fields[1]), command, used / tick)
    return table


def process_tree_rss(procs: dict[str, subprocess.Popen[bytes]]) -> dict[str, int]:
    """RSS in kB of each process and each of its descendants, named `line` or `line/child pid`."""
    children: dict[int, list[int]] = defaultdict(list)
    for pid, info in process_table().items():
        children[info.parent].append(pid)

    def rss(pid: int) -> int | None:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            return None
        return None

    out = {}
    for name, proc in procs.items():
        todo = [(proc.pid, name)]
        while todo:
            pid, label = todo.pop()
            if (value := rss(pid)) is not None:
                out[label] = value
            todo += [(child, f"{name}/{child}") for child in children.get(pid, [])]
    return out


def cpu_seconds(procs: dict[str, subprocess.Popen[bytes]]) -> dict[str, float]:
    """CPU time (user + system, seconds) used so far by each Procfile line's process tree, by PostgreSQL, by Redis
    and by this load generator: where the machine's two cores went."""
    table = process_table()
    roots = {proc.pid: line for line, proc in procs.items()}
    roots[os.getpid()] = "load generator"
    out: dict[str, float] = defaultdict(float)
    for pid, info in table.items():
        at = pid
        while at in table and at not in roots and at > 1:
            at = table[at].parent
        if at in roots:
            out[roots[at]] += info.cpu_seconds
        elif info.command in ("postgres", "redis-server"):
            out[info.command] += info.cpu_seconds
    return dict(out)


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat (everything, the kernel included)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]
    return (sum(fields) - idle) / tick, sum(fields) / tick


def queue_depth(client: redis.Redis) -> dict[str, int]:
    """Messages waiting in each Celery queue (kombu keeps a Redis list per queue and priority)."""
    depth = {"latency": 0, "bulk": 0}
    for key in client.scan_iter(count=1000):
        name = key.decode(errors="replace")
        for q in depth:
            if (name == q or name.startswith(q + "\x06\x16")) and client.type(key) == b"list":
                depth[q] += client.llen(key)
    return depth


# --- the BAP and the CPO ------------------------------------------------------------------------------------


class Traffic:
    """Builds request number n of the mix, and checks its answer."""

    def __init__(self, data: dict[str, Any], bap_uri: str, rate: float) -> None:
        from beckn import registry
        from beckn.signing import generate_keypair, load_private_key

        self.data = data
        self.bap_uri = bap_uri
        private, public = generate_keypair()
        self.bap_id = "bap.soak.local"
        registry.trust(self.bap_id, "k1", public, subscriber_url=bap_uri)
        self.key = load_private_key(private)
        scale = rate / sum(MIX.values())
        slots = [kind for kind, per_second in MIX.items() for _ in range(max(1, round(per_second * scale)))]
        random.Random(9).shuffle(slots)
        self.slots = slots
        self.run = uuid.uuid4().hex[:8]

    def kind(self, n: int) -> str:
        return self.slots[n % len(self.slots)]

    def beckn(self, action: str, message: dict[str, Any]) -> tuple[str, str, bytes, dict[str, str], str]:
        from beckn.signing import sign_request

        message_id = str(uuid.uuid4())
        now = time.time()
        context = {
            "domain": "ev-charging:beckn", "action": action, "version": "1.1.0", "bap_id": self.bap_id,
            "bap_uri": self.bap_uri, "transaction_id": str(uuid.uuid4()), "message_id": message_id,
            "timestamp": datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "ttl": "PT30S",
            "location": {"country": {"code": "IND"}},
        }  # fmt: skip
        if action != "search":
            from django.conf import settings

            context.update({"bpp_id": settings.BECKN_SUBSCRIBER_ID, "bpp_uri": settings.BECKN_SUBSCRIBER_URL})
        body = orjson.dumps({"context": context, "message": message})
        header = sign_request(body, subscriber_id=self.bap_id, unique_key_id="k1", private_key=self.key,
                              created=int(now), expires=int(now) + 300)  # fmt: skip
        return (
            "POST",
            f"/beckn/{action}",
            body,
            {"Authorization": header, "Content-Type": "application/json"},
            message_id,
        )

    def make(self, n: int) -> tuple[str, str, str, bytes, dict[str, str], str | None]:
        from beckn.bap_client import search_message, select_message

        kind = self.kind(n)
        rng = random.Random(n)
        if kind == "search":
            lat, lon = CITIES[n % len(CITIES)]
            method, path, body, headers, mid = self.beckn("search", search_message(lat + rng.gauss(0, 0.01), lon))
            return kind, method, path, body, headers, mid
        if kind == "select":
            location_id, evse_uid = rng.choice(self.data["select_items"])
            # The catalogue's provider is the CPO's party and its items are connectors (beckn/catalogue.py).
            message = select_message("IN*SOK", f"{location_id}/{evse_uid}/1", rng.randint(1, 30))
            method, path, body, headers, mid = self.beckn("select", message)
            return kind, method, path, body, headers, mid
        if kind == "evse_patch":
            stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            status = ("AVAILABLE", "CHARGING", "AVAILABLE", "BLOCKED")[(n // 7) % 4]
            body = orjson.dumps({"status": status, "last_updated": stamp})
            return kind, "PATCH", self.data["patch_paths"][n % len(self.data["patch_paths"])], body, OCPI_HEADERS, None
        if kind == "authorize":
            uid = self.data["tokens"][n % len(self.data["tokens"])]
            body = b'{"location_id": "L00001", "evse_uids": ["L00001-E1"]}'
            return kind, "POST", f"/ocpi/emsp/2.2.1/tokens/{uid}/authorize", body, OCPI_HEADERS, None
        cdr_id = f"SOAK-{self.run}-{n}"
        location_id, _ = rng.choice(self.data["select_items"])
        body = cdr_body(cdr_id, rng.choice(self.data["tokens"]), location_id, rng.randint(5, 60),
                        datetime.now(UTC) - timedelta(minutes=10))  # fmt: skip
        return kind, "POST", "/ocpi/emsp/2.2.1/cdrs", body, OCPI_HEADERS, None

    @staticmethod
    def answer_ok(kind: str, status: int, body: bytes) -> bool:
        if status not in (200, 201):
            return False
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return False
        if kind in ("search", "select"):
            return doc.get("message", {}).get("ack", {}).get("status") == "ACK"
        if kind == "authorize":
            return doc.get("status_code") == 1000 and doc.get("data", {}).get("allowed") == "ALLOWED"
        return doc.get("status_code") == 1000


# --- the load -----------------------------------------------------------------------------------------------


class Soak:
    def __init__(self, base: str, traffic: Traffic, receiver: Receiver, workers: int = 24) -> None:
        self.base = base
        self.traffic = traffic
        self.receiver = receiver
        self.workers = workers
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, list[str]] = defaultdict(list)
        self.sent: dict[str, tuple[float, str]] = {}  # message_id -> (scheduled, kind)
        self.lock = threading.Lock()

    def run(self, rate: float, duration: float, record: bool = True) -> None:
        jobs: queue.Queue[tuple[int, float] | None] = queue.Queue()
        host, port = self.base.removeprefix("http://").split(":")

        def worker() -> None:
            conn = HTTPConnection(host, int(port), timeout=30)
            while (job := jobs.get()) is not None:
                n, scheduled = job
                kind, method, path, body, headers, message_id = self.traffic.make(n)
                if message_id and record:
                    with self.lock:
                        self.sent[message_id] = (scheduled, kind)
                try:
                    conn.request(method, path, body=body, headers=headers)
                    response = conn.getresponse()
                    answer = response.read()
                    status = response.status
                except (OSError, HTTPException) as exc:
                    conn.close()
                    conn = HTTPConnection(host, int(port), timeout=30)
                    if record:
                        with self.lock:
                            self.errors[kind].append(f"{exc.__class__.__name__}: {exc}")
                    continue
                elapsed = (time.perf_counter() - scheduled) * 1000
                if not record:
                    continue
                ok = Traffic.answer_ok(kind, status, answer)
                with self.lock:
                    self.latency[kind].append(elapsed)
                    if not ok:
                        self.errors[kind].append(f"{status} {answer[:300]!r}")
            conn.close()

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(self.workers)]
        for t in threads:
            t.start()
        started = time.perf_counter()
        offset = int(time.time() * 1000)  # request numbers unique across runs (PATCH times and CDR ids)
        for i in range(int(rate * duration)):
            scheduled = started + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            jobs.put((offset + i, scheduled))
        for _ in threads:
            jobs.put(None)
        for t in threads:
            t.join(timeout=60)

    def callbacks(self, grace: float = 60) -> None:
        """Wait for every awaited on_search/on_select, then file their latencies and any missing or in error."""
        deadline = time.perf_counter() + grace
        while time.perf_counter() < deadline and any(m not in self.receiver.arrived for m in self.sent):
            time.sleep(0.5)
        for message_id, (scheduled, kind) in self.sent.items():
            at = self.receiver.arrived.get(message_id)
            if at is None:
                self.errors[f"on_{kind}"].append(f"never arrived: {message_id}")
                continue
            action, has_error = self.receiver.answered[message_id]
            self.latency[f"on_{kind}"].append((at - scheduled) * 1000)
            if has_error or action != f"on_{kind}":
                self.errors[f"on_{kind}"].append(f"{action} with an error: {message_id}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=300)
    parser.add_argument("--duration", type=float, default=600)
    parser.add_argument("--warmup", type=float, default=30)
    parser.add_argument("--locations", type=int, default=4000)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    os.environ["REDIS_URL"] = REDIS_URL
    redis_client = redis.Redis.from_url(REDIS_URL)
    redis_client.flushdb()
    setup(fresh=True, name="emsp_soak")
    data = seed(args.locations, 2000)
    receiver = Receiver()
    traffic = Traffic(data, receiver.url, args.rate)
    tmp = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    port = free_port()
    procs = start_processes(port, tmp)
    base = f"http://127.0.0.1:{port}"
    print(machine())
    print(f"processes: {', '.join(f'{n} (pid {p.pid})' for n, p in procs.items())}; logs in {tmp}")
    print(f"catalogue {args.locations:,} locations ({args.locations * 2:,} EVSEs), 2,000 tokens; mix per second at "
          f"{args.rate:g} req/s: {dict(sorted((k, round(v * args.rate / 300)) for k, v in MIX.items()))}")  # fmt: skip
    soak = Soak(base, traffic, receiver)
    rss_booted = process_tree_rss(procs)
    try:
        soak.run(args.rate, args.warmup, record=False)
        time.sleep(3)
        rss_start = process_tree_rss(procs)
        samples: list[tuple[float, dict[str, int], dict[str, int]]] = []
        stop = threading.Event()

        def sample() -> None:
            t0 = time.perf_counter()
            last_rss = rss_start
            i = 0
            while not stop.wait(5):
                i += 1
                if i % 2 == 0:
                    last_rss = process_tree_rss(procs)
                samples.append((time.perf_counter() - t0, last_rss, queue_depth(redis_client)))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        began = time.perf_counter()
        cpu_start, busy_start = cpu_seconds(procs), machine_busy()
        soak.run(args.rate, args.duration)
        ran = time.perf_counter() - began
        cpu_used = {k: v - cpu_start.get(k, 0.0) for k, v in cpu_seconds(procs).items()}
        busy_end = machine_busy()
        busy = (busy_end[0] - busy_start[0]) / (busy_end[1] - busy_start[1])
        stop.set()
        soak.callbacks()
        rss_end = process_tree_rss(procs)
        report(soak, ran, args, rss_booted, rss_start, rss_end, samples, tmp)
        print(f"\n== CPU used during the soak, in cores ({os.cpu_count()} here): "
              + ", ".join(f"{k} {v / ran:.2f}" for k, v in sorted(cpu_used.items(), key=lambda kv: -kv[1]))
              + f"; all of these {sum(cpu_used.values()) / ran:.2f}; the machine was {busy:.0%} busy")  # fmt: skip
    finally:
        stop_processes(procs)
        receiver.server.shutdown()
        redis_client.flushdb()


def report(
    soak: Soak,
    ran: float,
    args: argparse.Namespace,
    rss_booted: dict[str, int],
    rss_start: dict[str, int],
    rss_end: dict[str, int],
    samples: list[tuple[float, dict[str, int], dict[str, int]]],
    tmp: Path,
) -> None:
    total = sum(len(v) for k, v in soak.latency.items() if not k.startswith("on_"))
    errors = sum(len(v) for v in soak.errors.values())
    print(f"\n== {total:,} requests answered in {ran:.0f} s ({total / ran:.1f} req/s offered {args.rate:g}); "
          f"errors: {errors}")  # fmt: skip
    print(f"{'endpoint':<12} {'count':>7} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8} {'errors':>7}")
    for kind in [*MIX, "on_search", "on_select"]:
        values = soak.latency.get(kind, [])
        print(f"{kind:<12} {len(values):>7} {percentile(values, 50):>8.1f} {percentile(values, 90):>8.1f} "
              f"{percentile(values, 99):>8.1f} {max(values, default=float('nan')):>8.1f} {len(soak.errors.get(kind, [])):>7}")  # fmt: skip
    for kind, messages in soak.errors.items():
        for message in messages[:5]:
            print(f"  error {kind}: {message}")
    print("\n== latency per minute (p99 ms of the synchronous answers, all kinds)")
    # Drift over the run: the answers' latencies are in completion order, close enough to time order.
    answers = [v for k, vs in soak.latency.items() if not k.startswith("on_") for v in vs]
    per_minute = max(1, round(len(answers) / max(1, ran / 60)))
    print(
        "  "
        + "  ".join(f"{percentile(answers[i : i + per_minute], 99):.1f}" for i in range(0, len(answers), per_minute))
    )
    print("\n== RSS (MB): booted / after warm-up / end (growth over the soak)")
    groups: dict[str, list[str]] = defaultdict(list)
    for label in rss_end:
        groups[label.split("/")[0]].append(label)
    for label in sorted(rss_end):
        end = rss_end[label] / 1024
        start = rss_start.get(label)
        booted = rss_booted.get(label)
        print(f"  {label:<24} {booted / 1024 if booted else float('nan'):7.1f} "
              f"{start / 1024 if start else float('nan'):7.1f} {end:7.1f}"
              + (f"  {end - start / 1024:+.1f}" if start else "  (new during the soak)"))  # fmt: skip
    total_start = sum(rss_start.values()) / 1024
    total_end = sum(rss_end.values()) / 1024
    print(f"  {'all':<24} {sum(rss_booted.values()) / 1024:7.1f} {total_start:7.1f} {total_end:7.1f}  "
          f"{total_end - total_start:+.1f}")  # fmt: skip
    print("  all, every minute: " + " ".join(f"{sum(r.values()) / 1024:.0f}" for t, r, _ in samples[11::12]))
    depths = [d for _, _, d in samples]
    for q in ("latency", "bulk"):
        values = [d[q] for d in depths]
        print(f"\n== queue {q}: depth sampled every 5 s: max {max(values, default=0)}, mean "
              f"{statistics.fmean(values or [0]):.1f}, at the end {values[-1] if values else 0}")  # fmt: skip
        print("  every minute: " + " ".join(str(v) for v in values[11::12]))
    tracebacks = 0
    for log in tmp.glob("*.log"):
        tracebacks += log.read_text(errors="replace").count("Traceback")
    print(f"\n== tracebacks in the processes' logs: {tracebacks}")


if __name__ == "__main__":
    main()
