"""What production refuses to start with (emsp/settings.py calls this; README, *Safe defaults*). Pure: the
settings are passed in, so tests need no reload."""

from __future__ import annotations

ENVIRONMENTS = ("development", "test", "production")
DEVELOPMENT_SECRET_KEY = "dev-only-insecure-key-0123456789-abcdefghijklmnopqrstuvwxyz"  # noqa: S105 - public on purpose
NO_SERVER_BROKERS = ("filesystem://", "memory://")
UNSET_HINT = (
    "DJANGO_ENV is unset, so these are production settings. On a development machine set DJANGO_ENV=development "
    "(make run, make demo and the tests do)."
)


# Management commands that only write or compare schema files: they serve nothing, call no partner and read no
# secret, so production's refusal doesn't stop them (`manage.py makemigrations --check` on a machine without
# DJANGO_ENV, as CI's and an operator's checks run it).
OFFLINE_COMMANDS = frozenset({"makemigrations"})


def offline_command(argv: list[str]) -> bool:
    """Is this process `manage.py <one of OFFLINE_COMMANDS>`?"""
    return len(argv) > 1 and argv[0].endswith("manage.py") and argv[1] in OFFLINE_COMMANDS


def production_problems(
    *,
    debug: bool,
    secret_key: str,
    public_base_url: str,
    broker_url: str,
    allowed_hosts: list[str],
    field_encryption_keys: list[str],
    redis_url: str | None = None,
) -> list[str]:
    """Each unsafe production setting, one line each, naming the environment variable to set. `redis_url` is
    REDIS_URL as set (emsp/settings.py passes it; None leaves it unchecked): the broker may be RabbitMQ, but the
    cache, rate limits and Beckn message-id sightings are Redis's whatever the broker."""
    problems = []
    if debug:
        problems.append("DJANGO_DEBUG is on: never in production (error pages show settings and code to anyone).")
    # Django's own deploy check (security.W009) asks for 50 characters and 5 different ones.
    if not secret_key or secret_key == DEVELOPMENT_SECRET_KEY or secret_key.startswith("django-insecure-"):
        problems.append(
            "DJANGO_SECRET_KEY is unset or a development key: set a random one of 50+ characters "
            "(python -c 'import secrets; print(secrets.token_urlsafe(64))')."
        )
    elif len(secret_key) < 50 or len(set(secret_key)) < 5:
        problems.append("DJANGO_SECRET_KEY is too weak: use 50+ random characters.")
    if not public_base_url.startswith("https://"):
        problems.append(
            f"PUBLIC_BASE_URL must be an https:// URL in production (it is {public_base_url!r}): partners "
            "are handed URLs under it and send their tokens to them."
        )
    if broker_url.startswith(NO_SERVER_BROKERS):
        problems.append(
            "REDIS_URL is unset (and CELERY_BROKER_URL too): production needs a real Celery broker, Redis or "
            "RabbitMQ (the filesystem queue is for one development machine)."
        )
    elif redis_url is not None and not redis_url.strip():
        problems.append(
            "REDIS_URL is unset: production needs Redis also when CELERY_BROKER_URL names RabbitMQ. The cache, "
            "rate limits and Beckn message-id sightings live there; without it each process would keep its own "
            "in memory (limits per process, duplicate Beckn messages not seen)."
        )
    if not [host for host in allowed_hosts if host.strip()]:
        problems.append("DJANGO_ALLOWED_HOSTS is empty: every request would be refused (400). List our host names.")
    if not [key for key in field_encryption_keys if key.strip()]:
        problems.append("FIELD_ENCRYPTION_KEYS is required in production (manage.py encryption_key makes one).")
    return problems


def refusal_message(problems: list[str], *, env_was_set: bool) -> str:
    lines = ["Refusing to start with unsafe production settings:", *(f"  - {p}" for p in problems)]
    if not env_was_set:
        lines.append(UNSET_HINT)
    return "\n".join(lines)
