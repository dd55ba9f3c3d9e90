"""PostgreSQL helpers for the test suite: throw-away databases (psycopg2, autocommit)."""
from __future__ import annotations

from urllib.parse import urlparse, urlunparse

import psycopg2


def _connect(url: str):
    conn = psycopg2.connect(url)
    conn.autocommit = True
    return conn


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name``."""
    parsed = urlparse(url)
    return urlunparse(parsed._replace(path="/" + name))


def create_database(base_url: str, name: str) -> str:
    """Create database ``name`` on the server of ``base_url``; returns its URL."""
    conn = _connect(base_url)
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return with_database(base_url, name)


def drop_database(url: str) -> None:
    """Drop the database of ``url`` (connections to it are ended first)."""
    name = urlparse(url).path.lstrip("/")
    conn = _connect(with_database(url, "postgres"))
    with conn.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
    conn.close()


def reset_database(url: str) -> None:
    """Drop every table of the database (each test starts from an empty schema)."""
    conn = _connect(url)
    with conn.cursor() as cur:
        # A previous test's server child may still be exiting with a connection open; its
        # locks would make the DROP wait, so end such sessions first, and never wait forever.
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        cur.execute("SET lock_timeout = '30s'")
        cur.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    conn.close()
