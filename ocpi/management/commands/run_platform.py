"""Run the whole platform on one machine: web server, Celery workers (one for the latency queue, one for the
bulk queue, or one for both with --single-worker) and beat, and two simulator CPOs that
are registered over OCPI (one in each handshake direction) and pulled. Ctrl-C stops everything.
It lives with OCPI because connecting CPOs is the part of it that needs a protocol."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from emsp import outbound
from emsp.models import Partner
from ocpi.credentials import RegistrationError, register_with_partner, versions_url
from ocpi.sync import sync_partner

SIMULATORS = [
    # party, name, tariff profile, cities, port offset, who starts the handshake
    ("CPA", "Volt Bharat (simulated CPO)", "a", "Bengaluru,Mumbai,Pune", 101, "we"),
    ("CPB", "ChargeGrid (simulated CPO)", "b", "Delhi,Chennai,Hyderabad", 102, "they"),
]


class Command(BaseCommand):
    help = "Start the web server, Celery workers and beat, and two simulator CPOs; register and sync them."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--no-simulators", action="store_true", help="Only our own processes.")
        parser.add_argument("--web-workers", type=int, default=2)
        parser.add_argument(
            "--single-worker",
            action="store_true",
            help="One Celery worker consuming both queues instead of one per queue (a small machine; a long pull "
            "then holds a slot Beckn callbacks could use).",
        )
        parser.add_argument(
            "--no-paysim", action="store_true", help="Don't start the sandbox payment provider (real keys are set)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        log_dir = settings.VAR_DIR / "log"
        log_dir.mkdir(parents=True, exist_ok=True)
        port = options["port"]
        base = f"http://127.0.0.1:{port}"
        env = {**os.environ, "PUBLIC_BASE_URL": os.environ.get("PUBLIC_BASE_URL", base)}
        # /metrics adds up the counters of the web and worker processes (emsp/metrics.py): one folder for all,
        # emptied at each start (a counter's files outlive its process; old runs must not count).
        metrics_dir = Path(env.setdefault("PROMETHEUS_MULTIPROC_DIR", str(settings.VAR_DIR / "metrics")))
        metrics_dir.mkdir(parents=True, exist_ok=True)
        for stale in metrics_dir.glob("*.db"):
            stale.unlink()
        if "PUBLIC_BASE_URL" not in os.environ:
            # This process registers with the simulators too: it must hand out the same URLs as the children.
            settings.PUBLIC_BASE_URL = base
            if "BECKN_SUBSCRIBER_URL" not in os.environ:
                settings.BECKN_SUBSCRIBER_URL = f"{base}/beckn"
        # Ctrl-C and SIGTERM stop everything (SIGINT too when a shell started us in the background).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            call_command("demo_setup", stdout=self.stdout)
            python = sys.executable
            bin_dir = Path(python).parent
            sqlite = settings.DATABASES["default"]["ENGINE"].endswith("sqlite3")
            if not options["no_paysim"]:
                env["PAYSIM_URL"] = self.start_paysim(port, base, env, log_dir)
            self.spawn(
                "web",
                [str(bin_dir / "gunicorn"), "emsp.wsgi", "-b", f"127.0.0.1:{port}", "-w", str(options["web_workers"]),
                 "--timeout", "60", "--access-logfile", "-"],
                env, log_dir,
            )  # fmt: skip
            # Without a broker server the queue is a folder (kombu filesystem transport): one process per worker.
            no_server = settings.CELERY_BROKER_URL.startswith("filesystem://")
            pool = ["--pool", "solo"] if no_server else ["--concurrency", "2"]
            # The production topology (docs/operations.md, "Queues and workers"): latency-critical work (Beckn,
            # commands, pushes) never waits behind a pull or an audit on the bulk worker.
            queues = [f"{settings.LATENCY_QUEUE},{settings.BULK_QUEUE}"] if options["single_worker"] else [
                settings.LATENCY_QUEUE, settings.BULK_QUEUE
            ]  # fmt: skip
            for queue in queues:
                name = "worker" if options["single_worker"] else f"worker-{queue}"
                command = [str(bin_dir / "celery"), "-A", "emsp", "worker", "-l", "info", "-Q", queue, *pool]
                self.spawn(name, [*command, "-n", f"{name}@%h"], env, log_dir)
            schedule = str(settings.VAR_DIR / "celerybeat-schedule")
            self.spawn(
                "beat", [str(bin_dir / "celery"), "-A", "emsp", "beat", "-l", "info", "-s", schedule], env, log_dir
            )
            # Ready: database, migrations, broker and a fresh beat heartbeat (emsp/probes.py).
            self.wait_for(f"{base}/readyz", "web server", ready=True)
            if not options["no_simulators"]:
                self.start_simulators(port, env, log_dir)
            self.stdout.write(self.style.SUCCESS("\nThe platform is running:"))
            self.stdout.write(f"  staff console   {base}/admin/   (login printed above)")
            self.stdout.write(f"  API docs        {base}/api/docs/")
            self.stdout.write(f"  metrics         {base}/metrics   (staff login, or Bearer METRICS_TOKEN)")
            self.stdout.write(f"  OCPI versions   {base}/ocpi/versions")
            self.stdout.write(f"  Beckn endpoint  {base}/beckn/{{action}}")
            if not options["no_paysim"]:
                self.stdout.write(f"  payments        {env['PAYSIM_URL']}/paysim/events   (sandbox provider)")
            self.stdout.write(f"  logs            {log_dir}/")
            database = f"SQLite {settings.DATABASES['default']['NAME']}" if sqlite else "PostgreSQL"
            self.stdout.write(f"  database        {database}")
            self.stdout.write("Press Ctrl-C to stop every process.")
            while all(proc.poll() is None for _, proc in self.children):
                time.sleep(0.5)
            dead = [name for name, proc in self.children if proc.poll() is not None]
            self.stderr.write(f"{', '.join(dead)} stopped; see {log_dir}/ — stopping the rest.")
        except KeyboardInterrupt:
            self.stdout.write("\nStopping…")
        finally:
            self.stop_all()

    def spawn(self, name: str, command: list[str], env: dict[str, str], log_dir: Path) -> subprocess.Popen[bytes]:
        log = (log_dir / f"{name}.log").open("ab")
        # Its own session: Ctrl-C reaches only this command, which then stops the children in order.
        proc = subprocess.Popen(
            command, cwd=settings.BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.children.append((name, proc))
        self.stdout.write(f"started {name} (pid {proc.pid}), log {log_dir / (name + '.log')}")
        return proc

    def start_paysim(self, port: int, base: str, env: dict[str, str], log_dir: Path) -> str:
        """The sandbox payment provider (python -m paysim): the providers' SDKs talk to it as to Stripe and
        Razorpay, and it signs its webhooks to us as they do. Its hosted pages are where a driver pays."""
        paysim_port = port + 100
        stripe = settings.PAYMENT_PROVIDERS["stripe"]["options"]
        razorpay = settings.PAYMENT_PROVIDERS["razorpay"]["options"]
        self.spawn(
            "paysim",
            [sys.executable, "-m", "paysim", "--port", str(paysim_port),
             "--stripe-webhook", f"{base}/payments/webhooks/stripe",
             "--razorpay-webhook", f"{base}/payments/webhooks/razorpay",
             "--stripe-secret", stripe["webhook_secret"],
             "--razorpay-webhook-secret", razorpay["webhook_secret"]],
            env, log_dir,
        )  # fmt: skip
        url = f"http://127.0.0.1:{paysim_port}"
        self.wait_for(f"{url}/paysim/events", "paysim")
        settings.PAYSIM_URL = url
        return url

    def wait_for(self, url: str, what: str, timeout: float = 60, ready: bool = False) -> None:
        """Until `url` answers (any status below 500; with `ready`, 200 only)."""
        deadline = time.monotonic() + timeout
        answer = ""
        while time.monotonic() < deadline:
            try:
                response = outbound.send("GET", url, timeout=5)
                if response.status == 200 or (not ready and response.status < 500):
                    return
                answer = response.content[:500].decode("utf-8", "replace")
            except outbound.OutboundError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"{what} did not come up at {url} {answer}".rstrip())

    def start_simulators(self, port: int, env: dict[str, str], log_dir: Path) -> None:
        for party, name, profile, cities, offset, initiator in SIMULATORS:
            sim_port = port + offset
            token_a = f"demo-token-a-{party.lower()}"
            self.spawn(
                f"cpo-{party.lower()}",
                [sys.executable, "-m", "cposim", "--port", str(sim_port), "--party-id", party, "--name", name,
                 "--tariff-profile", profile, "--cities", cities, "--token-a", token_a, "--locations", "24",
                 "--seed", str(offset), "--meter-interval", "3", "--plug-in-delay", "2"],
                env, log_dir,
            )  # fmt: skip
            sim_versions = f"http://127.0.0.1:{sim_port}/ocpi/versions"
            self.wait_for(f"http://127.0.0.1:{sim_port}/_sim/state", name)
            partner = Partner.objects.filter(country_code="IN", party_id=party).first()
            if partner is not None and partner.state == Partner.State.CONNECTED:
                # The simulators keep nothing between runs: each start is a new CPO to register with again.
                partner.state = Partner.State.UNREGISTERED
                partner.save(update_fields=["state"])
            if initiator == "we":
                try:
                    partner = register_with_partner(
                        versions_url=sim_versions, token_a=token_a, partner=partner, name=name, party=f"IN*{party}"
                    )
                except RegistrationError as exc:
                    self.stderr.write(f"{name}: registration failed: {exc}")
                    continue
                self.stdout.write(f"{name}: we registered with it (OCPI credentials, Token A from the CPO)")
            else:
                partner = partner or Partner.objects.create(name=name, country_code="IN", party_id=party)
                our_token_a = partner.issue_token_a()
                partner.save()
                answer = outbound.send(
                    "POST",
                    f"http://127.0.0.1:{sim_port}/_sim/register",
                    json={"versions_url": versions_url(), "token_a": our_token_a},
                    timeout=30,
                )
                partner.refresh_from_db()
                if partner.state != Partner.State.CONNECTED:
                    reason = answer.content[:300].decode("utf-8", "replace")
                    self.stderr.write(f"{name}: it could not register with us: {reason}")
                    continue
                self.stdout.write(f"{name}: it registered with us (OCPI credentials, Token A from us)")
            for run in sync_partner(partner, full=True):
                self.stdout.write(
                    f"  pulled {run.module:<9} {run.outcome:<6} stored={run.stored} rejected={run.rejected}"
                )

    def stop_all(self) -> None:
        for _, proc in reversed(self.children):
            if proc.poll() is None:
                proc.terminate()
        for _, proc in self.children:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.children = []
