"""gunicorn settings for the web processes: `gunicorn emsp.wsgi -c deploy/gunicorn.conf.py` (deploy/Procfile,
the systemd unit and the container run exactly that). Everything an operator tunes comes from the environment;
docs/operations.md, *Deployment artefacts*, lists the variables.

The web processes hold no state (PostgreSQL and the broker do): run as many as the load needs, on as many hosts,
behind a TLS-terminating proxy or load balancer that sets X-Forwarded-Proto."""

from __future__ import annotations

import multiprocessing
import os
from typing import Any


def _int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


# Where to listen. Honcho and most platforms hand each process a PORT; GUNICORN_BIND overrides (a unix socket
# behind nginx: "unix:/run/emsp/web.sock").
bind = os.environ.get("GUNICORN_BIND") or f"0.0.0.0:{_int('PORT', 8000)}"

# Sync workers: each serves one request at a time. Requests are short (outbound calls to partners run in Celery
# workers, not here), so (2 × CPUs) + 1 keeps the CPUs busy; WEB_CONCURRENCY (the usual name) overrides.
workers = _int("WEB_CONCURRENCY", 2 * multiprocessing.cpu_count() + 1)
threads = _int("GUNICORN_THREADS", 1)  # > 1 switches to the gthread worker

# A request still running after this long is killed (its worker restarted) and the client gets a 502 from the
# proxy; the slowest legitimate request (an OCPI page of 100 locations, a settlement export) takes a few seconds.
timeout = _int("GUNICORN_TIMEOUT", 60)
# On SIGTERM (a deploy, `systemctl stop`, `docker stop`) workers finish the requests they have for this long.
graceful_timeout = _int("GUNICORN_GRACEFUL_TIMEOUT", 30)
# Only the gthread worker keeps connections alive; set it above the load balancer's idle timeout there.
keepalive = _int("GUNICORN_KEEPALIVE", 5)

# Recycle each worker after about this many requests (jittered so they don't all restart together): a leak in
# a dependency then costs a restart, not an outage. 0 turns it off.
max_requests = _int("GUNICORN_MAX_REQUESTS", 10000)
max_requests_jitter = _int("GUNICORN_MAX_REQUESTS_JITTER", max_requests // 10)

# Which peers may set X-Forwarded-Proto/-For (the proxy's addresses; "*" only where nothing else can reach the
# port, e.g. inside a container network). Django trusts X-Forwarded-Proto for HTTPS (SECURE_PROXY_SSL_HEADER).
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")

# Logs to stdout/stderr: systemd's journal, the container runtime or honcho collect them. The access log line
# ends with our request id (the X-Request-ID response header, also on every application log line of the
# request), so one request can be followed from the proxy's log through ours. GUNICORN_ACCESS_LOG=0 turns it off.
accesslog = None if os.environ.get("GUNICORN_ACCESS_LOG", "1").lower() in ("0", "false", "no", "off") else "-"
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")
access_log_format = (
    '%(h)s - %(u)s %(t)s "%(r)s" %(s)s %(b)s %(M)sms "%(f)s" "%(a)s" '
    "request_id=%({x-request-id}o)s forwarded_for=%({x-forwarded-for}i)s"
)

# No preload_app: each worker imports the application itself, so `kill -HUP` on the master (systemctl reload)
# starts workers on the new code and retires the old ones gracefully — a deploy without dropping a request.
# Heartbeat files of the workers in memory, not on a disk that may stall (the container's overlay, say).
_SHM = "/dev/shm"  # noqa: S108 - gunicorn's documented advice
worker_tmp_dir = _SHM if os.path.isdir(_SHM) and os.access(_SHM, os.W_OK) else None
proc_name = "emsp-web"
# gunicorn's control socket (`gunicornc`: worker status, adding workers at runtime) only where asked for, at
# GUNICORN_CONTROL_SOCKET: its default ($HOME/.gunicorn/gunicorn.ctl) is one path shared by every gunicorn of the
# user, and a service user's home is read-only under the systemd units' ProtectHome.
control_socket = os.environ.get("GUNICORN_CONTROL_SOCKET", "")
control_socket_disable = not control_socket


def child_exit(server: Any, worker: Any) -> None:
    """Prometheus multiprocess mode (PROMETHEUS_MULTIPROC_DIR set): drop a dead worker's live gauges, or they
    would be reported for ever. Without prometheus_client installed there is nothing to clean up. (What
    emsp.metrics.gunicorn_child_exit does, without importing Django into gunicorn's master process.)"""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    try:
        from prometheus_client import multiprocess
    except ImportError:
        return
    multiprocess.mark_process_dead(worker.pid)
