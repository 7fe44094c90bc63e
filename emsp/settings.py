"""Settings for the eMSP platform: one module, driven by the environment (django-environ).

Development (DJANGO_ENV=development, as `make run` sets it) runs on SQLite with a Celery broker that needs no
server (filesystem). Production is the default: with DJANGO_ENV unset the secrets, an https PUBLIC_BASE_URL and
a real broker are required, and it refuses to start without them (emsp/safe_defaults.py).
"""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import environ
from django.core.exceptions import ImproperlyConfigured
from kombu import Queue

from emsp import safe_defaults

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"  # SQLite file, the no-server Celery queue, collected static files
for _folder in ("celery-queue", "staticfiles"):
    (VAR_DIR / _folder).mkdir(parents=True, exist_ok=True)

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

# Unset means production: a server someone forgot to configure must not run with DEBUG and a public secret key.
# `make` targets set development, pytest (pyproject.toml) test.
_DJANGO_ENV_SET = bool(env.str("DJANGO_ENV", default=""))
DJANGO_ENV = env.str("DJANGO_ENV", default="") or "production"  # development | test | production
if DJANGO_ENV not in safe_defaults.ENVIRONMENTS:
    raise ImproperlyConfigured(f"DJANGO_ENV must be development, test or production, not {DJANGO_ENV!r}")
PRODUCTION = DJANGO_ENV == "production"

DEBUG = env.bool("DJANGO_DEBUG", default=not PRODUCTION)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="" if PRODUCTION else safe_defaults.DEVELOPMENT_SECRET_KEY)
# Rotating DJANGO_SECRET_KEY: the previous key(s) here still validate staff sessions, CSRF and password-reset
# links signed with them until removed (docs/operations.md, "Key and token rotation").
SECRET_KEY_FALLBACKS = env.list("DJANGO_SECRET_KEY_FALLBACKS", default=[])
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=[] if PRODUCTION else ["*"])

# The base of every URL we hand to partners (OCPI versions URL, response_url, Beckn subscriber URL).
PUBLIC_BASE_URL = env.str("PUBLIC_BASE_URL", default="http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "emsp",
    "billing",
    "ocpi",
    "beckn",
    "cposim",
    "axes",
]

MIDDLEWARE = [
    # First: /healthz and /readyz are answered before the host check and the HTTPS redirect (emsp/probes.py).
    "emsp.probes.ProbeMiddleware",
    # Counts every request for /metrics and answers a scraper's bearer-token /metrics before the host check and
    # the HTTPS redirect, like the probes (emsp/metrics.py).
    "emsp.metrics.MetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "emsp.middleware.RequestIdMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "emsp.middleware.ConsoleQueryMiddleware",  # a NUL in a console address: 400, not a database error
    # Last, as django-axes asks: it turns a locked-out login into its lockout answer.
    "axes.middleware.AxesMiddleware",
]

# OCPI requests (/ocpi/...) skip the console's middlewares: an OCPI view authenticates its partner by token, keeps no
# session, is CSRF-exempt and serves no static file (ocpi/wsgi_lane.py).
CONSOLE_ONLY_MIDDLEWARE = {
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "emsp.middleware.ConsoleQueryMiddleware",
    "axes.middleware.AxesMiddleware",
}
OCPI_MIDDLEWARE = [m for m in MIDDLEWARE if m not in CONSOLE_ONLY_MIDDLEWARE]

ROOT_URLCONF = "emsp.urls"
WSGI_APPLICATION = "emsp.wsgi.application"
# WSGI middlewares around Django (emsp/wsgi.py), innermost first: the Beckn ACK answered before Django's stack;
# OCPI through Django without the console's middlewares.
WSGI_WRAPPERS = ["beckn.ack_lane.AckLane", "ocpi.wsgi_lane.OcpiLane"]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# An empty DATABASE_URL counts as unset (the embedded SQLite default).
DATABASES = {
    "default": env.db_url_config(env.str("DATABASE_URL", default="") or f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
}
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DB_CONN_MAX_AGE", default=60))
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several processes (web, worker, beat) share the file in `make run`: wait for locks, don't fail.
    DATABASES["default"].setdefault("OPTIONS", {}).update({"timeout": 20, "transaction_mode": "IMMEDIATE"})
    DATABASES["default"]["CONN_MAX_AGE"] = 0
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Bulk upserts send whole columns as arrays (Django's UNNEST inserts); server-side binding spares
    # psycopg quoting every element client-side, which dominated the bulk ingest profile.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("server_side_binding", True)
    # A statement run DB_PREPARE_THRESHOLD times on a connection is prepared there (psycopg's prepare_threshold;
    # Django turns it off by default): PostgreSQL then parses and plans it once per connection, not on every
    # call. Empty: never, for a pooler that can't keep prepared statements (PgBouncer before 1.21 in
    # transaction mode).
    _prepare = env.str("DB_PREPARE_THRESHOLD", default="5")
    DATABASES["default"]["OPTIONS"].setdefault("prepare_threshold", int(_prepare) if _prepare else None)
DATABASES["default"].setdefault("TEST", {})
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- Staff login brute-force protection (django-axes) ----------------------------------------------
# Its backend comes first so a locked-out username + address is refused before any password is checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("AXES_COOLOFF_MINUTES", default=15))
# Username and address together: failures lock that pair only, so colleagues behind the same address keep
# working and a guesser cannot lock a staff member out from everywhere. (django-axes reads REMOTE_ADDR: behind
# a proxy that is the proxy's, and the lockout is then per username.)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if PRODUCTION
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}

# Request bodies: OCPI pages and Beckn catalogues are JSON; anything above this is refused (413/NACK).
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("MAX_REQUEST_BYTES", default=2 * 1024 * 1024)

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.SessionAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAdminUser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "eMSP platform API",
    "DESCRIPTION": "Beckn 1.1.0 BPP endpoints, OCPI 2.2.1 eMSP endpoints and internal endpoints.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # The OCPI objects (transcribed from the spec) and Beckn requests (by reference to core 1.1.0) are
    # hand-written components; these hooks add them with the `Token` and `Signature` security schemes.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "ocpi.openapi.postprocess_schema",
        "beckn.openapi.postprocess_schema",
    ],
}

# --- Celery -------------------------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
# The broker: CELERY_BROKER_URL when set (amqp://user:password@host:5672/vhost for RabbitMQ, or a redis:// URL
# of its own), else REDIS_URL. The cache, rate limits and Beckn message-id sightings stay on REDIS_URL.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="") or REDIS_URL
# --- Queues and workers (docs/operations.md, "Queues and workers"): every task of ours is routed by name to
# `latency` (Beckn handling and callbacks, commands, token pushes, provider calls of a driver's payment) or
# `bulk` (pulls, audits, receipts, reconciliation, retention); tests/test_queues.py fails on a task missing here.
# A latency task runs at most CELERY_TASK_TIME_LIMIT; each bulk task states its own limit in its decorator.
LATENCY_QUEUE = "latency"
BULK_QUEUE = "bulk"
CELERY_TASK_DEFAULT_QUEUE = LATENCY_QUEUE
CELERY_TASK_QUEUES = [Queue(LATENCY_QUEUE), Queue(BULK_QUEUE)]  # a worker started without -Q consumes both
_TASK_QUEUES = {
    LATENCY_QUEUE: [
        "beckn.tasks.handle_request",
        "beckn.tasks.requeue_lost_requests",  # Beckn requests a killed worker lost (emsp/queue_journal.py)
        "emsp.tasks.outbox_deliver",  # Beckn callbacks and OCPI pushes (tokens, commands' results)
        "emsp.tasks.outbox_deliver_due",
        "emsp.tasks.command_send",
        "emsp.tasks.command_check_timeout",
        "emsp.tasks.commands_expire_due",
        "emsp.tasks.reservations_send_due",  # RESERVE_NOW commands
        "emsp.tasks.bookings_expire_no_shows",  # frees the charger
        "emsp.tasks.tokens_push_expired",  # a token past its expiry goes to every CPO as not valid
        "billing.tasks.capture_payment",
        "billing.tasks.release_payment",
        "billing.tasks.refund_payment",
        "billing.tasks.open_balance_checkout",
        "billing.tasks.expire_checkout",  # closes a withdrawn balance page at its provider
    ],
    BULK_QUEUE: [
        "ocpi.tasks.sync_due_partners",
        "ocpi.tasks.sync_partner",
        "ocpi.tasks.probe_open_circuits",
        "emsp.tasks.evses_refresh_due",
        "emsp.tasks.evses_refresh_partner",
        "emsp.tasks.bookings_reconcile",
        "emsp.tasks.purge_expired",
        "billing.tasks.process_cdr",
        "billing.tasks.process_due_cdrs",
        "billing.tasks.issue_receipt",
        "billing.tasks.issue_due_receipts",
        "billing.tasks.retry_stuck_payment_operations",
        "billing.tasks.release_unbooked_holds",  # holds no order was confirmed with; the release calls: latency
        "billing.tasks.audit_cdrs_for_tariffs",  # CDRs audited without a tariff, once it comes
        "billing.tasks.audit_cdrs_awaiting_tariffs",
    ],
}
CELERY_TASK_ROUTES = {name: {"queue": queue} for queue, names in _TASK_QUEUES.items() for name in names}
# Redelivery after a worker dies. Redis hands an unacknowledged task to another worker once it has been out
# longer than the visibility timeout, whether its worker died or is still running it; so each queue's timeout
# is longer than its longest task (tests/test_queues.py checks the limits against it). Latency workers keep a
# short one (a killed worker's Beckn request is answered within about a minute); a worker consuming only the
# bulk queue records its tasks under keys of its own with CELERY_BULK_VISIBILITY_TIMEOUT (emsp/celery.py), so
# a latency worker never hands out an hour-long pull that is still running. RabbitMQ redelivers only when the
# worker's connection drops; its consumer_timeout (30 min by default) must exceed the longest bulk task.
CELERY_VISIBILITY_TIMEOUT = env.int("CELERY_VISIBILITY_TIMEOUT", default=60)
CELERY_BULK_VISIBILITY_TIMEOUT = env.int("CELERY_BULK_VISIBILITY_TIMEOUT", default=3900)
# A worker consuming only the bulk queue runs at this nice value (emsp/celery.py), so on shared cores the latency
# queue's tasks get the CPU first; 0 gives both the same priority.
CELERY_BULK_NICENESS = env.int("CELERY_BULK_NICENESS", default=10)
if CELERY_BROKER_URL.startswith(("redis://", "rediss://", "redis+socket://", "sentinel://")):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": CELERY_VISIBILITY_TIMEOUT,
        # How often workers look for such tasks (kombu: about interval × throttle seconds).
        "unacked_restore_interval": env.int("CELERY_UNACKED_RESTORE_INTERVAL", default=5),
        "unacked_restore_throttle": env.int("CELERY_UNACKED_RESTORE_THROTTLE", default=1),
    }
elif CELERY_BROKER_URL:
    CELERY_BROKER_TRANSPORT_OPTIONS = {}  # RabbitMQ (amqp://): no visibility timeout, see above
else:
    # No server needed: kombu's filesystem transport works across processes; it polls the folder (every
    # 0.1 s here rather than kombu's 1 s, so a search is answered in well under a second).
    _queue_dir = VAR_DIR / "celery-queue"
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT = "emsp.queue_files:Transport"  # kombu's, each message file written whole
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "polling_interval": 0.1,
        "data_folder_in": str(_queue_dir),
        "data_folder_out": str(_queue_dir),
        "control_folder": str(VAR_DIR / "celery-control"),  # kombu's default is ./control
        "store_processed": False,
    }
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
# Celery's Django fixup closes every database connection before and after each task unless this is set: a new
# PostgreSQL backend for every task (in a 60 req/s soak, 0.64 of the machine's 2 cores went to PostgreSQL, most
# of it starting backends). Tasks keep theirs as web requests do: emsp/celery.py closes one around a task by
# Django's rules (older than CONN_MAX_AGE, or unusable after an error); the fixup only recycles every N tasks.
CELERY_DB_REUSE_MAX = 1000
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = 50  # a latency task's (bulk tasks set theirs); under CELERY_VISIBILITY_TIMEOUT
CELERY_TASK_SOFT_TIME_LIMIT = 45
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
# Celery's scheduler plus a heartbeat row the beat writes (emsp/beat.py); /readyz fails when the newest is older
# than BEAT_HEARTBEAT_MAX_AGE_SECONDS (emsp/probes.py).
CELERY_BEAT_SCHEDULER = "emsp.beat:Scheduler"
BEAT_HEARTBEAT_INTERVAL_SECONDS = env.float("BEAT_HEARTBEAT_INTERVAL_SECONDS", default=10.0)
BEAT_HEARTBEAT_MAX_AGE_SECONDS = env.int("BEAT_HEARTBEAT_MAX_AGE_SECONDS", default=60)
READYZ_BROKER_TIMEOUT_SECONDS = env.float("READYZ_BROKER_TIMEOUT_SECONDS", default=2.0)

# --- Metrics (emsp/metrics.py; docs/operations.md "Metrics and alerts") --------------------------------
# Prometheus scrapes /metrics with `Authorization: Bearer <METRICS_TOKEN>`; unset, only staff sessions holding
# emsp.view_metrics may read it. Several processes (gunicorn workers, Celery workers) add up their counters
# through PROMETHEUS_MULTIPROC_DIR, which prometheus_client itself reads from the environment at import.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")

# --- Caches ------------------------------------------------------------------------------------
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Secrets at rest (emsp/crypto.py) --------------------------------------------------------------
# Fernet keys (url-safe base64, 32 bytes; `manage.py encryption_key` makes one), comma-separated: the first
# encrypts, all decrypt, so a new key goes first and `manage.py rotate_encryption_keys` re-encrypts. Required in
# production; in development one is derived from SECRET_KEY.
FIELD_ENCRYPTION_KEYS = env.list("FIELD_ENCRYPTION_KEYS", default=[])

# --- Safe defaults: production refuses to start with DEBUG, a development secret key, a non-https public URL,
# no real broker, no Redis, no host names or no encryption keys, naming each setting (emsp/safe_defaults.py).
if PRODUCTION and not safe_defaults.offline_command(sys.argv):
    _problems = safe_defaults.production_problems(
        debug=DEBUG,
        secret_key=SECRET_KEY,
        public_base_url=PUBLIC_BASE_URL,
        broker_url=CELERY_BROKER_URL,
        redis_url=REDIS_URL,  # required whatever the broker: the cache, rate limits, Beckn message ids
        allowed_hosts=ALLOWED_HOSTS,
        field_encryption_keys=FIELD_ENCRYPTION_KEYS,
    )
    if _problems:
        raise ImproperlyConfigured(safe_defaults.refusal_message(_problems, env_was_set=_DJANGO_ENV_SET))

# --- How long each class of data is kept (emsp/privacy.py; docs/privacy.md) -------------------------------
# Days, each overridable as RETENTION_<CLASS>_DAYS. Charging records (sessions, CDRs, receipts, settlements)
# are tax records: 8 years covers India's GST rules (72 months after the annual return) and most EU states.
RETENTION_DAYS = {
    "ocpi_messages": env.int("RETENTION_OCPI_MESSAGES_DAYS", default=30),
    "beckn_messages": env.int("RETENTION_BECKN_MESSAGES_DAYS", default=90),
    "deliveries": env.int("RETENTION_DELIVERIES_DAYS", default=30),
    "sync_runs": env.int("RETENTION_SYNC_RUNS_DAYS", default=180),
    "data_quality": env.int("RETENTION_DATA_QUALITY_DAYS", default=180),
    "quotes": env.int("RETENTION_QUOTES_DAYS", default=90),
    "charging_records": env.int("RETENTION_CHARGING_RECORDS_DAYS", default=8 * 366),
    # Retention (issue 14): payment providers' webhook records (the replay guard: keep them well past the
    # providers' redelivery windows, Razorpay 24 h, Stripe 3 days), attempts of deliveries still kept, and
    # booking-check findings once resolved (open ones stay).
    "provider_webhooks": env.int("RETENTION_PROVIDER_WEBHOOKS_DAYS", default=90),
    "delivery_attempts": env.int("RETENTION_DELIVERY_ATTEMPTS_DAYS", default=30),
    "booking_checks": env.int("RETENTION_BOOKING_CHECKS_DAYS", default=90),
}
# Pruning deletes in batches of PRUNE_BATCH_SIZE rows (one short transaction each, by primary key) and at most
# PRUNE_MAX_ROWS_PER_RUN rows of each kind per run (the hourly beat task; the rest goes next hour).
PRUNE_BATCH_SIZE = env.int("PRUNE_BATCH_SIZE", default=5000)
PRUNE_MAX_ROWS_PER_RUN = env.int("PRUNE_MAX_ROWS_PER_RUN", default=5_000_000)

# --- Outbound HTTP -----------------------------------------------------------------------------
# Partner-supplied URLs (OCPI versions/endpoints, Beckn bap_uri) may not point at private or loopback
# addresses in production (SSRF). Development and tests talk to peers on 127.0.0.1.
ALLOW_PRIVATE_NETWORKS = env.bool("ALLOW_PRIVATE_NETWORKS", default=not PRODUCTION)
OUTBOUND_TIMEOUT_SECONDS = env.float("OUTBOUND_TIMEOUT_SECONDS", default=10.0)
OUTBOUND_CONNECT_TIMEOUT_SECONDS = env.float("OUTBOUND_CONNECT_TIMEOUT_SECONDS", default=3.0)
# The most of a partner's answer we read, once decompressed (emsp/outbound.py): larger is a failed request.
OUTBOUND_MAX_BODY_BYTES = env.int("OUTBOUND_MAX_BODY_BYTES", default=20 * 1024 * 1024)

# --- The outbox (OCPI pushes and Beckn callbacks, emsp/outbox.py) ---------------------------------
OUTBOX_MAX_ATTEMPTS = env.int("OUTBOX_MAX_ATTEMPTS", default=10)
# A row a worker has been sending for longer than this was left by a stopped worker: it is sent again.
OUTBOX_SENDING_LEASE_SECONDS = env.int("OUTBOX_SENDING_LEASE_SECONDS", default=120)
# The same for a Beckn callback, whose send times out after 10 s and whose body expires 30 s after it was written
# (its context's ttl): handed back sooner, so that a worker stopped between its commit and its send still lets
# the callback reach the app in time (emsp/outbox.py, claim_if_sent_here). Keep it above 10 and well under 30.
OUTBOX_CALLBACK_LEASE_SECONDS = env.int("OUTBOX_CALLBACK_LEASE_SECONDS", default=15)
# How long a Beckn callback waits for the BAP's answer (keep it under OUTBOX_CALLBACK_LEASE_SECONDS); for a BAP
# host that gave no answer within the last BECKN_CALLBACK_QUIET_SECONDS, its callbacks go one at a time and wait
# BECKN_CALLBACK_QUIET_TIMEOUT_SECONDS, so one silent app can't hold the latency worker (beckn/callbacks.py).
BECKN_CALLBACK_TIMEOUT_SECONDS = env.float("BECKN_CALLBACK_TIMEOUT_SECONDS", default=10.0)
BECKN_CALLBACK_QUIET_TIMEOUT_SECONDS = env.float("BECKN_CALLBACK_QUIET_TIMEOUT_SECONDS", default=2.0)
BECKN_CALLBACK_QUIET_SECONDS = env.int("BECKN_CALLBACK_QUIET_SECONDS", default=60)
# A CDR audit or a pull a worker holds longer than this was left by a stopped worker: another takes it over.
WORK_LEASE_SECONDS = env.int("WORK_LEASE_SECONDS", default=120)
SYNC_LEASE_SECONDS = env.int("SYNC_LEASE_SECONDS", default=300)

# --- OCPI --------------------------------------------------------------------------------------
OCPI_COUNTRY_CODE = env.str("OCPI_COUNTRY_CODE", default="IN")
OCPI_PARTY_ID = env.str("OCPI_PARTY_ID", default="EMS")
OCPI_BUSINESS_NAME = env.str("OCPI_BUSINESS_NAME", default="Open eMSP")
OCPI_BUSINESS_WEBSITE = env.str("OCPI_BUSINESS_WEBSITE", default="")
OCPI_PAGE_LIMIT = env.int("OCPI_PAGE_LIMIT", default=100)  # X-Limit of every list we serve
OCPI_DEFAULT_SYNC_INTERVAL_MINUTES = env.int("OCPI_DEFAULT_SYNC_INTERVAL_MINUTES", default=60)
OCPI_COMMAND_DEFAULT_TIMEOUT_SECONDS = env.int("OCPI_COMMAND_DEFAULT_TIMEOUT_SECONDS", default=30)
OCPI_LOG_BODIES = env.bool("OCPI_LOG_BODIES", default=True)
# How far a partner's clock may run ahead of ours: a last_updated (or a session start) later than now plus this
# is refused — it would freeze the object against every later, correct update.
OCPI_MAX_CLOCK_SKEW_SECONDS = env.int("OCPI_MAX_CLOCK_SKEW_SECONDS", default=300)

# Circuit breakers per partner and module (emsp/services/breakers.py): this many failed requests (no answer,
# timeout, 5xx, not OCPI) within the window open it; while open, requests are refused at once and callers
# fall back (select quotes from the catalogue, commands fail fast). After OPEN_SECONDS one probe goes through;
# each failed probe doubles the wait, up to MAX_OPEN_SECONDS.
OCPI_BREAKER_FAILURES = env.int("OCPI_BREAKER_FAILURES", default=3)
OCPI_BREAKER_WINDOW_SECONDS = env.int("OCPI_BREAKER_WINDOW_SECONDS", default=60)
OCPI_BREAKER_OPEN_SECONDS = env.int("OCPI_BREAKER_OPEN_SECONDS", default=30)
OCPI_BREAKER_MAX_OPEN_SECONDS = env.int("OCPI_BREAKER_MAX_OPEN_SECONDS", default=600)

# EVSEs drivers are looking at (recent search results and quotes, open bookings) of CPOs that don't push are
# re-read one by one so their status is never older than this (RFC §8.3.1); the beat checks every tick.
EVSE_REFRESH_SECONDS = env.int("EVSE_REFRESH_SECONDS", default=30)
EVSE_REFRESH_TICK_SECONDS = env.int("EVSE_REFRESH_TICK_SECONDS", default=10)

# --- Bookings (emsp/services/bookings.py) ------------------------------------------------------------
# A booking for a time window: how far ahead and how long it may be; how long after the window opens the
# driver may start before the booking is a no-show (the hold ends, the app hears on_cancel); how early before
# the window a start is accepted; how far ahead of the window RESERVE_NOW goes to the CPO (CPOs limit how far
# ahead they accept a reservation; many hold one 15-30 minutes).
BOOKING_MAX_AHEAD_DAYS = env.int("BOOKING_MAX_AHEAD_DAYS", default=7)
BOOKING_MAX_WINDOW_MINUTES = env.int("BOOKING_MAX_WINDOW_MINUTES", default=240)
BOOKING_NO_SHOW_GRACE_MINUTES = env.int("BOOKING_NO_SHOW_GRACE_MINUTES", default=15)
BOOKING_EARLY_START_MINUTES = env.int("BOOKING_EARLY_START_MINUTES", default=10)
BOOKING_RESERVE_LEAD_MINUTES = env.int("BOOKING_RESERVE_LEAD_MINUTES", default=30)
# Reconciliation of bookings with the CPO's side (emsp/services/booking_checks.py, RFC §11.7.3): how often the
# beat checks; how long after the CPO answered a start or stop the session (or its end) may take before its
# sessions list is read again; how long after an accepted or timed-out start with no session the booking ends
# FAILED; how long after a charge ends its CDR may take before the CPO's CDR list is read again.
BOOKING_CHECK_INTERVAL_SECONDS = env.int("BOOKING_CHECK_INTERVAL_SECONDS", default=60)
BOOKING_CHECK_WAIT_MINUTES = env.int("BOOKING_CHECK_WAIT_MINUTES", default=5)
BOOKING_CHECK_GIVE_UP_MINUTES = env.int("BOOKING_CHECK_GIVE_UP_MINUTES", default=30)
BOOKING_CHECK_CDR_WAIT_HOURS = env.int("BOOKING_CHECK_CDR_WAIT_HOURS", default=4)

# Requests per partner and minute, across every web process (emsp/ratelimit.py): beyond it HTTP 429 with
# Retry-After. 0 = no limit. 12000 a minute is 200 a second, far above a CPO's normal status pushes.
OCPI_RATE_LIMIT_PER_MINUTE = env.int("OCPI_RATE_LIMIT_PER_MINUTE", default=12000)

# --- Beckn -------------------------------------------------------------------------------------
BECKN_SUBSCRIBER_ID = env.str("BECKN_SUBSCRIBER_ID", default="emsp.localhost")
BECKN_SUBSCRIBER_URL = env.str("BECKN_SUBSCRIBER_URL", default=f"{PUBLIC_BASE_URL}/beckn")
BECKN_UNIQUE_KEY_ID = env.str("BECKN_UNIQUE_KEY_ID", default="k1")
BECKN_SIGNING_PRIVATE_KEY = env.str("BECKN_SIGNING_PRIVATE_KEY", default="")
BECKN_REGISTRY_URL = env.str("BECKN_REGISTRY_URL", default="")
BECKN_SIGNATURE_SKEW_SECONDS = env.int("BECKN_SIGNATURE_SKEW_SECONDS", default=5)
# The longest a request signature (expires - created) and a request's context.timestamp may stay good: longer
# windows are replayable credentials. BECKN-006's own example signs for an hour; beckn-onix for 5 minutes.
BECKN_SIGNATURE_MAX_VALIDITY_SECONDS = env.int("BECKN_SIGNATURE_MAX_VALIDITY_SECONDS", default=3600)
# The RFC's domain and the EV-charging domains of the UEI, DEG v1 and missions examples.
BECKN_DOMAINS = env.list(
    "BECKN_DOMAINS",
    default=["ev-charging:beckn", "ev-charging:uei", "dent:ev-charging:0.1.0", "deg", "charging"],
)
BECKN_MAX_BODY_BYTES = env.int("BECKN_MAX_BODY_BYTES", default=256 * 1024)
# Verified requests per signing subscriber and minute (emsp/ratelimit.py): beyond it a NACK (50000) with
# HTTP 429 and Retry-After. 0 = no limit.
BECKN_RATE_LIMIT_PER_MINUTE = env.int("BECKN_RATE_LIMIT_PER_MINUTE", default=6000)
# Registry lookups per minute for keys we know nothing of (not trusted, not cached, never recorded), across every
# web process (beckn/registry.py): the rate limit above counts only verified requests, so without this anyone
# could make us ask the registry once per made-up keyId. Beyond it such a key is refused (401) unasked. 0 = no limit.
BECKN_REGISTRY_LOOKUPS_PER_MINUTE = env.int("BECKN_REGISTRY_LOOKUPS_PER_MINUTE", default=600)
EMSP_SUPPORT_PHONE = env.str("EMSP_SUPPORT_PHONE", default="+91-80-4000-0000")
EMSP_SUPPORT_EMAIL = env.str("EMSP_SUPPORT_EMAIL", default="support@emsp.example.com")

# --- Paths to shared reference material (tests read it in place) --------------------------------
SHARED_DIR = Path(env.str("SHARED_DIR", default=str(BASE_DIR.parent / "shared")))
VECTORS_DIR = SHARED_DIR / "vectors"

# --- Security (production) ---------------------------------------------------------------------
if PRODUCTION:
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_CONTENT_TYPE_NOSNIFF = True
    CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# --- Logs (emsp/logs.py; docs/operations.md, "Logs") ------------------------------------------------------
# One line per record on stderr, JSON in production and text in development, each with the request and
# correlation ids (carried into Celery tasks and outbound calls), secrets and personal data masked. Celery's
# worker and beat write the same lines (they leave logging to Django: emsp/logs.py).
LOG_FORMAT = env.str("LOG_FORMAT", default="json" if PRODUCTION else "text")
if LOG_FORMAT not in ("json", "text"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be json or text, not {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # Ids first, then redaction: the filters run in this order on every record the handler writes.
    "filters": {"ids": {"()": "emsp.logs.ContextFilter"}, "redact": {"()": "emsp.logs.RedactFilter"}},
    "formatters": {"json": {"()": "emsp.logs.JsonFormatter"}, "text": {"()": "emsp.logs.TextFormatter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["ids", "redact"]}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
# Error reports (optional): with SENTRY_DSN set, exceptions and ERROR lines of web processes and tasks go to
# Sentry with the same ids as tags, masked the same way, no personal data (emsp/sentry.py).
SENTRY_DSN = env.str("SENTRY_DSN", default="")
if SENTRY_DSN:
    from emsp.sentry import init_sentry

    init_sentry(dsn=SENTRY_DSN, environment=env.str("SENTRY_ENVIRONMENT", default=DJANGO_ENV))

CELERY_BEAT_SCHEDULE = {
    "ocpi-sync-due-partners": {"task": "ocpi.tasks.sync_due_partners", "schedule": 60.0},
    "emsp-commands-expire-due": {"task": "emsp.tasks.commands_expire_due", "schedule": 5.0},
    "emsp-reservations-send-due": {"task": "emsp.tasks.reservations_send_due", "schedule": 15.0},
    "emsp-bookings-expire-no-shows": {"task": "emsp.tasks.bookings_expire_no_shows", "schedule": 15.0},
    "emsp-bookings-reconcile": {
        "task": "emsp.tasks.bookings_reconcile",
        "schedule": float(BOOKING_CHECK_INTERVAL_SECONDS),
    },
    "billing-process-due-cdrs": {"task": "billing.tasks.process_due_cdrs", "schedule": 15.0},
    "billing-issue-due-receipts": {"task": "billing.tasks.issue_due_receipts", "schedule": 60.0},
    "billing-retry-stuck-payments": {"task": "billing.tasks.retry_stuck_payment_operations", "schedule": 60.0},
    "billing-release-unbooked-holds": {"task": "billing.tasks.release_unbooked_holds", "schedule": 60.0},
    "billing-audit-cdrs-awaiting-tariffs": {"task": "billing.tasks.audit_cdrs_awaiting_tariffs", "schedule": 300.0},
    "emsp-outbox-deliver-due": {"task": "emsp.tasks.outbox_deliver_due", "schedule": 10.0},
    "beckn-requeue-lost-requests": {"task": "beckn.tasks.requeue_lost_requests", "schedule": 30.0},
    "emsp-tokens-push-expired": {"task": "emsp.tasks.tokens_push_expired", "schedule": 60.0},
    "emsp-purge-expired": {"task": "emsp.tasks.purge_expired", "schedule": 3600.0},
    "ocpi-probe-open-circuits": {"task": "ocpi.tasks.probe_open_circuits", "schedule": 10.0},
    "emsp-evses-refresh-due": {"task": "emsp.tasks.evses_refresh_due", "schedule": float(EVSE_REFRESH_TICK_SECONDS)},
}

# --- Payments (issue 12) -------------------------------------------------------------------------
# Which provider collects a currency ("*": every other one), and each provider's adapter and credentials.
# The API bases default to the sandbox `python -m paysim` (make run starts it): the providers' own SDKs talk
# to it over HTTP exactly as they talk to the provider. Real keys come from the environment.
PAYSIM_URL = env.str("PAYSIM_URL", default="http://127.0.0.1:8700").rstrip("/")
PAYMENT_GATEWAYS = {"INR": "razorpay", "*": "stripe"} | env.dict("PAYMENT_GATEWAYS", default={})
# The sandbox's webhook secrets, public in this repository: production takes no webhook signed with them.
PAYSIM_WEBHOOK_SECRETS = frozenset({"whsec_paysim", "paysim_webhook_secret"})
PAYMENT_PROVIDERS = {
    "stripe": {
        "adapter": "billing.payments.stripe_gateway.StripeGateway",
        "options": {
            "api_key": env.str("STRIPE_API_KEY", default="sk_test_paysim"),
            "webhook_secret": env.str("STRIPE_WEBHOOK_SECRET", default="whsec_paysim"),
            "api_base": env.str("STRIPE_API_BASE", default=f"{PAYSIM_URL}/stripe"),
        },
    },
    "razorpay": {
        "adapter": "billing.payments.razorpay_gateway.RazorpayGateway",
        "options": {
            "key_id": env.str("RAZORPAY_KEY_ID", default="rzp_test_paysim"),
            "key_secret": env.str("RAZORPAY_KEY_SECRET", default="paysim_secret"),
            "webhook_secret": env.str("RAZORPAY_WEBHOOK_SECRET", default="paysim_webhook_secret"),
            "api_base": env.str("RAZORPAY_API_BASE", default=f"{PAYSIM_URL}/razorpay/v1"),
        },
    },
}
# Our legal entity on receipts and statements, and the default payment terms offered to apps (BapAgreement
# rows override them per app).
LEGAL_ENTITY_CODE = env.str("LEGAL_ENTITY_CODE", default="EMSP")
LEGAL_ENTITY_NAME = env.str("LEGAL_ENTITY_NAME", default="Open eMSP Platform Pvt. Ltd.")
LEGAL_ENTITY_ADDRESS = env.str("LEGAL_ENTITY_ADDRESS", default="12 Residency Road, Bengaluru 560025, India")
LEGAL_ENTITY_TAX_ID = env.str("LEGAL_ENTITY_TAX_ID", default="29AAACO0000A1Z5")
# The legal entity's time zone (an IANA name): the dates and times printed on receipts, credit notes and
# statements, and the year a document's number counts in (a receipt issued at 20:00 UTC on 31 December is
# dated 1 January in India, and numbered in the new year). TIME_ZONE stays UTC for everything else.
DOCUMENTS_TIME_ZONE = env.str("DOCUMENTS_TIME_ZONE", default="Asia/Kolkata")
try:
    ZoneInfo(DOCUMENTS_TIME_ZONE)
except (ZoneInfoNotFoundError, ValueError, OSError) as _error:
    raise ImproperlyConfigured(
        f"DOCUMENTS_TIME_ZONE must be a time zone of the IANA database such as Asia/Kolkata, not "
        f"{DOCUMENTS_TIME_ZONE!r} ({_error})"
    ) from None
PAYMENT_AUTHORISATION_MARGIN_PERCENT = env.int("PAYMENT_AUTHORISATION_MARGIN_PERCENT", default=20)
# Who collects for an app without a BapAgreement row: we (False) or the app itself (True).
PAYMENT_DEFAULT_BAP_COLLECTS = env.bool("PAYMENT_DEFAULT_BAP_COLLECTS", default=False)
