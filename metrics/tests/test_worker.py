"""The pipeline with a real Celery worker, PostgreSQL and a Redis broker, and its faults.

Every test ends by comparing every HourlyStats row and constituency total with a recount
from the transactions. Pauses are row locks held from a second connection, never sleeps.
"""

import logging
import os
import signal
import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from elections.models import Transaction, TransactionKind
from elections.services import TransactionRow, transactions_ingest
from elections.tests.factories import VOTING_STARTS, ConstituencyFactory, ElectionFactory
from metrics.models import DirtyBucket, HourlyStats
from metrics.tasks import flush_dirty_buckets, recompute_election, sweep_active_elections

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

FLUSH = "metrics.flush_dirty_buckets"
TRANSACTIONS_URL = "/api/transactions/"


def tx_items(constituencies, n, *, start, prefix, spread_hours=6, kind_cycle=("bulletin_issued", "vote_cast")):
    """``n`` API items spread over the constituencies and ``spread_hours`` hours from ``start``."""
    return [
        {
            "tx_hash": f"{prefix}-{i}",
            "constituency": constituencies[i % len(constituencies)].id,
            "kind": kind_cycle[(i // len(constituencies)) % len(kind_cycle)],
            "timestamp": (start + timedelta(minutes=(i * 7) % (60 * spread_hours))).isoformat(),
        }
        for i in range(n)
    ]


def no_marks_left(election) -> bool:
    return not DirtyBucket.objects.filter(election_id=election.id).exists()


def settled(election, expected_transactions: int):
    """The flushes are done: no marks and every transaction counted in the totals."""

    def check():
        totals = sum(election.constituencies.values_list("total_transactions", flat=True))
        return no_marks_left(election) and totals == expected_transactions

    return check


@pytest.fixture
def live_election(db):
    """Voting now, so the sweep treats it as active."""
    now = timezone.now()
    election = ElectionFactory(code="live", starts_at=now - timedelta(hours=20), ends_at=now + timedelta(hours=4))
    ConstituencyFactory.create_batch(6, election=election, registered_voters=2000)
    return election


@pytest.fixture
def past_election(db):
    election = ElectionFactory(code="past")
    ConstituencyFactory.create_batch(6, election=election, registered_voters=2000)
    return election


def test_committed_transaction_shows_in_totals_within_seconds(worker, ingest_client, live_election, poll, stats_match):
    constituency = live_election.constituencies.first()
    response = ingest_client.post(
        TRANSACTIONS_URL,
        {
            "tx_hash": "fresh-1",
            "constituency": constituency.id,
            "kind": "vote_cast",
            "timestamp": timezone.now().isoformat(),
        },
        format="json",
    )
    assert response.status_code == 201

    def counted():
        constituency.refresh_from_db()
        return constituency.total_votes_cast == 1

    poll(counted, timeout=10, message="the vote in the constituency totals")
    poll(lambda: no_marks_left(live_election), message="marks consumed")
    stats_match(live_election)


def test_burst_of_ten_thousand_transactions_costs_a_bounded_number_of_flushes(
    worker, task_events, ingest_client, past_election, poll, stats_match, settings
):
    constituencies = list(past_election.constituencies.all())
    items = tx_items(constituencies, 10_000, start=VOTING_STARTS, prefix="burst", spread_hours=12)
    started = time.monotonic()
    for offset in range(0, len(items), 100):
        response = ingest_client.post(TRANSACTIONS_URL, items[offset : offset + 100], format="json")
        assert response.status_code == 201, response.content
    burst_seconds = time.monotonic() - started

    poll(settled(past_election, 10_000), timeout=60, message="all 10,000 transactions counted")
    worker.wait_idle()
    flushes = task_events.count(FLUSH)
    print(f"\n10,000 transactions in 100 posts over {burst_seconds:.1f}s -> {flushes} flush executions")
    # At most one flush is queued per election at a time and it waits the debounce before it
    # runs, so flushes are bounded by the burst's length, not by its number of requests or rows.
    bound = int(burst_seconds / settings.METRICS_FLUSH_DEBOUNCE_SECONDS) + 2
    assert 1 <= flushes <= bound
    assert flushes <= 100 // 2, "no better than a flush per request"
    assert not task_events.failed
    stats_match(past_election)


def test_trigger_during_a_running_flush_causes_one_more_flush(
    worker, task_events, row_lock, ingest_client, past_election, poll, stats_match
):
    constituency = past_election.constituencies.first()
    item = {
        "constituency": constituency.id,
        "kind": "vote_cast",
        "timestamp": (VOTING_STARTS + timedelta(minutes=5)).isoformat(),
    }
    # The flush's last write is the constituency totals: holding that row pauses it after it
    # has read its marks and recounted the bucket.
    row_lock.hold("elections_constituency", constituency.id)
    assert ingest_client.post(TRANSACTIONS_URL, {**item, "tx_hash": "first"}, format="json").status_code == 201
    row_lock.wait_for_waiter()

    # Same bucket, while the first flush is running with the first vote only.
    assert ingest_client.post(TRANSACTIONS_URL, {**item, "tx_hash": "second"}, format="json").status_code == 201
    assert DirtyBucket.objects.filter(election_id=past_election.id).count() == 2
    row_lock.release()

    poll(settled(past_election, 2), message="both votes counted")
    worker.wait_idle()
    assert task_events.count(FLUSH) == 2
    assert HourlyStats.objects.get(constituency=constituency).votes_cast == 2
    stats_match(past_election)


def test_pool_process_killed_mid_flush_is_redelivered(
    worker, task_events, row_lock, ingest_client, past_election, poll, stats_match
):
    """acks_late + reject_on_worker_lost: the message goes back to the queue."""
    items = tx_items(list(past_election.constituencies.all()), 300, start=VOTING_STARTS, prefix="kill-child")
    row_lock.hold("elections_election", past_election.id)
    assert ingest_client.post(TRANSACTIONS_URL, items, format="json").status_code == 201
    row_lock.wait_for_waiter()
    (child,) = worker.pool_pids()
    os.kill(child, signal.SIGKILL)
    row_lock.release()

    poll(settled(past_election, 300), timeout=20, message="the redelivered flush")
    assert worker.alive
    assert task_events.count(FLUSH) == 2  # the killed run and the redelivered one
    stats_match(past_election)


def test_worker_killed_mid_flush_loses_nothing_and_the_sweep_repairs(
    worker, row_lock, ingest_client, live_election, poll, stats_match
):
    start = timezone.now() - timedelta(hours=6)
    items = tx_items(list(live_election.constituencies.all()), 300, start=start, prefix="kill-worker")
    row_lock.hold("elections_election", live_election.id)
    assert ingest_client.post(TRANSACTIONS_URL, items, format="json").status_code == 201
    row_lock.wait_for_waiter()
    worker.kill()  # kill -9 the whole worker and its pool process
    row_lock.release()
    # Its message stays unacknowledged in Redis until the visibility timeout (an hour):
    # treat it as lost, so only the sweep can repair.
    worker.purge()

    assert Transaction.objects.filter(election=live_election).count() == 300
    assert DirtyBucket.objects.filter(election_id=live_election.id).exists()
    assert not HourlyStats.objects.filter(election=live_election).exists()

    worker.start()
    sweep_active_elections.delay()
    poll(settled(live_election, 300), message="the sweep's flush")
    stats_match(live_election)


def test_broker_unreachable_during_ingest_then_next_trigger_catches_up(
    worker, broker_outage, ingest_client, past_election, poll, stats_match, caplog, settings
):
    constituencies = list(past_election.constituencies.all())
    items = tx_items(constituencies, 200, start=VOTING_STARTS, prefix="outage")
    broker_outage.start()
    with caplog.at_level(logging.WARNING, logger="metrics.pipeline"):
        response = ingest_client.post(TRANSACTIONS_URL, items, format="json")
    assert response.status_code == 201
    assert response.json()["created"] == 200
    assert "could not queue a metrics flush" in caplog.text
    assert Transaction.objects.filter(election=past_election).count() == 200
    assert DirtyBucket.objects.filter(election_id=past_election.id).exists()
    assert not HourlyStats.objects.filter(election=past_election).exists()

    broker_outage.end()
    # The broker's circuit breaker (election_monitor/resilience.py) keeps this process off
    # the broker for CIRCUIT_BREAKER_RESET_SECONDS after the failure: that interval passes.
    settings.CIRCUIT_BREAKER_RESET_SECONDS = 0
    late = tx_items(constituencies[:1], 1, start=VOTING_STARTS + timedelta(hours=30), prefix="after-outage")
    assert ingest_client.post(TRANSACTIONS_URL, late, format="json").status_code == 201

    poll(settled(past_election, 201), message="the earlier marks flushed by the next trigger")
    stats_match(past_election)


def test_sweep_flushes_marks_whose_task_was_lost_and_repairs_hand_edits(
    worker, broker_outage, ingest_client, live_election, poll, stats_match
):
    constituencies = list(live_election.constituencies.all())
    start = timezone.now() - timedelta(hours=10)
    assert (
        ingest_client.post(
            TRANSACTIONS_URL, tx_items(constituencies, 240, start=start, prefix="a"), format="json"
        ).status_code
        == 201
    )
    poll(settled(live_election, 240), message="first batch counted")

    # A hand edit and a hand deletion, then a batch whose flush is never queued.
    first, second = HourlyStats.objects.filter(election=live_election).order_by("id")[:2]
    HourlyStats.objects.filter(pk=first.pk).update(votes_cast=first.votes_cast + 7)
    second.delete()
    with pytest.raises(AssertionError):
        stats_match(live_election)
    broker_outage.start()
    assert (
        ingest_client.post(
            TRANSACTIONS_URL, tx_items(constituencies, 60, start=start, prefix="b"), format="json"
        ).status_code
        == 201
    )
    assert DirtyBucket.objects.filter(election_id=live_election.id).exists()
    broker_outage.end()

    sweep_active_elections.delay()
    poll(settled(live_election, 300), message="the sweep")
    worker.wait_idle()
    stats_match(live_election)


def test_same_flush_delivered_twice_gives_the_same_rows(
    worker, task_events, row_lock, ingest_client, past_election, poll, stats_match
):
    items = tx_items(list(past_election.constituencies.all()), 400, start=VOTING_STARTS, prefix="twice")
    row_lock.hold("elections_election", past_election.id)
    assert ingest_client.post(TRANSACTIONS_URL, items, format="json").status_code == 201
    row_lock.wait_for_waiter()
    # Redelivery after a lost ack: the same message (same task id) arrives again.
    flush_dirty_buckets.apply_async((past_election.id,), task_id="duplicate-delivery")
    flush_dirty_buckets.apply_async((past_election.id,), task_id="duplicate-delivery")
    recompute_election.apply_async((past_election.id,), task_id="duplicate-recompute")
    recompute_election.apply_async((past_election.id,), task_id="duplicate-recompute")
    row_lock.release()

    poll(settled(past_election, 400), message="counted")
    worker.wait_idle()
    assert task_events.count(FLUSH) == 3
    assert not task_events.failed
    stats_match(past_election)


def test_concurrent_flushes_and_recomputes_of_the_same_buckets(past_election, stats_match):
    """Four threads on PostgreSQL recompute overlapping buckets while ingest continues:
    no IntegrityError, no deadlock, the right counts."""
    from metrics.pipeline import dirty_buckets_flush_all, election_recompute

    constituencies = list(past_election.constituencies.all())

    def rows(prefix, n):
        return [
            TransactionRow(f"{prefix}-{i}", past_election.id, constituencies[i % 6].id,
                           (TransactionKind.VOTE_CAST, TransactionKind.BULLETIN_ISSUED)[i % 2],
                           VOTING_STARTS + timedelta(minutes=(i * 11) % 600), None)
            for i in range(n)
        ]  # fmt: skip

    transactions_ingest(rows=rows("seed", 600))
    barrier = threading.Barrier(4)
    errors = []

    def run(work):
        try:
            barrier.wait(10)
            for _ in range(3):
                work()
        except Exception as error:
            errors.append(error)
        finally:
            connection.close()

    ingested = iter(range(100))
    jobs = [
        lambda: dirty_buckets_flush_all(election_id=past_election.id),
        lambda: dirty_buckets_flush_all(election_id=past_election.id),
        lambda: election_recompute(election_id=past_election.id, constituency_ids=[c.id for c in constituencies[:3]]),
        lambda: transactions_ingest(rows=rows(f"more-{next(ingested)}", 50)),
    ]
    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors

    dirty_buckets_flush_all(election_id=past_election.id)
    assert no_marks_left(past_election)
    stats_match(past_election)


def test_late_transaction_updates_its_day_old_hour_and_every_later_rate(
    worker, ingest_client, past_election, poll, stats_match
):
    constituency = past_election.constituencies.first()
    day_two = VOTING_STARTS + timedelta(days=1)
    items = [
        {"tx_hash": f"day2-{i}", "constituency": constituency.id, "kind": "vote_cast",
         "timestamp": (day_two + timedelta(hours=i)).isoformat()}
        for i in range(5)
    ]  # fmt: skip
    assert ingest_client.post(TRANSACTIONS_URL, items, format="json").status_code == 201
    poll(settled(past_election, 5), message="day two counted")
    before = dict(HourlyStats.objects.filter(constituency=constituency).values_list("hour", "participation_rate"))

    late = {"tx_hash": "late", "constituency": constituency.id, "kind": "vote_cast",
            "timestamp": (VOTING_STARTS + timedelta(minutes=10)).isoformat()}  # fmt: skip
    assert ingest_client.post(TRANSACTIONS_URL, late, format="json").status_code == 201
    poll(settled(past_election, 6), message="the late vote counted")

    after = dict(HourlyStats.objects.filter(constituency=constituency).values_list("hour", "participation_rate"))
    assert len(after) == 6
    step = 100.0 / constituency.registered_voters
    for hour, rate in before.items():
        assert after[hour] == pytest.approx(rate + step)
    stats_match(past_election)
