"""The whole platform as real processes on 127.0.0.1 for end-to-end tests: gunicorn web process(es), Celery
workers (one per queue, latency and bulk) and beat on Redis or RabbitMQ (E2E_BROKER), on the test PostgreSQL
database, and two simulator CPOs registered over OCPI (one in each handshake direction). Every process is
stopped when the test ends."""

from __future__ import annotations

import fcntl
import hashlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import requests
from django.conf import settings

from tests.cposim.conftest import SimProcess
from tests.redis_db import redis_database_shifted

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
E2E_REDIS_DB_OFFSET = 8  # a Redis database of its own (REDIS_URL's + 8), flushed before and after
QUEUES = ("latency", "bulk")  # settings.LATENCY_QUEUE, settings.BULK_QUEUE
# The broker of the platform's processes: "redis" (REDIS_URL's database + 8) or "rabbitmq" (E2E_RABBITMQ_URL,
# whose latency and bulk queues are purged before and after: the test processes on a machine take turns at it,
# rabbitmq_turn).
E2E_BROKER = os.environ.get("E2E_BROKER", "redis")
E2E_RABBITMQ_URL = os.environ.get("E2E_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def database_url() -> str:
    db = settings.DATABASES["default"]
    host, port = db.get("HOST") or "127.0.0.1", db.get("PORT") or 5432
    return f"postgres://{db.get('USER') or 'postgres'}@{host}:{port}/{db['NAME']}"


def redis_url() -> str:
    """REDIS_URL's database + 8 (of Redis's 16): two runs given different databases (CI beside a developer's
    run) never share a queue, whose workers would take each other's tasks, nor flush each other's."""
    return redis_database_shifted(settings.REDIS_URL, E2E_REDIS_DB_OFFSET)


def rabbitmq_unreachable(url: str = E2E_RABBITMQ_URL) -> str | None:
    """Why RabbitMQ can't be the broker here, or None."""
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
    except Exception as exc:  # any failure means the same thing: not here
        return f"RabbitMQ is not reachable at {url.rpartition('@')[2]} ({exc.__class__.__name__}); set E2E_RABBITMQ_URL"
    return None


def rabbitmq_turn(url: str = E2E_RABBITMQ_URL) -> IO[str]:
    """This process's turn on RabbitMQ, held until the returned file is closed. Its queues are shared by every
    test process on the machine (one vhost, purged at each start): pytest-xdist's workers, and a run beside
    this one, take turns at it, as Redis gives each its own database."""
    name = hashlib.sha256(url.encode()).hexdigest()[:12]
    handle = (Path(tempfile.gettempdir()) / f"emsp-e2e-rabbitmq-{name}.lock").open("w")
    fcntl.flock(handle, fcntl.LOCK_EX)
    return handle


def purge_rabbitmq(url: str = E2E_RABBITMQ_URL) -> None:
    from kombu import Connection

    with Connection(url, connect_timeout=5) as conn:
        channel = conn.default_channel
        for queue in QUEUES:
            try:
                channel.queue_purge(queue)
            except Exception:  # not declared yet: the failed call closed the channel
                channel = conn.channel()


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Platform:
    tmp: Path
    web_processes: int = 1
    workers: int = 1
    extra_env: dict[str, str] = field(default_factory=dict)  # settings for this test's processes
    broker: str = E2E_BROKER  # "redis" or "rabbitmq"
    procs: list[Proc] = field(default_factory=list)
    sims: dict[str, SimProcess] = field(default_factory=dict)
    ports: list[int] = field(default_factory=list)
    paysim_url: str = ""

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.ports[0]}"

    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.ports]

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "DATABASE_URL": database_url(),
            "REDIS_URL": redis_url(),
            "CELERY_BROKER_URL": E2E_RABBITMQ_URL if self.broker == "rabbitmq" else "",  # "": REDIS_URL
            "PUBLIC_BASE_URL": self.base,
            "BECKN_SUBSCRIBER_URL": f"{self.base}/beckn",
            "CELERY_VISIBILITY_TIMEOUT": "10",
            "CELERY_BULK_VISIBILITY_TIMEOUT": "30",
            "CELERY_UNACKED_RESTORE_INTERVAL": "2",
            "CELERY_UNACKED_RESTORE_THROTTLE": "1",
            "WORK_LEASE_SECONDS": "10",
            "OUTBOX_SENDING_LEASE_SECONDS": "10",
            "ALLOW_PRIVATE_NETWORKS": "true",
            "DJANGO_DEBUG": "false",
            "LOG_LEVEL": "INFO",
            "DB_CONN_MAX_AGE": "0",
            "PAYSIM_URL": self.paysim_url,
            **self.extra_env,
        }

    def _spawn(self, name: str, command: list[str]) -> Proc:
        log = self.tmp / f"{name}.log"
        handle = log.open("ab")
        popen = subprocess.Popen(
            command, cwd=REPO, env=self.env(), stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    # -- our processes ----------------------------------------------------------------------------

    def purge_broker(self) -> None:
        subprocess.run(["redis-cli", "-u", redis_url(), "flushdb"], capture_output=True, check=False)
        if self.broker == "rabbitmq":
            purge_rabbitmq()

    def start(self) -> Platform:
        self.purge_broker()
        self.ports = [free_port() for _ in range(self.web_processes)]
        self.start_paysim()
        for i, port in enumerate(self.ports):
            self._spawn(
                f"web{i}", [str(BIN / "gunicorn"), "emsp.wsgi", "-b", f"127.0.0.1:{port}", "-w", "2", "--timeout", "60"]
            )
        for i in range(self.workers):
            for queue in QUEUES:
                self.start_worker(i, queue)
        self.start_beat()
        for url in self.urls():
            wait_http(f"{url}/readyz", "web server", self, ready=True)
        return self

    def start_paysim(self) -> Proc:
        """The sandbox payment provider, its webhooks signed to our first web process (the providers' SDKs in
        our processes talk to it over HTTP, as to Stripe and Razorpay)."""
        port = free_port()
        self.paysim_url = f"http://127.0.0.1:{port}"
        stripe = settings.PAYMENT_PROVIDERS["stripe"]["options"]
        razorpay = settings.PAYMENT_PROVIDERS["razorpay"]["options"]
        proc = self._spawn(
            "paysim",
            [sys.executable, "-m", "paysim", "--port", str(port),
             "--stripe-webhook", f"{self.base}/payments/webhooks/stripe",
             "--razorpay-webhook", f"{self.base}/payments/webhooks/razorpay",
             "--stripe-secret", stripe["webhook_secret"],
             "--razorpay-webhook-secret", razorpay["webhook_secret"],
             "--webhook-backoff", "0.5"],
        )  # fmt: skip
        wait_http(f"{self.paysim_url}/paysim/events", "paysim", self)
        return proc

    def start_beat(self) -> Proc:
        return self._spawn(
            f"beat-{len(self.procs)}",
            [str(BIN / "celery"), "-A", "emsp", "beat", "-l", "info", "-s", str(self.tmp / "celerybeat-schedule")],
        )

    def start_worker(self, index: int = 0, queues: str = ",".join(QUEUES)) -> Proc:
        """A worker consuming `queues` (comma-separated; both by default, as a restart after a kill brings up)."""
        proc = self._spawn(
            f"worker{index}-{queues.replace(',', '+')}-{len(self.procs)}",
            [
                str(BIN / "celery"),
                "-A",
                "emsp",
                "worker",
                "-l",
                "info",
                "-Q",
                queues,
                "--concurrency",
                "2",
                "-n",
                f"w{index}-{time.time_ns()}@%h",
            ],
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if " ready." in proc.log.read_text(errors="replace"):
                return proc
            time.sleep(0.2)
        raise AssertionError(f"worker did not start:\n{proc.log_tail()}")

    def kill(self, proc: Proc) -> None:
        """SIGKILL a process group: no clean shutdown (what a crashed machine does)."""
        os.killpg(proc.popen.pid, signal.SIGKILL)
        proc.popen.wait(timeout=10)

    def workers_running(self) -> list[Proc]:
        return [p for p in self.procs if p.name.startswith("worker") and p.popen.poll() is None]

    # -- the CPOs -----------------------------------------------------------------------------------

    def start_cpos(self, *extra_a: str, extra_b: tuple[str, ...] = ()) -> Platform:
        """CPO A (IN*CPA, Bengaluru): we register with it. CPO B (IN*CPB, Delhi): it registers with us."""
        from emsp.models import Partner
        from ocpi.credentials import register_with_partner
        from ocpi.sync import sync_partner

        common = ("--command-delay", "0.5", "--plug-in-delay", "1", "--meter-interval", "1")
        a_args = ["--party-id", "CPA", "--name", "CPO A", "--cities", "Bengaluru", "--locations", "8"]
        a_args += ["--token-a", "token-a-cpa", "--tariff-profile", "a", *common, *extra_a]
        a = SimProcess(a_args, self.tmp / "cpo-a.log")
        self.sims["A"] = a
        partner_a = register_with_partner(versions_url=a.versions_url, token_a="token-a-cpa")
        b = SimProcess(["--party-id", "CPB", "--name", "CPO B", "--cities", "Bengaluru", "--locations", "6",
                        "--tariff-profile", "b", "--seed", "2", *common, *extra_b], self.tmp / "cpo-b.log")  # fmt: skip
        self.sims["B"] = b
        partner_b = Partner.objects.create(name="CPO B", country_code="IN", party_id="CPB")
        token_a = partner_b.issue_token_a()
        partner_b.save()
        b.ctl("register", {"versions_url": f"{self.base}/ocpi/versions", "token_a": token_a})
        partner_b.refresh_from_db()
        assert partner_b.state == Partner.State.CONNECTED, b.log_tail()
        for partner in (partner_a, partner_b):
            for run in sync_partner(partner, full=True):
                assert run.outcome == "OK", run.error
        return self

    def stop(self) -> None:
        for sim in self.sims.values():
            sim.stop()
        for proc in reversed(self.procs):
            if proc.popen.poll() is None:
                try:
                    os.killpg(proc.popen.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        for proc in self.procs:
            try:
                proc.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.popen.pid, signal.SIGKILL)
                proc.popen.wait(timeout=5)
        self.purge_broker()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log_tail(15)}" for p in self.procs)


def wait_http(url: str, what: str, platform: Platform | None = None, timeout: float = 40, ready: bool = False) -> None:
    """Until `url` answers below 500 (with `ready`: 200, as /readyz does once every check passes)."""
    deadline = time.monotonic() + timeout
    answer = ""
    while time.monotonic() < deadline:
        try:
            response = requests.get(url, timeout=5)
            if response.status_code == 200 or (not ready and response.status_code < 500):
                return
            answer = response.text[:500]
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{what} did not come up at {url} {answer}\n{platform.logs() if platform else ''}")


def until(predicate: Any, timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout} s")
