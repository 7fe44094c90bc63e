"""deploy/: the Dockerfile, compose.yaml and the systemd units run exactly deploy/Procfile's commands (which
tests/e2e/test_deploy_procfile.py starts with honcho), the release step is one command everywhere, env.example
names every variable production refuses to start without, and the gunicorn settings read the environment."""

from __future__ import annotations

import json
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from emsp import safe_defaults

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
# The release step (migrations), run before the processes of new code: compose's `migrate` service, the systemd
# unit emsp-migrate.service and the honcho test run this; the Procfile names it in its header.
RELEASE = "python manage.py migrate --noinput"
PROCESSES = ["web", "worker_latency", "worker_bulk", "beat"]
SYSTEMD_UNITS = {
    "web": "emsp-web.service",
    "worker_latency": "emsp-worker-latency.service",
    "worker_bulk": "emsp-worker-bulk.service",
    "beat": "emsp-beat.service",
}
VENV_BIN = "/opt/emsp/venv/bin/"  # where the systemd units expect the virtualenv


def procfile() -> dict[str, str]:
    """deploy/Procfile's processes, as honcho reads them (`name: command`; other lines are comments)."""
    lines = (DEPLOY / "Procfile").read_text().splitlines()
    return dict(m.groups() for line in lines if (m := re.match(r"^([A-Za-z0-9_-]+):\s*(.+)$", line)))


def env_example() -> dict[str, str]:
    lines = (DEPLOY / "env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def systemd_unit(name: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in (DEPLOY / "systemd" / name).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def test_it_runs_a_web_process_each_worker_on_its_queue_and_one_beat() -> None:
    commands = procfile()
    assert list(commands) == PROCESSES
    assert commands["web"].startswith("gunicorn emsp.wsgi -c deploy/gunicorn.conf.py")
    assert " -Q latency " in commands["worker_latency"] + " "
    assert " -Q bulk " in commands["worker_bulk"] + " "
    assert commands["beat"].startswith("celery -A emsp beat")
    assert RELEASE in (DEPLOY / "Procfile").read_text()


def test_it_gives_compose_the_procfiles_commands() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    for name, command in procfile().items():
        assert services[name]["command"] == command, name
    assert services["migrate"]["command"] == RELEASE
    assert services["migrate"]["restart"] == "no"
    for name in PROCESSES:
        assert services[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
        assert services[name]["build"]["dockerfile"] == "deploy/Dockerfile"
    assert services["web"]["deploy"]["replicas"] >= 2
    assert services["beat"]["deploy"]["replicas"] == 1
    assert {"postgres", "redis", "rabbitmq"} <= set(services)
    assert services["rabbitmq"]["profiles"] == ["rabbitmq"]


def test_it_builds_an_image_that_runs_the_web_command_as_a_non_root_user() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert dockerfile.startswith("#") and "\nFROM python:3.11-slim\n" in dockerfile
    (cmd,) = re.findall(r"^CMD (\[.*\])$", dockerfile, re.MULTILINE)
    assert " ".join(json.loads(cmd)) == procfile()["web"]
    users = re.findall(r"^USER (\S+)$", dockerfile, re.MULTILINE)
    assert users == ["emsp"]
    # Every instruction after USER runs unprivileged: CMD and EXPOSE only.
    after_user = dockerfile.split("\nUSER emsp\n", 1)[1]
    assert re.findall(r"^([A-Z]+) ", after_user, re.MULTILINE) == ["EXPOSE", "CMD"]
    assert "manage.py collectstatic --noinput" in dockerfile


def test_it_gives_the_systemd_units_the_procfiles_commands_hardened() -> None:
    for name, command in procfile().items():
        unit = systemd_unit(SYSTEMD_UNITS[name])
        (exec_start,) = unit["ExecStart"]
        assert exec_start.startswith(VENV_BIN)
        # `%%` is systemd's escape of `%` (celery's own %h).
        assert exec_start.removeprefix(VENV_BIN).replace("%%", "%") == command, name
        assert unit["WantedBy"] == ["emsp.target"] and unit["PartOf"] == ["emsp.target"]
    release = systemd_unit("emsp-migrate.service")
    assert release["ExecStart"] == [VENV_BIN + RELEASE] and release["Type"] == ["oneshot"]
    for name in [*SYSTEMD_UNITS.values(), "emsp-migrate.service"]:
        unit = systemd_unit(name)
        assert unit["User"] == ["emsp"], name
        assert unit["EnvironmentFile"] == ["/etc/emsp/emsp.env"], name
        for hardening in ("NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes"):
            key, value = hardening.split("=")
            assert unit[key] == [value], (name, hardening)
        assert unit["CapabilityBoundingSet"] == [""], name


def test_it_lists_every_variable_production_refuses_to_start_without_in_env_example() -> None:
    everything_wrong = safe_defaults.production_problems(
        debug=False,
        secret_key="",
        public_base_url="http://x",
        broker_url="filesystem://",
        allowed_hosts=[],
        field_encryption_keys=[],
    )
    named = set(re.findall(r"\b[A-Z][A-Z_]{3,}[A-Z]\b", "\n".join(everything_wrong)))
    required = {"DJANGO_SECRET_KEY", "FIELD_ENCRYPTION_KEYS", "PUBLIC_BASE_URL", "REDIS_URL", "DJANGO_ALLOWED_HOSTS"}
    assert required <= named
    example = env_example()
    assert required | {"DATABASE_URL"} <= set(example), required - set(example)
    # The alternatives a message names (CELERY_BROKER_URL for RabbitMQ) are there too, commented out.
    commented = set(re.findall(r"^# ([A-Z][A-Z0-9_]+)=", (DEPLOY / "env.example").read_text(), re.MULTILINE))
    assert named <= set(example) | commented, named - set(example) - commented
    assert example["DJANGO_ENV"] == "production"
    assert example["PUBLIC_BASE_URL"].startswith("https://")


def test_it_starts_production_settings_from_env_example_once_the_secrets_are_filled_in() -> None:
    from cryptography.fernet import Fernet

    example = env_example()
    secrets = {"DJANGO_SECRET_KEY": "s" * 20 + "0123456789abcdefghijklmnopqrstuvwxyz!"}
    secrets["FIELD_ENCRYPTION_KEYS"] = Fernet.generate_key().decode()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "CELERY_"))}
    env["DJANGO_SETTINGS_MODULE"] = "emsp.settings"

    def load(values: dict[str, str]) -> subprocess.CompletedProcess[str]:
        code = "import django; django.setup(); from django.conf import settings; print(settings.DJANGO_ENV)"
        return subprocess.run(
            [sys.executable, "-c", code], cwd=REPO, env={**env, **values}, capture_output=True, text=True, timeout=60
        )

    as_shipped = load(example)
    assert as_shipped.returncode != 0
    assert "DJANGO_SECRET_KEY" in as_shipped.stderr and "FIELD_ENCRYPTION_KEYS" in as_shipped.stderr
    filled = load({**example, **secrets})
    assert filled.returncode == 0, filled.stderr
    assert filled.stdout.strip() == "production"


def test_it_reads_gunicorns_settings_from_the_environment(monkeypatch: Any, tmp_path: Path) -> None:
    monkeypatch.setenv("GUNICORN_BIND", "127.0.0.1:8123")
    monkeypatch.setenv("WEB_CONCURRENCY", "3")
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "10.0.0.1")
    monkeypatch.delenv("GUNICORN_CONTROL_SOCKET", raising=False)
    conf = runpy.run_path(str(DEPLOY / "gunicorn.conf.py"))
    assert (conf["bind"], conf["workers"], conf["forwarded_allow_ips"]) == ("127.0.0.1:8123", 3, "10.0.0.1")
    assert conf["control_socket_disable"] is True
    assert "%({x-request-id}o)s" in conf["access_log_format"]
    monkeypatch.delenv("GUNICORN_BIND")
    monkeypatch.setenv("PORT", "5100")
    assert runpy.run_path(str(DEPLOY / "gunicorn.conf.py"))["bind"] == "0.0.0.0:5100"

    class Worker:
        pid = 999_999_999

    # The multiprocess clean-up hook runs whether or not prometheus_client is installed.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    conf["child_exit"](None, Worker())
