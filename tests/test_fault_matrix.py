"""The fault matrix (README, "Reliability"): real writes through the real API and the real
pipeline while one service fails, then recovery, then one final assertion for every fault:
nothing lost, nothing double-counted.

Each test keeps a ledger of what the API answered a client: every transaction it accepted
(201, or 200 for one already stored) and the status of every request. After recovery,
``assert_nothing_lost_nothing_double_counted`` checks that

- no request was answered 5xx, except those a test declares (the database itself gone
  mid-request), each a JSON 503 asking for a resend;
- the stored transactions are exactly the accepted ones, with the content sent: none
  missing, none stored from a refused request, none twice;
- no dirty mark is left, every HourlyStats row and constituency total equals an independent
  recount of the transactions (metrics/tests/reference.py), and the totals equal the
  ledger's own counts;
- the metrics API answers those totals (a cache entry from before the fault is not served).

Faults are real: a killed worker (kill -9), a closed port, a TCP server that accepts and
never answers, a terminated PostgreSQL backend. Mocks only place the fault (which
connection, at which point); the database, cache and broker are never replaced. Tests
marked ``worker`` need PostgreSQL, a Redis broker and a real worker (the PostgreSQL run of
CI); the cache faults also run with eager tasks on both backends.
"""

import time
from collections import Counter
from datetime import timedelta

import psycopg
import pytest
from django.db import connection
from django.db.models import Sum
from django.db.models.signals import post_save
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from elections.models import Constituency, IngestBatch, Transaction
from elections.services import parse_aware_datetime, tx_hash_canonical
from elections.signals import buckets_changed
from elections.tests.factories import VOTING_STARTS, ConstituencyFactory, ElectionFactory
from metrics import pipeline
from metrics.cache import MetricsCache
from metrics.models import DirtyBucket, HourlyStats
from metrics.tests.fixtures import (
    assert_stats_match_transactions,
    closed_port,
    redis_cache_settings,
    test_database_url,
    wait_until,
)

pytestmark = pytest.mark.django_db(transaction=True)

TRANSACTIONS_URL = "/api/transactions/"
SOCKET_TIMEOUT = 0.3  # what a fault costs a call before the circuit breaker opens
KINDS = ("bulletin_issued", "vote_cast")
PIPELINES = [pytest.param("eager", id="eager"), pytest.param("worker", marks=pytest.mark.worker, id="worker")]


class Ledger:
    """What the API told a client: each request's label and status, and every transaction
    it accepted, as sent."""

    def __init__(self, election, constituencies, *, token: str):
        self.election = election
        self.constituency_ids = [c.id for c in constituencies]
        self.worker = None  # None: tasks run eagerly, in the request
        self.client = APIClient(raise_request_exception=False)  # a 500 is an answer, as over HTTP
        self.client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        self.reader = APIClient(raise_request_exception=False)  # anonymous
        self.answers: list[tuple[str, int, float]] = []  # label, status, seconds
        self.accepted: dict[str, tuple[int, str, object]] = {}
        self.sent: dict[str, list[dict]] = {}
        self._serial = 0

    def items(self, label: str, n: int) -> list[dict]:
        """``n`` new transactions over every constituency, both kinds and twelve hours."""
        made = []
        for _ in range(n):
            self._serial += 1
            i = self._serial
            tx_hash = f"fm-{label}-{i}"
            assert tx_hash_canonical(tx_hash) == tx_hash
            made.append(
                {
                    "tx_hash": tx_hash,
                    "constituency": self.constituency_ids[i % len(self.constituency_ids)],
                    "kind": KINDS[(i // len(self.constituency_ids)) % 2],
                    "timestamp": (VOTING_STARTS + timedelta(minutes=(i * 13) % 720)).isoformat(),
                }
            )
        self.sent[label] = made
        return made

    def post(self, label: str, items: list[dict], *, single: bool = False):
        assert not single or len(items) == 1
        started = time.monotonic()
        response = self.client.post(TRANSACTIONS_URL, items[0] if single else items, format="json")
        self.answers.append((label, response.status_code, time.monotonic() - started))
        if response.status_code in (200, 201):
            for item in items:
                self.accepted[item["tx_hash"]] = (
                    item["constituency"],
                    item["kind"],
                    parse_aware_datetime(item["timestamp"]),
                )
        return response

    def write(self, label: str, *, singles: int = 3, batch: int = 60) -> None:
        """A few one-object posts and one list, each answered 201."""
        for n, item in enumerate(self.items(f"{label}-single", singles)):
            response = self.post(f"{label}-single-{n}", [item], single=True)
            assert response.status_code == 201, (label, response.status_code, response.content)
        response = self.post(label, self.items(label, batch))
        assert response.status_code == 201, (label, response.status_code, response.content)
        assert response.json() == {"created": batch, "duplicates": 0}

    def resend(self, label: str) -> None:
        """A client that never saw an answer sends the same list again: duplicates, no rows."""
        items = self.sent[label]
        response = self.post(f"{label}-resent", items)
        assert response.status_code == 201, response.content
        assert response.json() == {"created": 0, "duplicates": len(items)}

    def read(self, label: str) -> dict:
        started = time.monotonic()
        response = self.reader.get(self.metrics_url)
        self.answers.append((f"{label}-read", response.status_code, time.monotonic() - started))
        assert response.status_code == 200, (label, response.status_code, response.content)
        return response.json()

    @property
    def metrics_url(self) -> str:
        return reverse("election-metrics", kwargs={"election_id": self.election.id})

    def expected_totals(self) -> dict:
        kinds = Counter(kind for _, kind, _ in self.accepted.values())
        return {
            "total_transactions": len(self.accepted),
            "total_votes_cast": kinds["vote_cast"],
            "total_bulletins_issued": kinds["bulletin_issued"],
        }

    def stored_totals(self) -> dict:
        sums = Constituency.objects.filter(election=self.election).aggregate(
            total_transactions=Sum("total_transactions"),
            total_votes_cast=Sum("total_votes_cast"),
            total_bulletins_issued=Sum("total_bulletins_issued"),
        )
        return {name: value or 0 for name, value in sums.items()}

    def figures(self) -> str:
        writes = [(label, code, took) for label, code, took in self.answers if not label.endswith("-read")]
        return (
            f"\n{len(self.answers)} requests ({len(writes)} writes), {len(self.accepted)} transactions accepted, "
            f"{sum(code >= 500 for _, code, _ in self.answers)} answered 5xx, "
            f"slowest write {max(took for _, _, took in writes):.2f}s, slowest read "
            f"{max(took for label, _, took in self.answers if label.endswith('-read')):.2f}s"
        )

    def marks_left(self) -> bool:
        return DirtyBucket.objects.filter(election_id=self.election.id).exists()

    def settle(self) -> None:
        """Until the pipeline has counted everything accepted (at once with eager tasks)."""
        want = self.expected_totals()
        wait_until(
            lambda: not self.marks_left() and self.stored_totals() == want,
            timeout=20,
            message=f"the pipeline counting {want['total_transactions']} transactions",
        )
        if self.worker is not None:
            self.worker.wait_idle()


@pytest.fixture
def ledger(ingest_user):
    """A past election (it takes late data) with six constituencies, and a client ledger."""
    election = ElectionFactory(code="fault-matrix")
    constituencies = ConstituencyFactory.create_batch(6, election=election, registered_voters=500)
    return Ledger(election, constituencies, token=Token.objects.create(user=ingest_user).key)


def healthy_start(ledger: Ledger) -> dict:
    """Writes while every service is up, counted and read once, so that the metrics cache
    holds an entry from before the fault that recovery must not serve."""
    ledger.write("before")
    ledger.settle()
    body = ledger.read("before")
    assert body["total_transactions"] == len(ledger.accepted)
    return body


def assert_nothing_lost_nothing_double_counted(ledger: Ledger, *, server_errors: tuple[str, ...] = ()) -> None:
    """The final assertion of every fault (module docstring)."""
    answered_5xx = [(label, code) for label, code, _ in ledger.answers if code >= 500]
    assert answered_5xx == [(label, 503) for label in server_errors], answered_5xx

    stored = {
        tx_hash: (constituency_id, kind, timestamp)
        for tx_hash, constituency_id, kind, timestamp in Transaction.objects.filter(
            election=ledger.election
        ).values_list("tx_hash", "constituency_id", "kind", "timestamp")
    }
    missing = ledger.accepted.keys() - stored.keys()
    unasked = stored.keys() - ledger.accepted.keys()
    assert not missing, f"{len(missing)} accepted transactions are not stored, e.g. {sorted(missing)[:3]}"
    assert not unasked, f"{len(unasked)} stored transactions were never accepted, e.g. {sorted(unasked)[:3]}"
    assert stored == ledger.accepted

    assert not ledger.marks_left()
    assert_stats_match_transactions(ledger.election)
    want = ledger.expected_totals()
    assert ledger.stored_totals() == want
    assert HourlyStats.objects.filter(election=ledger.election).aggregate(n=Sum("transaction_count"))["n"] == len(
        stored
    )

    def api_answers_the_totals():
        body = ledger.read("final")
        return {name: body[name] for name in want} == want

    # A reader in another process may trail a recompute by METRICS_VERSION_RECHECK_SECONDS.
    wait_until(api_answers_the_totals, timeout=5, message="the metrics API answering the recounted totals")
    print(ledger.figures())  # the README's fault-matrix table (pytest -s)


# --- 1. worker killed mid-flush -------------------------------------------------------------------


@pytest.mark.worker
def test_worker_killed_mid_flush(ledger, worker, row_lock):
    ledger.worker = worker
    healthy_start(ledger)

    # The flush's first step locks the election row: holding it pauses the flush there.
    row_lock.hold("elections_election", ledger.election.id)
    ledger.write("mid-flush")
    row_lock.wait_for_waiter()
    worker.kill()  # kill -9 the worker and its pool process, mid-task
    row_lock.release()
    # Its unacknowledged message would come back only after the visibility timeout: lost.
    worker.purge()
    assert ledger.marks_left(), "the killed flush's transaction rolled back: its marks stay"

    ledger.write("worker-down")  # queued, nobody consumes
    ledger.read("worker-down")
    worker.start()
    ledger.resend("mid-flush")
    ledger.settle()

    assert_nothing_lost_nothing_double_counted(ledger)


# --- 2. and 3. broker refused, broker hung ---------------------------------------------------------


@pytest.mark.worker
def test_broker_refused(ledger, worker, broker_outage, settings):
    ledger.worker = worker
    before = healthy_start(ledger)

    broker_outage.start()  # this process publishes to a closed port
    ledger.write("broker-refused")
    assert ledger.read("broker-refused")["total_transactions"] == before["total_transactions"]
    assert ledger.marks_left(), "no flush could be queued: the marks wait in the database"

    broker_outage.end()
    settings.CIRCUIT_BREAKER_RESET_SECONDS = 0  # the breaker's interval has passed
    ledger.write("after")  # the next write queues a flush that takes every mark
    ledger.resend("broker-refused")
    ledger.settle()

    assert_nothing_lost_nothing_double_counted(ledger)


@pytest.mark.worker
def test_broker_hung(ledger, worker, broker_outage, hanging, settings):
    ledger.worker = worker
    before = healthy_start(ledger)

    broker_outage.hang(hanging, timeout=SOCKET_TIMEOUT)  # accepts, never answers
    ledger.write("broker-hung")
    assert hanging.accepted >= 1, "the publisher did reach the hanging broker"
    assert ledger.read("broker-hung")["total_transactions"] == before["total_transactions"]
    assert ledger.marks_left()

    broker_outage.end()
    settings.CIRCUIT_BREAKER_RESET_SECONDS = 0
    ledger.write("after")
    ledger.resend("broker-hung")
    ledger.settle()

    assert_nothing_lost_nothing_double_counted(ledger)


# --- 4. and 5. Redis cache refused, Redis cache hung -----------------------------------------------


def cache_fault(request, ledger, settings, location: str, pipeline_kind: str) -> None:
    """Writes and reads while this process's cache is the failing Redis at ``location``;
    then the cache comes back. With a worker, the worker keeps its own cache."""
    if pipeline_kind == "worker":
        ledger.worker = request.getfixturevalue("worker")
    healthy_start(ledger)

    working = settings.CACHES
    settings.CACHES = redis_cache_settings(location, timeout=SOCKET_TIMEOUT)
    assert MetricsCache().add("probe", 1, 5) is None, "the cache really fails"
    ledger.write("cache-down")
    ledger.read("cache-down")
    if ledger.worker is None:  # the flush ran in the request: readers see it at once
        assert ledger.read("cache-down-counted")["total_transactions"] == len(ledger.accepted)

    settings.CACHES = working
    settings.CIRCUIT_BREAKER_RESET_SECONDS = 0
    ledger.write("after")
    ledger.resend("cache-down")
    ledger.settle()


@pytest.mark.parametrize("pipeline_kind", PIPELINES)
def test_redis_cache_refused(request, ledger, settings, pipeline_kind):
    cache_fault(request, ledger, settings, f"redis://127.0.0.1:{closed_port()}/0", pipeline_kind)
    assert_nothing_lost_nothing_double_counted(ledger)


@pytest.mark.parametrize("pipeline_kind", PIPELINES)
def test_redis_cache_hung(request, ledger, settings, hanging, pipeline_kind):
    cache_fault(request, ledger, settings, hanging.url(), pipeline_kind)
    assert hanging.accepted >= 1, "the cache client did reach the hanging server"
    assert_nothing_lost_nothing_double_counted(ledger)


# --- 6. PostgreSQL connection dropped mid-request ---------------------------------------------------


def backend_terminate(pid: int) -> None:
    """Terminate a PostgreSQL backend from another connection, and wait until it is gone."""
    with psycopg.connect(test_database_url(), autocommit=True) as admin:
        (done,) = admin.execute("SELECT pg_terminate_backend(%s, 5000)", [pid]).fetchone()
    assert done, f"backend {pid} still running"


class DropOnce:
    """Armed, terminates the connection of the request in progress at the hook it is
    installed on, once."""

    def __init__(self):
        self.armed = False
        self.dropped = 0

    def __call__(self, *args, **kwargs) -> None:
        if not self.armed:
            return
        self.armed = False
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            (pid,) = cursor.fetchone()
        backend_terminate(pid)
        self.dropped += 1


@pytest.fixture(params=["before-the-dirty-marks", "before-commit"])
def drop_point(request, monkeypatch):
    """Where the write's database transaction loses its connection: after its rows were
    inserted but before the metrics side marks their buckets, or after the marks, when
    nothing is left but COMMIT (the last receiver of the write's announcement)."""
    drop = DropOnce()
    if request.param == "before-the-dirty-marks":
        mark = pipeline.buckets_mark_dirty

        def drop_then_mark(**kwargs):
            drop()
            return mark(**kwargs)

        monkeypatch.setattr(pipeline, "buckets_mark_dirty", drop_then_mark)
        yield drop
    else:
        # Connected after the metrics side's receivers, so these run after the marks.
        buckets_changed.connect(drop, dispatch_uid="fault-matrix-drop")
        post_save.connect(drop, sender=Transaction, dispatch_uid="fault-matrix-drop")
        yield drop
        buckets_changed.disconnect(dispatch_uid="fault-matrix-drop")
        post_save.disconnect(sender=Transaction, dispatch_uid="fault-matrix-drop")
    # A test that failed may leave the dropped connection behind; the next query reconnects.
    connection.close_if_unusable_or_obsolete()


def assert_dropped_request_answered_and_stored_nothing(ledger: Ledger, response, label: str) -> None:
    assert response.status_code == 503, response.content
    assert response["Retry-After"]
    assert "Send it again" in response.json()["detail"]
    hashes = [item["tx_hash"] for item in ledger.sent[label]]
    assert not Transaction.objects.filter(tx_hash__in=hashes).exists(), "all-or-nothing: nothing stored"
    assert not ledger.marks_left(), "nor its dirty marks"


@pytest.mark.worker
def test_postgresql_connection_dropped_mid_request(ledger, worker, drop_point):
    ledger.worker = worker
    healthy_start(ledger)
    batches = IngestBatch.objects.filter(election=ledger.election).count()

    drop_point.armed = True
    response = ledger.post("dropped-list", ledger.items("dropped-list", 60))
    assert_dropped_request_answered_and_stored_nothing(ledger, response, "dropped-list")
    drop_point.armed = True
    response = ledger.post("dropped-single", ledger.items("dropped-single", 1), single=True)
    assert_dropped_request_answered_and_stored_nothing(ledger, response, "dropped-single")
    assert drop_point.dropped == 2
    assert IngestBatch.objects.filter(election=ledger.election).count() == batches, "nor its batch record"

    # The client resends what was not acknowledged; the next request has a new connection.
    response = ledger.post("dropped-list-resent", ledger.sent["dropped-list"])
    assert response.json() == {"created": 60, "duplicates": 0}
    assert ledger.post("dropped-single-resent", ledger.sent["dropped-single"], single=True).status_code == 201
    ledger.write("after")
    ledger.settle()

    assert_nothing_lost_nothing_double_counted(ledger, server_errors=("dropped-list", "dropped-single"))


@pytest.mark.worker
def test_postgresql_connection_of_the_worker_dropped_mid_flush(ledger, worker, row_lock):
    """The flush task's connection dies while it waits for the election lock: the task
    fails with OperationalError and is retried (metrics/tasks.py), on a new connection."""
    ledger.worker = worker
    healthy_start(ledger)

    row_lock.hold("elections_election", ledger.election.id)
    ledger.write("mid-flush")
    row_lock.wait_for_waiter()
    with psycopg.connect(test_database_url(), autocommit=True) as observer:
        pids = [
            pid
            for (pid,) in observer.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ).fetchall()
        ]
    assert len(pids) == 1, pids
    backend_terminate(pids[0])
    row_lock.release()

    ledger.settle()  # no later write: only the task's own retry can count the batch

    assert_nothing_lost_nothing_double_counted(ledger)
