"""Coherent readers: a change committed by one process is what a server running in another
process answers within the freshness bound, on the embedded default and on PostgreSQL + Redis,
also when the new figures version never reaches the cache (metrics/cache.py, README "How it
stays correct").

Every process is real: a server (runserver on the embedded default, gunicorn with two workers on
PostgreSQL), ``manage.py import_transactions`` as the writer and, on PostgreSQL, the Celery
worker. The bound is METRICS_VERSION_RECHECK_SECONDS, counted from a moment known to be after
the recompute committed: every request sent later must answer the new figures. Nothing else
about time is asserted. On the embedded default every publish from another process is lost by
construction (local memory is private to its process), so the first test is also the failed
invalidation there; on Redis the publish is made to fail on purpose.
"""

import csv
import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from django.conf import settings

from elections.models import Transaction
from elections.services import TransactionRow, transactions_ingest
from elections.tests.factories import ConstituencyFactory, ElectionFactory
from metrics.cache import election_version_stored, metrics_cache
from metrics.tests.fixtures import test_database_url

ROOT = Path(__file__).resolve().parents[2]
SERVER_START_TIMEOUT = 60.0
POLL_INTERVAL = 0.05
# How long past the bound we keep asking for an answer at all (a loaded machine computes slowly);
# correctness is judged on the requests sent after the bound, not on this.
ANSWER_TIMEOUT = 15.0
READS_AFTER_BOUND = 8  # answers to requests sent after the bound, spread over the server's workers
NEW_TRANSACTIONS = 60
SERVICE_VARIABLES = ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "CACHE_KEY_PREFIX", "DJANGO_SETTINGS_MODULE")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Answer:
    sent_at: float  # time.monotonic() when the request was sent
    status: int
    etag: str | None
    body: dict | None


class Server:
    """A server process on a free port, stopped with its whole process group."""

    def __init__(self, argv: list[str], *, env: dict, log_path: Path, port: int):
        self.port, self.log_path = port, log_path
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if self.get("/api/").status == 200:
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the server did not answer within {SERVER_START_TIMEOUT}s:\n{self.log_tail()}")

    @classmethod
    def runserver(cls, *, env: dict, log_path: Path) -> "Server":
        port = free_port()
        argv = [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"]
        return cls(argv, env=env, log_path=log_path, port=port)

    @classmethod
    def gunicorn(cls, *, env: dict, log_path: Path, workers: int = 2) -> "Server":
        port = free_port()
        argv = [sys.executable, "-m", "gunicorn", "election_monitor.wsgi:application"]
        argv += ["--bind", f"127.0.0.1:{port}", "--workers", str(workers), "--timeout", "60"]
        return cls(argv, env=env, log_path=log_path, port=port)

    def get(self, path: str, *, if_none_match: str | None = None) -> Answer:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}")
        if if_none_match:
            request.add_header("If-None-Match", if_none_match)
        sent_at = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, etag, raw = response.status, response.headers.get("ETag"), response.read()
        except urllib.error.HTTPError as error:
            status, etag, raw = error.code, error.headers.get("ETag"), error.read()
        body = json.loads(raw) if raw and status == 200 else None
        return Answer(sent_at=sent_at, status=status, etag=etag, body=body)

    def get_json(self, path: str) -> dict:
        answer = self.get(path)
        assert answer.status == 200, (path, answer.status)
        return answer.body

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait(timeout=15)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def manage(*args: str, env: dict) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"manage.py {' '.join(args)} exited {result.returncode}:\n{result.stderr[-3000:]}"
    return result


def process_env(**overrides: str) -> dict:
    """This process's environment without its service settings, plus ``overrides``: the
    embedded default unless they name a database, a cache or a broker."""
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}
    env["METRICS_VERSION_RECHECK_SECONDS"] = str(settings.METRICS_VERSION_RECHECK_SECONDS)
    env.update(overrides)
    return env


def transactions_csv_write(path: Path, *, codes: list[str], ends_at: datetime, prefix: str) -> Counter:
    """NEW_TRANSACTIONS rows in the last hour of voting, spread over ``codes``; the count by kind."""
    kinds = Counter()
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["tx_hash", "constituency", "kind", "timestamp"])
        for i in range(NEW_TRANSACTIONS):
            kind = ("bulletin_issued", "vote_cast")[i % 2]
            timestamp = ends_at - timedelta(minutes=50) + timedelta(seconds=37 * i)
            writer.writerow([f"{prefix}-{i:04d}", codes[i % len(codes)], kind, timestamp.isoformat()])
            kinds[kind] += 1
    return kinds


def totals(body: dict) -> tuple[int, int, int]:
    return body["total_transactions"], body["total_bulletins_issued"], body["total_votes_cast"]


def new_totals_expected(before: Answer, new: Counter) -> tuple[int, int, int]:
    return (
        before.body["total_transactions"] + sum(new.values()),
        before.body["total_bulletins_issued"] + new["bulletin_issued"],
        before.body["total_votes_cast"] + new["vote_cast"],
    )


def cached_answer(server: Server, path: str) -> Answer:
    """The server's answer once it is cached: two reads in a row with the same ETag (an ETag
    is minted with each computation, so the second read was a cache hit)."""
    first = server.get(path)
    for _ in range(20):
        again = server.get(path)
        assert first.status == again.status == 200, (first.status, again.status)
        if again.etag == first.etag:
            return again
        first = again
    raise AssertionError(f"{path} never answered from the cache")


class Readers:
    """Reads ``paths`` round-robin from a thread for as long as it runs, as dashboards polling
    the server would, so the server's memo of the version is fresh when the change commits."""

    def __init__(self, server: Server, paths: list[str]):
        self.server, self.paths = server, paths
        self.answers: dict[str, list[Answer]] = {path: [] for path in paths}
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            while not self.stopping.is_set():
                for path in self.paths:
                    self.answers[path].append(self.server.get(path))
                time.sleep(POLL_INTERVAL)
        except BaseException as error:  # reported by the test's thread
            self.error = error

    def __enter__(self) -> "Readers":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.thread.join(timeout=60)

    def read_past(self, moment: float, reads: int = READS_AFTER_BOUND) -> None:
        """Until every path has ``reads`` answers to requests sent after ``moment``."""
        deadline = moment + ANSWER_TIMEOUT
        while min(sum(a.sent_at > moment for a in answers) for answers in self.answers.values()) < reads:
            assert self.error is None, self.error
            assert self.thread.is_alive(), "the reader stopped"
            assert time.monotonic() < deadline, f"fewer than {reads} answers within {ANSWER_TIMEOUT}s of the bound"
            time.sleep(POLL_INTERVAL)


def assert_fresh_within_bound(readers: Readers, path: str, *, is_new, committed_by: float, bound: float) -> None:
    """Every answer a 200, never a 500, also while the writer worked; every request sent more
    than ``bound`` seconds after ``committed_by`` answered the new figures (``is_new(body)``)."""
    readers.read_past(committed_by + bound)
    answers = list(readers.answers[path])
    failed = [a.status for a in answers if a.status != 200]
    assert failed == [], f"{path} answered {failed} while the figures changed:\n{readers.server.log_tail()}"
    stale = [a for a in answers if a.sent_at > committed_by + bound and not is_new(a.body)]
    assert stale == [], (
        f"{len(stale)} requests sent more than {bound}s after the commit answered old figures, e.g. "
        f"{totals(stale[0].body)} sent {stale[0].sent_at - committed_by:.2f}s after it"
    )
    assert any(a.sent_at <= committed_by for a in answers), "no read ran while the writer worked"


def etag_changed_and_old_one_is_refused(server: Server, path: str, *, before: Answer) -> Answer:
    now = server.get(path)
    assert now.status == 200
    assert now.etag != before.etag
    revalidated = server.get(path, if_none_match=before.etag)
    assert revalidated.status == 200, "the old ETag must not be answered with 304 Not Modified"
    return now


# --- embedded default: SQLite file, local-memory cache, eager Celery -------------------------------


def sqlite_counts(path: Path, election_id: int) -> tuple[int, int, int]:
    """(all, bulletins, votes) of the election, counted in the database file itself."""
    with sqlite3.connect(path) as connection:
        by_kind = dict(
            connection.execute(
                "SELECT kind, COUNT(*) FROM elections_transaction WHERE election_id = ? GROUP BY kind", [election_id]
            ).fetchall()
        )
    return sum(by_kind.values()), by_kind.get("bulletin_issued", 0), by_kind.get("vote_cast", 0)


def test_an_import_in_another_process_reaches_a_running_server_on_the_embedded_default(tmp_path):
    """The bug of the demo: ``./scripts/demo`` serving, ``import_transactions`` in a second
    terminal. The election is closed, so without a version from the database the server would
    keep the old totals and ETag for a day."""
    database = tmp_path / "db.sqlite3"
    env = process_env(DATABASE_URL=f"sqlite:///{database}")
    manage("migrate", "--no-input", env=env)
    manage("seed_demo", "--constituencies", "8", "--transactions", "4000", env=env)

    server = Server.runserver(env=env, log_path=tmp_path / "server.log")
    try:
        (election,) = server.get_json("/api/elections/")["results"]
        constituencies = server.get_json(f"/api/constituencies/?election={election['id']}&page_size=100")["results"]
        paths = [f"/api/metrics/election/{election['id']}/", "/api/metrics/dashboard/summary/"]
        before = {path: cached_answer(server, path) for path in paths}
        assert before[paths[0]].body["status"] == "closed"
        assert totals(before[paths[0]].body) == sqlite_counts(database, election["id"])
        new = transactions_csv_write(
            tmp_path / "new.csv",
            codes=[c["code"] for c in constituencies],
            ends_at=datetime.fromisoformat(election["ends_at"]),
            prefix="coherence-embedded",
        )
        expected = new_totals_expected(before[paths[0]], new)

        with Readers(server, paths) as readers:
            manage("import_transactions", str(tmp_path / "new.csv"), "--election", election["code"], env=env)
            committed_by = time.monotonic()  # the command has exited: its recompute committed
            for path in paths:
                assert_fresh_within_bound(
                    readers,
                    path,
                    is_new=lambda body: totals(body) == expected,
                    committed_by=committed_by,
                    bound=settings.METRICS_VERSION_RECHECK_SECONDS,
                )
        for path in paths:
            etag_changed_and_old_one_is_refused(server, path, before=before[path])
    finally:
        server.stop()
    # Nothing lost: the figures are the transactions the database holds, the new ones included.
    assert sqlite_counts(database, election["id"]) == expected


# --- PostgreSQL + Redis: gunicorn, the import command and a real Celery worker ---------------------


def redis_cache_required() -> None:
    """Skip here, fail in CI (where nothing may be skipped), as the worker tests do."""
    if os.environ.get("REDIS_URL", "").startswith("redis://"):
        return
    if os.environ.get("CI"):
        pytest.fail("needs the Redis cache in CI: REDIS_URL is not set", pytrace=False)
    pytest.skip("needs a shared Redis cache (set REDIS_URL=redis://...)")


@pytest.fixture
def postgres_election(transactional_db, worker, poll):
    """A closed election whose figures the worker computed, committed for other processes."""
    redis_cache_required()
    election = ElectionFactory(code="coherence", timezone="Europe/Moscow")
    constituencies = ConstituencyFactory.create_batch(6, election=election, registered_voters=500)
    rows = [
        TransactionRow(
            f"coherence-setup-{i:04d}",
            election.id,
            constituencies[i % 6].id,
            ("bulletin_issued", "vote_cast")[i % 2],
            election.starts_at + timedelta(minutes=7 * i),
            None,
        )
        for i in range(300)
    ]
    transactions_ingest(rows=rows)
    poll(lambda: election_version_stored(election.id), message="the worker's first recompute")
    worker.wait_idle()
    return election


@pytest.fixture
def postgres_server(postgres_election, tmp_path):
    server = Server.gunicorn(
        env=postgres_env(CELERY_BROKER_URL=os.environ["CELERY_BROKER_URL"]), log_path=tmp_path / "server.log"
    )
    yield server
    server.stop()  # before pytest-django empties the tables


def postgres_counts(election) -> tuple[int, int, int]:
    by_kind = Counter(Transaction.objects.filter(election=election).values_list("kind", flat=True))
    return sum(by_kind.values()), by_kind["bulletin_issued"], by_kind["vote_cast"]


def postgres_env(**overrides: str) -> dict:
    shared = {
        "DATABASE_URL": test_database_url(),
        "REDIS_URL": os.environ["REDIS_URL"],
        "CACHE_KEY_PREFIX": settings.CACHES["default"].get("KEY_PREFIX", ""),
    }
    return process_env(**{**shared, **overrides})


def published_version(election_id: int):
    """The version a recompute published into the shared cache (None if none did)."""
    return metrics_cache.get(metrics_cache._version_key(election_id))


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_an_import_in_another_process_reaches_every_server_worker_on_postgres_and_redis(
    postgres_election, postgres_server, worker, poll, stats_match, tmp_path
):
    """The production shape: the command stores, the Celery worker recomputes and publishes
    the new version into Redis, and both gunicorn workers answer the new figures: within the
    bound of the commit, and at once for every election read sent after the publish."""
    election, server = postgres_election, postgres_server
    paths = [f"/api/metrics/election/{election.id}/", "/api/metrics/dashboard/summary/"]
    before = {path: cached_answer(server, path) for path in paths}
    assert before[paths[0]].body["status"] == "closed"
    version_before = election_version_stored(election.id)
    assert published_version(election.id) == version_before
    new = transactions_csv_write(
        tmp_path / "new.csv",
        codes=list(election.constituencies.values_list("code", flat=True)),
        ends_at=election.ends_at,
        prefix="coherence-redis",
    )
    expected = new_totals_expected(before[paths[0]], new)

    with Readers(server, paths) as readers:
        env = postgres_env(CELERY_BROKER_URL=os.environ["CELERY_BROKER_URL"])
        manage("import_transactions", str(tmp_path / "new.csv"), "--election", election.code, env=env)
        # The worker's recompute has committed once the stored version moved.
        poll(lambda: (election_version_stored(election.id) or 0) > version_before, message="the worker's recompute")
        committed_by = time.monotonic()
        for path in paths:
            assert_fresh_within_bound(
                readers,
                path,
                is_new=lambda body: totals(body) == expected,
                committed_by=committed_by,
                bound=settings.METRICS_VERSION_RECHECK_SECONDS,
            )
        # Once the new version is in Redis, election reads see it without waiting for their
        # memo of the stored version (dashboards compare a fingerprint of the database's only).
        poll(lambda: (published_version(election.id) or 0) > version_before, message="the worker's publish")
        assert_fresh_within_bound(
            readers,
            paths[0],
            is_new=lambda body: totals(body) == expected,
            committed_by=time.monotonic(),
            bound=0.0,
        )
    worker.wait_idle()
    assert published_version(election.id) == election_version_stored(election.id)
    for path in paths:
        etag_changed_and_old_one_is_refused(server, path, before=before[path])
    assert postgres_counts(election) == expected
    stats_match(election)


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "writer_fault",
    [
        pytest.param(
            {"DJANGO_SETTINGS_MODULE": "metrics.tests.settings_version_publish_fails"}, id="version-key-refused"
        ),
        pytest.param({"REDIS_URL": "closed port"}, id="cache-unreachable"),
    ],
)
def test_a_failed_version_publish_leaves_readers_stale_no_longer_than_the_bound(
    writer_fault, postgres_election, postgres_server, stats_match, tmp_path
):
    """The writer's recompute commits but its publish of the new version into Redis fails
    (Redis refuses that one key, or the writer cannot reach Redis at all). The readers' cached
    entries and the published version are still the old ones: the servers must find the new
    version in the database within the bound, answer 200 throughout, and count every
    transaction."""
    election, server = postgres_election, postgres_server
    paths = [f"/api/metrics/election/{election.id}/", "/api/metrics/dashboard/summary/"]
    before = {path: cached_answer(server, path) for path in paths}
    version_before = election_version_stored(election.id)
    assert published_version(election.id) == version_before
    new = transactions_csv_write(
        tmp_path / "new.csv",
        codes=list(election.constituencies.values_list("code", flat=True)),
        ends_at=election.ends_at,
        prefix="coherence-fault",
    )
    expected = new_totals_expected(before[paths[0]], new)
    fault = {k: f"redis://127.0.0.1:{free_port()}/0" if v == "closed port" else v for k, v in writer_fault.items()}

    with Readers(server, paths) as readers:
        # No broker: the command recomputes in its own process (eagerly), where the fault is.
        result = manage(
            "import_transactions", str(tmp_path / "new.csv"), "--election", election.code, env=postgres_env(**fault)
        )
        committed_by = time.monotonic()
        # The fault happened: the recompute committed a new version, the cache has the old one.
        assert election_version_stored(election.id) > version_before
        assert published_version(election.id) == version_before
        assert f"cache set failed for metrics:election:{election.id}:version" in result.stderr
        for path in paths:
            assert_fresh_within_bound(
                readers,
                path,
                is_new=lambda body: totals(body) == expected,
                committed_by=committed_by,
                bound=settings.METRICS_VERSION_RECHECK_SECONDS,
            )
    for path in paths:
        etag_changed_and_old_one_is_refused(server, path, before=before[path])
    assert postgres_counts(election) == expected
    stats_match(election)
