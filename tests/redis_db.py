"""Redis databases of the test runs: each run, and each pytest-xdist worker, on a database of its own."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

DATABASES = 16  # Redis's default number of databases


def redis_database_shifted(url: str, by: int) -> str:
    """A Redis URL naming the database `by` after the one `url` names, its host, options and query kept
    (redis://host:port/N?…, or unix://path?db=N). Past Redis's last database it refuses, naming the setting,
    rather than wrap onto a database another run may be using."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if parts.scheme == "unix":
        db = int(dict(query).get("db") or 0)
        query = [(k, v) for k, v in query if k != "db"] + [("db", str(db + by))]
        path = parts.path
    else:
        db = int(parts.path.strip("/") or 0)
        path = f"/{db + by}"
    if db + by >= DATABASES:
        raise ValueError(
            f"REDIS_URL names database {db}; the tests need {by} more after it (pytest-xdist workers, end-to-end "
            f"runs at +8) and Redis has {DATABASES}: choose a lower database in REDIS_URL"
        )
    shifted = urlunsplit((parts.scheme, parts.netloc, path, urlencode(query), parts.fragment))
    if url.startswith(f"{parts.scheme}://") and not parts.netloc:  # unix:///path: urlunsplit drops the empty host
        shifted = shifted.replace(f"{parts.scheme}:", f"{parts.scheme}://", 1)
    return shifted
