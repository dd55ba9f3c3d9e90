"""Start-up checks: a start that cannot work, or works badly, says so in one line (issue 20).

- A PostgreSQL database (or broker database) that does not exist: one line naming it and
  the ``createdb`` command, exit code 2, instead of a driver traceback.
- A PostgreSQL server that cannot be reached or refuses us: one line, exit code 1.
- ``--processes N`` on SQLite: allowed (it works, and small installs use it), with one
  warning naming the trade-off.
"""
from __future__ import annotations

from typing import Optional
from urllib.parse import parse_qsl, unquote, urlencode, urlparse, urlunparse

CONNECT_TIMEOUT = 5  # seconds


class StartupError(Exception):
    """A start that cannot work: ``str()`` is the one line to print, ``code`` the exit code."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


MIN_SERVICE_TOKEN = 32  # characters; docs/security.md recommends 32+ random characters


def service_token_warning(config) -> Optional[str]:
    """The warning for a SERVICE_TOKEN shorter than 32 characters (it is accepted), or None."""
    if config.service_token and len(config.service_token) < MIN_SERVICE_TOKEN:
        return (f"SERVICE_TOKEN is {len(config.service_token)} characters long: use at least "
                f"{MIN_SERVICE_TOKEN} random characters (python -c 'import secrets; print(secrets.token_urlsafe(32))')")
    return None


def sqlite_processes_warning(config) -> Optional[str]:
    """The warning for ``--processes N`` on SQLite, or None."""
    if config.processes > 1 and config.sqlite_path is not None:
        return (f"--processes {config.processes} on SQLite: every process writes the same file, so writes "
                "from different processes wait for each other (503 after 1 s of waiting); "
                "use PostgreSQL for several processes")
    return None


def _libpq_url(url: str) -> str:
    # Our own ?prefix= (broker URLs) is not a libpq parameter.
    parsed = urlparse(url)
    kept = [(k, v) for k, v in parse_qsl(parsed.query, keep_blank_values=True) if k != "prefix"]
    scheme = "postgresql" if parsed.scheme == "postgres" else parsed.scheme
    return urlunparse(parsed._replace(scheme=scheme, query=urlencode(kept)))


def check_postgres(url: str) -> None:
    """Raise StartupError unless the PostgreSQL database of ``url`` accepts a connection."""
    import psycopg2
    url = _libpq_url(url)
    try:
        psycopg2.connect(url, connect_timeout=CONNECT_TIMEOUT).close()
        return
    except psycopg2.Error as exc:
        failure = (str(exc).strip().splitlines() or [type(exc).__name__])[-1].strip()
    parsed = urlparse(url)
    name = unquote(parsed.path.lstrip("/")) or "postgres"
    host, port = parsed.hostname or "localhost", parsed.port or 5432
    user = unquote(parsed.username) if parsed.username else "postgres"
    # Ask the server whether the database exists: its error text depends on its language.
    exists = None
    try:
        conn = psycopg2.connect(urlunparse(parsed._replace(path="/postgres")), connect_timeout=CONNECT_TIMEOUT)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                exists = cur.fetchone() is not None
        finally:
            conn.close()
    except psycopg2.Error:
        pass
    if exists is False:
        raise StartupError(f'PostgreSQL database "{name}" does not exist on {host}:{port}; '
                           f"create it with: createdb -h {host} -p {port} -U {user} {name}", 2)
    raise StartupError(f'cannot connect to PostgreSQL database "{name}" on {host}:{port} as {user}: {failure}', 1)


def check_databases(config) -> None:
    """Check the database URL and a PostgreSQL broker URL. Raises StartupError."""
    seen = set()
    for url in (config.database_url, config.broker_url):
        if url.startswith(("postgres://", "postgresql://")) and _libpq_url(url) not in seen:
            seen.add(_libpq_url(url))
            check_postgres(url)
