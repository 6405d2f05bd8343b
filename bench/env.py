"""The environment of a benchmark run, set before Django starts.

Benchmarks measure the product as production runs it: DEBUG off, PostgreSQL, the Redis cache
and a Redis broker with real workers. Each BENCH_* variable names what this run uses; the
defaults are the bench's own database and Redis DBs on this machine. Importing this module
``prepare()`` sets the variables (for this process and every server, worker and command it
starts); ``django_start()`` also makes sure the database exists and is migrated.
"""

import os
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent

DEFAULTS = {
    "BENCH_DATABASE_URL": "postgres://postgres@127.0.0.1:5432/em_bench",
    "BENCH_REDIS_URL": "redis://127.0.0.1:6379/8",
    "BENCH_BROKER_URL": "redis://127.0.0.1:6379/9",
    "BENCH_QUEUE": "bench",
}


def prepare() -> None:
    """Set this run's environment (idempotent). Call before Django starts."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    for name, value in DEFAULTS.items():
        os.environ.setdefault(name, value)
    os.environ.update(_derived())


def _derived() -> dict:
    return {
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "DATABASE_URL": os.environ["BENCH_DATABASE_URL"],
        "REDIS_URL": os.environ["BENCH_REDIS_URL"],
        "CELERY_BROKER_URL": os.environ["BENCH_BROKER_URL"],
        "CACHE_KEY_PREFIX": os.environ.get("BENCH_CACHE_PREFIX", "bench"),
        "DEBUG": "0",
        "SECRET_KEY": os.environ.get("SECRET_KEY") or "bench-only-secret-key-never-used-in-production-0123456789",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECURE_SSL_REDIRECT": "0",
        "ALLOW_ANONYMOUS_READ": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }


def database_ensure(url: str | None = None, *, drop: bool = False) -> str:
    """Create the run's PostgreSQL database if missing (or drop and recreate it)."""
    import psycopg

    parts = urlsplit(url or os.environ["BENCH_DATABASE_URL"])
    name = parts.path.lstrip("/")
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        if drop:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')
    return name


def database_drop(url: str) -> None:
    import psycopg

    parts = urlsplit(url)
    with psycopg.connect(urlunsplit(parts._replace(path="/postgres")), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{parts.path.lstrip("/")}" WITH (FORCE)')


def django_start() -> None:
    """Create the database if needed, start Django and apply migrations (quietly)."""
    import django
    from django.core.management import call_command

    prepare()
    database_ensure()
    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
