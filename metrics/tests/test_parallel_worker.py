"""Work spread over two real worker processes (PostgreSQL, Redis broker): the parts of a
parallel recompute run side by side and store what one process stores; flushes of two
elections run side by side, flushes of one election wait for each other on its row lock.
Pauses are row locks held from a second connection, never sleeps."""

import time
from datetime import timedelta

import pytest

from elections.services import TransactionRow, transactions_ingest
from elections.tests.factories import VOTING_STARTS, ConstituencyFactory, ElectionFactory
from metrics import parallel
from metrics.aggregation import Scope, metrics_recompute
from metrics.models import DirtyBucket, HourlyStats, RecomputeRun, RecomputeStage, RecomputeStep
from metrics.tests.fixtures import WorkerProcess
from metrics.tests.test_parallel import snapshot

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def second_worker(worker, tmp_path):
    """Another worker process on the same queue and database: two tasks run at once."""
    other = WorkerProcess(worker.database_url, tmp_path / "second-worker.log")
    other.name = f"pytest-second-{other.name}"
    other.start()
    try:
        yield other
        other.wait_idle()
    finally:
        other.stop()


def election_with_votes(code: str, *, constituencies: int = 9, spike_at: int = 4):
    """Votes over six hours in every constituency, ten times as many in one place and hour."""
    election = ElectionFactory(code=code)
    places = [
        ConstituencyFactory(election=election, code=f"p{i}", registered_voters=500) for i in range(constituencies)
    ]
    rows = []
    for i, place in enumerate(places):
        for hour in range(6):
            n = 30 if (i, hour) == (spike_at, 2) else 3
            for k in range(n):
                ts = VOTING_STARTS + timedelta(hours=hour, minutes=k)
                rows.append(TransactionRow(f"{code}-{i}-{hour}-{k}", election.id, place.id, "vote_cast", ts, None))
    transactions_ingest(rows=rows)
    return election, places


def test_parallel_parts_run_on_two_workers_and_store_what_one_process_stores(worker, second_worker, row_lock, poll):
    single, _ = election_with_votes("single")
    split, places = election_with_votes("split")
    poll(lambda: not DirtyBucket.objects.exists(), message="the ingest flushes done")
    now = VOTING_STARTS + timedelta(days=2)
    metrics_recompute(election_id=single.id, scope=Scope.election(), now=now)

    # The first part's last write is its constituencies' totals: holding one of those rows
    # pauses it there, while the other worker takes and finishes the next part.
    row_lock.hold("elections_constituency", places[0].id)
    run = parallel.election_recompute_start(election_id=split.id, part_size=3, now=now)
    row_lock.wait_for_waiter()
    poll(
        lambda: RecomputeStep.objects.filter(run=run, stage=RecomputeStage.PART, done_at__isnull=False).exists(),
        message="another part done while the first waits",
    )
    assert not RecomputeRun.objects.get(pk=run.pk).finished_at
    row_lock.release()

    poll(lambda: RecomputeRun.objects.get(pk=run.pk).finished_at is not None, message="the run finished")
    assert run.steps.filter(stage=RecomputeStage.PART).count() == 3
    want, got = snapshot(single.id), snapshot(split.id)
    # Anomalies found by the twins' ingest flushes keep when those flushes ran: compared
    # without their detected_at, everything else exactly.
    for found in (want, got):
        found["anomalies"] = {key: (weight, details) for key, (weight, details, _) in found["anomalies"].items()}
    assert got == want
    assert any(kind == "velocity_spike" for _, _, kind in got["anomalies"])


def test_flushes_of_two_elections_run_side_by_side_and_of_one_election_one_at_a_time(
    worker, second_worker, row_lock, poll, stats_match
):
    first = ElectionFactory(code="first")
    second = ElectionFactory(code="second")
    places = {e.id: ConstituencyFactory(election=e, registered_voters=100) for e in (first, second)}

    def vote(election, tag):
        ts = VOTING_STARTS + timedelta(minutes=5)
        place = places[election.id]
        transactions_ingest(
            rows=[TransactionRow(f"{election.code}-{tag}", election.id, place.id, "vote_cast", ts, None)]
        )

    # The second election's row held: its flushes wait on it, the first election's do not.
    row_lock.hold("elections_election", second.id)
    vote(second, "a")
    row_lock.wait_for_waiter()
    # The busy worker takes no more tasks, but a poll of the queue it sent before its flush
    # began (a Redis BRPOP, answered within kombu's one-second brpop_timeout) could still
    # hand it the next one: let that poll run out, so the first election's flush goes to the
    # idle worker, as it would with a queue that had not just been polled.
    time.sleep(1.5)
    vote(first, "a")
    poll(lambda: not DirtyBucket.objects.filter(election_id=first.id).exists(), message="first election flushed")
    assert HourlyStats.objects.get(election=first).votes_cast == 1
    # Meanwhile nothing of the held election was written; a second vote's flush (on whichever
    # worker takes it) waits on the same row, and both votes land once it is released.
    assert not HourlyStats.objects.filter(election=second).exists()
    vote(second, "b")
    row_lock.release()

    poll(lambda: not DirtyBucket.objects.filter(election_id=second.id).exists(), message="second election flushed")
    assert HourlyStats.objects.get(election=second).votes_cast == 2
    stats_match(first)
    stats_match(second)
