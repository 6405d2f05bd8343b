"""Fixtures for the metrics pipeline and its faults: a real Celery worker, its task events,
row locks that pause it mid-task, a refused or hanging broker for the publisher, a hanging
TCP server, and the end-of-test stats check.

A pytest plugin (registered in the root conftest.py), so that tests in every directory share
one worker per session: ``tests/`` runs the fault matrix with it.

Tests marked ``worker`` need PostgreSQL and a Redis broker (DATABASE_URL, CELERY_BROKER_URL).
Without them they are skipped on a developer machine, and fail when CI is set: in CI
nothing may be skipped.
"""

import contextlib
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings

from elections.models import Constituency, Transaction
from metrics.models import HourlyStats
from metrics.tests import reference

ROOT = Path(__file__).resolve().parents[2]
WORKER_START_TIMEOUT = 30.0
IDLE_TIMEOUT = 30.0


def worker_environment_missing() -> str | None:
    """Why the real-worker tests cannot run here, or None if they can."""
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        return "DATABASE_URL is not PostgreSQL"
    if not os.environ.get("CELERY_BROKER_URL", "").startswith("redis://"):
        return "CELERY_BROKER_URL (Redis) is not set"
    return None


def require_worker_environment() -> None:
    """Skip here, fail in CI (where nothing may be skipped)."""
    missing = worker_environment_missing()
    if missing is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"needs PostgreSQL/Redis in CI: {missing}", pytrace=False)
    pytest.skip(f"needs a real worker: {missing} (set DATABASE_URL=postgres://..., CELERY_BROKER_URL=redis://...)")


@pytest.fixture(autouse=True)
def _worker_tests_need_services(request):
    if request.node.get_closest_marker("worker") is not None:
        require_worker_environment()


def test_database_url() -> str:
    """A DATABASE_URL for pytest-django's test database (read after it was created)."""
    from django.db import connection

    s = connection.settings_dict
    auth = quote(s["USER"] or "", safe="")
    if s.get("PASSWORD"):
        auth += ":" + quote(s["PASSWORD"], safe="")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


test_database_url.__test__ = False


class WorkerProcess:
    """``celery -A election_monitor worker`` as a subprocess, on the test database."""

    def __init__(self, database_url: str, log_path: Path):
        from election_monitor.celery import app

        self.app = app
        self.database_url = database_url
        self.log_path = log_path
        self.name = f"pytest-{os.getpid()}@{socket.gethostname()}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**os.environ, "DATABASE_URL": self.database_url, "DJANGO_SETTINGS_MODULE": "election_monitor.settings"}
        command = [
            sys.executable, "-m", "celery", "-A", "election_monitor", "worker",
            "--pool=prefork", "--concurrency=1", "-Q", "celery", "-n", self.name,
            "--without-heartbeat", "--without-gossip", "--without-mingle",
            "-E", "--loglevel=INFO",
        ]  # fmt: skip
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the subprocess
        # Its own process group, so a kill -9 takes the pool child with it.
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + WORKER_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the worker exited with {self.process.returncode}:\n{self.log_tail()}")
            if self.app.control.ping(destination=[self.name], timeout=0.5):
                return
        self.kill()
        raise RuntimeError(f"the worker did not answer a ping in {WORKER_START_TIMEOUT}s:\n{self.log_tail()}")

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """kill -9 the worker and its pool: no shutdown, no acks, no message restored."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if not self.alive:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()

    def restart(self) -> None:
        self.kill()
        self.start()

    def pool_pids(self) -> list[int]:
        stats = self.app.control.inspect(destination=[self.name], timeout=2).stats() or {}
        return list(stats.get(self.name, {}).get("pool", {}).get("processes", []))

    def wait_idle(self, timeout: float = IDLE_TIMEOUT) -> None:
        """Until nothing is queued, held for a countdown or running. With acks_late a
        message stays in Redis's ``unacked`` hash until its task has finished."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.app.connection_for_write() as connection:
                client = connection.default_channel.client
                if client.llen("celery") == 0 and client.hlen("unacked") == 0:
                    return
            time.sleep(0.1)
        raise AssertionError(f"the worker is still busy after {timeout}s:\n{self.log_tail()}")

    def purge(self) -> None:
        """Drop queued messages, and the unacknowledged ones a killed worker left behind (Redis
        would redeliver them after the visibility timeout, in some later test)."""
        self.app.control.purge()
        with self.app.connection_for_write() as connection:
            connection.default_channel.client.delete("unacked", "unacked_index")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@pytest.fixture(scope="session")
def worker_process(django_db_setup, django_db_blocker, tmp_path_factory):
    """One worker for the session, pointed at pytest-django's test database."""
    require_worker_environment()
    with django_db_blocker.unblock():
        database_url = test_database_url()
    worker = WorkerProcess(database_url, tmp_path_factory.mktemp("worker") / "worker.log")
    worker.start()
    yield worker
    # Before pytest-django drops the test database, which fails while we are connected.
    worker.stop()


@pytest.fixture
def worker(worker_process):
    """The running worker (restarted if a fault test killed it), with an empty queue
    before the test and nothing left running after it."""
    if not worker_process.alive:
        worker_process.start()
    worker_process.purge()
    yield worker_process
    if worker_process.alive:
        worker_process.wait_idle()
    worker_process.purge()


class TaskEvents:
    """Counts the worker's task events (``-E``) by task name, as a monitoring tool would."""

    def __init__(self, app, node: str):
        self.app, self.node = app, node
        self.names: dict[str, str] = {}
        self.started: Counter = Counter()
        self.failed: list[dict] = []
        self.ready = threading.Event()
        self.lock = threading.Lock()
        self.receiver = None
        self.error: Exception | None = None

    def _on_event(self, event):
        kind = event.get("type", "")
        with self.lock:
            if event.get("hostname") == self.node:
                self.ready.set()
            if kind == "task-received":
                self.names[event["uuid"]] = event["name"]
            elif kind == "task-started":
                self.started[self.names.get(event["uuid"], "?")] += 1
            elif kind == "task-failed":
                self.failed.append(event)

    def _run(self):
        try:
            with self.app.connection_for_read() as connection:
                self.receiver = self.app.events.Receiver(connection, handlers={"*": self._on_event})
                self.receiver.capture(limit=None, timeout=None, wakeup=True)
        except Exception as error:
            self.error = error
            self.ready.set()

    def __enter__(self):
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        # Subtle: Redis subscribes to the event fanout lazily, so the first heartbeat can
        # come before we listen; ask again until one arrives.
        deadline = time.monotonic() + 10
        while not self.ready.wait(0.5) and time.monotonic() < deadline:
            self.app.control.broadcast("heartbeat", destination=[self.node])
        if not self.ready.is_set():
            raise AssertionError("no event from the worker within 10s (is it running with -E?)")
        if self.error is not None:
            raise self.error
        return self

    def __exit__(self, *exc):
        if self.receiver is not None:
            self.receiver.should_stop = True
        self.thread.join(5)

    def count(self, name: str) -> int:
        with self.lock:
            return self.started[name]


@pytest.fixture
def task_events(worker):
    with TaskEvents(worker.app, worker.name) as events:
        yield events


class RowLock:
    """A row lock held from a second connection, to pause a worker at a chosen point.

    ``FOR NO KEY UPDATE`` blocks the pipeline's locks and updates of the row but not the
    ``KEY SHARE`` that inserting transactions takes through their foreign keys, so ingest
    keeps working while the worker waits.
    """

    def __init__(self, database_url: str):
        import psycopg

        self.connection = psycopg.connect(database_url)
        self.database = self.connection.info.dbname

    def hold(self, table: str, pk: int) -> None:
        self.connection.execute(f"SELECT 1 FROM {table} WHERE id = %s FOR NO KEY UPDATE", [pk])

    def release(self) -> None:
        self.connection.rollback()

    def wait_for_waiter(self, timeout: float = 15.0) -> None:
        """Until another backend of the test database is blocked on a lock."""
        deadline = time.monotonic() + timeout
        with self._observer() as observer:
            while time.monotonic() < deadline:
                row = observer.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
                    [self.database],
                ).fetchone()
                if row[0]:
                    return
                time.sleep(0.05)
        raise AssertionError(f"nothing blocked on the lock within {timeout}s")

    def _observer(self):
        import psycopg

        return psycopg.connect(self.connection.info.dsn, autocommit=True)

    def close(self) -> None:
        self.connection.close()


@pytest.fixture
def row_lock(worker):
    lock = RowLock(worker.database_url)
    yield lock
    lock.close()


def closed_port() -> int:
    """A port on 127.0.0.1 that nobody listens on: connecting there is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class HangingListener:
    """Accepts every connection, reads whatever is sent, never answers: a Redis or broker
    that hangs instead of refusing."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.setblocking(False)
        self.port = self.server.getsockname()[1]
        self.accepted = 0
        self.received = 0
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.server, selectors.EVENT_READ)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.05):
                if key.fileobj is self.server:
                    client, _ = self.server.accept()
                    client.setblocking(False)
                    self.accepted += 1
                    self._selector.register(client, selectors.EVENT_READ)
                else:
                    try:
                        data = key.fileobj.recv(65536)
                    except OSError:
                        data = b""
                    if data:
                        self.received += len(data)
                    else:
                        self._selector.unregister(key.fileobj)
                        key.fileobj.close()

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def close(self):
        self._stop.set()
        self._thread.join()
        for key in list(self._selector.get_map().values()):
            key.fileobj.close()
        self._selector.close()


@pytest.fixture
def hanging():
    listener = HangingListener()
    yield listener
    listener.close()


def redis_cache_settings(url: str, *, timeout: float) -> dict:
    """A CACHES setting for the Redis at ``url``, with short socket timeouts (a fault's cost)."""
    return {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": url,
            "OPTIONS": {
                "CLIENT_CLASS": "django_redis.client.DefaultClient",
                "SOCKET_CONNECT_TIMEOUT": timeout,
                "SOCKET_TIMEOUT": timeout,
            },
        }
    }


class BrokerOutage:
    """Points this process's publisher at a broker that fails for real: a closed port
    (connection refused, ``start``) or a server that accepts and never answers (``hang``),
    while the worker keeps its own connection."""

    def __init__(self):
        from election_monitor.celery import app

        self.app = app
        self.original = app.conf.get("broker_write_url"), app.conf.broker_transport_options

    def _publish_to(self, url: str | None, transport_options: dict) -> None:
        # Subtle: the broker_url setting loses to the CELERY_BROKER_URL environment variable;
        # broker_write_url (the publishing side) does not.
        self.app.conf["broker_write_url"] = url
        self.app.conf.broker_transport_options = transport_options
        # The connection and producer pools were built for the old URL.
        self.app._pool = None
        self.app.amqp._producer_pool = None

    def start(self) -> None:
        self._publish_to(f"redis://127.0.0.1:{closed_port()}/0", self.original[1])

    def hang(self, listener: HangingListener, *, timeout: float) -> None:
        options = {**self.original[1], "socket_timeout": timeout, "socket_connect_timeout": timeout}
        self._publish_to(listener.url(), options)

    def end(self) -> None:
        self._publish_to(*self.original)


@pytest.fixture
def broker_outage(worker):
    outage = BrokerOutage()
    yield outage
    outage.end()


def assert_stats_match_transactions(election) -> None:
    """Every HourlyStats row and every constituency total equals a recount from the
    transactions, done here by the independent reference (velocities aside: they depend
    on when the row was computed)."""
    from metrics.pipeline import stale_buckets_find

    stale = stale_buckets_find(election_id=election.id)
    assert stale == set(), f"{len(stale)} buckets disagree with their transactions, e.g. {sorted(stale)[:3]}"

    election.refresh_from_db()
    voters = dict(Constituency.objects.filter(election=election).values_list("id", "registered_voters"))
    ref_election = reference.RefElection(
        tz=election.timezone, starts_at=election.starts_at, ends_at=election.ends_at, registered=voters
    )
    ref_election.transactions = list(
        Transaction.objects.filter(election=election).values_list("tx_hash", "constituency_id", "kind", "timestamp")
    )
    expected = reference.compute(ref_election, now=election.ends_at)

    stored = {
        (r["constituency_id"], r["hour"]): r
        for r in HourlyStats.objects.filter(election=election).values(
            "constituency_id", "hour", "bulletins_issued", "votes_cast", "transaction_count",
            "participation_rate", "anomaly_count",
        )
    }  # fmt: skip
    assert stored.keys() == expected["hourly"].keys()
    for key, want in expected["hourly"].items():
        got = stored[key]
        for name in ("bulletins_issued", "votes_cast", "transaction_count", "anomaly_count"):
            assert got[name] == want[name], f"{name} of {key}: {got[name]} != {want[name]}"
        assert got["participation_rate"] == pytest.approx(want["participation_rate"]), key

    for c in Constituency.objects.filter(election=election):
        want = expected["constituencies"][c.id]
        for name in ("total_bulletins_issued", "total_votes_cast", "total_transactions", "total_anomalies"):
            assert getattr(c, name) == want[name], f"{name} of constituency {c.id}"
        assert c.participation_rate == pytest.approx(want["participation_rate"])
        assert c.anomaly_score == pytest.approx(want["anomaly_score"])


@pytest.fixture
def stats_match():
    return assert_stats_match_transactions


def wait_until(predicate, *, timeout: float = 15.0, interval: float = 0.1, message: str = "condition"):
    """Poll until ``predicate()`` is truthy; the worker runs in another process."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{message} not reached within {timeout}s")


@pytest.fixture
def poll():
    return wait_until
