"""metrics.pipeline on the embedded default's path (eager Celery, after commit) and on
PostgreSQL: dirty marks, the coalesced flush, the sweep and the manual recompute."""

import logging
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerOperationalError

from elections.models import TransactionKind
from elections.services import TransactionRow, transactions_delete, transactions_ingest
from elections.tests.factories import VOTING_STARTS, ConstituencyFactory, ElectionFactory
from metrics import pipeline, tasks
from metrics.cache import metrics_cache
from metrics.models import DirtyBucket, HourlyStats
from metrics.tasks import flush_dirty_buckets


def rows_for(election, constituencies, n, *, start=VOTING_STARTS, prefix="tx", minutes_apart=7):
    kinds = (TransactionKind.BULLETIN_ISSUED, TransactionKind.VOTE_CAST)
    return [
        TransactionRow(
            f"{prefix}-{i}", election.id, constituencies[i % len(constituencies)].id,
            kinds[(i // len(constituencies)) % 2], start + timedelta(minutes=(i * minutes_apart) % 600), None,
        )
        for i in range(n)
    ]  # fmt: skip


def marks(election) -> int:
    return DirtyBucket.objects.filter(election_id=election.id).count()


def test_api_ingest_updates_metrics_after_commit_on_the_embedded_default(
    ingest_client, election, constituencies, django_capture_on_commit_callbacks, stats_match
):
    items = [
        {"tx_hash": f"api-{i}", "constituency": constituencies[i % 6].id, "kind": ("vote_cast", "bulletin_issued")[i % 2],
         "timestamp": (VOTING_STARTS + timedelta(minutes=13 * i)).isoformat()}
        for i in range(120)
    ]  # fmt: skip
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = ingest_client.post("/api/transactions/", items, format="json")
    assert response.status_code == 201
    assert callbacks, "the flush is requested after commit"
    assert marks(election) == 0
    assert sum(c.total_transactions for c in election.constituencies.all()) == 120
    stats_match(election)


def test_nothing_is_computed_before_commit(election, constituencies, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        transactions_ingest(rows=rows_for(election, constituencies, 12))
    assert len(callbacks) == 1
    assert marks(election) > 0
    assert not HourlyStats.objects.exists()
    callbacks[0]()
    assert marks(election) == 0
    assert HourlyStats.objects.filter(election=election).exists()


def test_marks_are_deduplicated_per_call(election, constituencies):
    hour = VOTING_STARTS
    written = pipeline.buckets_mark_dirty(
        election_id=election.id, buckets=[(constituencies[0].id, hour), (constituencies[0].id, hour), (None, None)]
    )
    assert written == 2 == marks(election)


def test_flush_waits_for_the_pending_one(election, constituencies, stats_match):
    """While a flush is queued (the flag is set) a trigger queues nothing; the queued flush
    then takes every mark, including the later ones."""
    transactions_ingest(rows=rows_for(election, constituencies, 30))
    assert metrics_cache.flush_pending_claim(election.id)
    tasks.flush_request(election.id)
    assert marks(election) > 0

    flush_dirty_buckets.delay(election.id)  # the queued one runs
    assert marks(election) == 0
    assert metrics_cache.flush_pending_claim(election.id), "the flush cleared the flag"
    stats_match(election)


def test_failed_publish_keeps_the_marks_and_the_next_trigger_flushes_them(
    election, constituencies, monkeypatch, caplog, stats_match, settings
):
    transactions_ingest(rows=rows_for(election, constituencies, 40))

    def broker_down(*args, **kwargs):  # a fault, not a stand-in: nothing may be lost
        raise BrokerOperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    with monkeypatch.context() as patch:
        patch.setattr(flush_dirty_buckets, "apply_async", broker_down)
        with caplog.at_level(logging.WARNING, logger="metrics.pipeline"):
            tasks.flush_request(election.id)
    assert "could not queue a metrics flush for election" in caplog.text
    assert marks(election) > 0
    assert not HourlyStats.objects.exists()

    # Within the broker breaker's interval a trigger does not try the broker again
    # (election_monitor.resilience); the marks wait, nothing is lost.
    tasks.flush_request(election.id)
    assert marks(election) > 0

    settings.CIRCUIT_BREAKER_RESET_SECONDS = 0  # the interval has passed
    tasks.flush_request(election.id)  # the flag was released: the next trigger queues
    assert marks(election) == 0
    stats_match(election)


def test_flush_deletes_exactly_the_marks_it_read(election, constituencies):
    transactions_ingest(rows=rows_for(election, constituencies, 60))
    before = marks(election)
    assert pipeline.dirty_buckets_flush(election_id=election.id, limit=5) == 5
    assert marks(election) == before - 5
    first_left = DirtyBucket.objects.filter(election_id=election.id).order_by("id").first()
    assert first_left is not None


def test_flush_in_batches_hands_over_when_its_time_is_spent(
    election, constituencies, settings, stats_match, monkeypatch
):
    settings.METRICS_FLUSH_BATCH = 4
    transactions_ingest(rows=rows_for(election, constituencies, 90))
    assert marks(election) > 8
    # A zero budget stops after one batch and queues a successor (eager: runs it at once).
    monkeypatch.setattr(pipeline, "FLUSH_TIME_BUDGET", 0)
    outcome = pipeline.dirty_buckets_flush_all(election_id=election.id)
    assert (outcome.consumed, outcome.more) == (4, True)
    assert flush_dirty_buckets.delay(election.id).get() == 4  # the task hands over to a successor
    assert marks(election) == 0
    stats_match(election)


@pytest.mark.django_db(transaction=True)
def test_a_flush_vacuums_the_marks_it_consumed(election, constituencies):
    metrics_cache.delete("metrics:marks-vacuum")
    transactions_ingest(rows=rows_for(election, constituencies, 60))  # commits; its flush runs (eager)
    assert marks(election) == 0
    if connection.vendor != "postgresql":
        assert pipeline.marks_table_vacuum() is False  # nothing to vacuum on SQLite
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT n_dead_tup, last_vacuum FROM pg_stat_user_tables WHERE relname = 'metrics_dirtybucket'")
        dead, last_vacuum = cursor.fetchone()
    assert last_vacuum is not None
    assert dead == 0
    # At most one vacuum per interval, however many flushes run.
    assert pipeline.marks_table_vacuum() is False


def test_flush_of_a_deleted_election_is_a_no_op(db):
    assert pipeline.dirty_buckets_flush_all(election_id=987654).consumed == 0


def test_stale_buckets_find_sees_edits_deletions_and_orphans(election, constituencies):
    transactions_ingest(rows=rows_for(election, constituencies, 60))
    pipeline.dirty_buckets_flush_all(election_id=election.id)
    assert pipeline.stale_buckets_find(election_id=election.id) == set()

    edited, deleted = HourlyStats.objects.filter(election=election).order_by("id")[:2]
    # Same transaction_count, different kinds: only a comparison of every count sees it.
    HourlyStats.objects.filter(pk=edited.pk).update(
        votes_cast=edited.votes_cast + 1, bulletins_issued=edited.bulletins_issued - 1
    )
    deleted.delete()
    orphan = HourlyStats.objects.create(
        election=election, constituency=constituencies[0], hour=VOTING_STARTS + timedelta(days=2), transaction_count=3
    )
    assert pipeline.stale_buckets_find(election_id=election.id) == {
        (edited.constituency_id, edited.hour),
        (deleted.constituency_id, deleted.hour),
        (orphan.constituency_id, orphan.hour),
    }


@pytest.fixture
def live_election(db):
    now = timezone.now()
    election = ElectionFactory(code="live", starts_at=now - timedelta(hours=20), ends_at=now + timedelta(hours=4))
    ConstituencyFactory.create_batch(6, election=election, registered_voters=500)
    return election


def test_sweep_repairs_hand_edits_and_flushes_lost_marks(live_election, stats_match):
    constituencies = list(live_election.constituencies.all())
    start = timezone.now() - timedelta(hours=12)
    transactions_ingest(rows=rows_for(live_election, constituencies, 80, start=start))
    pipeline.dirty_buckets_flush_all(election_id=live_election.id)
    # Hours the lost batch below does not touch, so only the recount can find them.
    edited, deleted = HourlyStats.objects.filter(election=live_election).order_by("-hour", "id")[:2]
    HourlyStats.objects.filter(pk=edited.pk).update(votes_cast=999)
    deleted.delete()
    # A batch whose flush task was lost: only its marks remain.
    transactions_ingest(rows=rows_for(live_election, constituencies, 20, start=start, prefix="lost"))

    (report,) = pipeline.active_elections_sweep()
    assert report["election_id"] == live_election.id
    assert report["flushed_marks"] > 0
    assert report["repaired_buckets"] == 2
    assert marks(live_election) == 0
    stats_match(live_election)


def test_sweep_repairs_totals_a_flush_moved_from_a_hand_edited_row(live_election, stats_match):
    constituencies = list(live_election.constituencies.all())
    # Hours before the previous one: the sweep's velocity refresh does not recompute them.
    start = timezone.now() - timedelta(hours=13)
    transactions_ingest(rows=rows_for(live_election, constituencies, 60, start=start))
    pipeline.dirty_buckets_flush_all(election_id=live_election.id)
    row = HourlyStats.objects.filter(election=live_election, votes_cast__gt=0).order_by("id").first()
    HourlyStats.objects.filter(pk=row.pk).update(votes_cast=0)
    # A new vote in the edited bucket: the flush recounts the row right, but moves the
    # constituency's totals by (recount - edited row), which counts the edit as new votes.
    vote = TransactionRow("late-vote", live_election.id, row.constituency_id, TransactionKind.VOTE_CAST,
                          row.hour + timedelta(minutes=30), None)  # fmt: skip
    transactions_ingest(rows=[vote])
    pipeline.dirty_buckets_flush_all(election_id=live_election.id)
    assert pipeline.constituency_totals_stale(election_id=live_election.id) == {row.constituency_id}

    (report,) = pipeline.active_elections_sweep()
    assert report["repaired_constituencies"] == 1
    assert pipeline.constituency_totals_stale(election_id=live_election.id) == set()
    stats_match(live_election)


def test_sweep_flushes_leftover_marks_of_a_closed_election_too(election, constituencies, live_election, stats_match):
    transactions_ingest(rows=rows_for(election, constituencies, 30))
    reports = pipeline.active_elections_sweep()
    assert {r["election_id"] for r in reports} == {election.id, live_election.id}
    assert marks(election) == 0
    stats_match(election)


def test_sweep_refreshes_the_current_hours_velocity(live_election):
    constituency = live_election.constituencies.first()
    now = timezone.now()
    transactions_ingest(
        rows=[
            TransactionRow(
                f"v-{i}", live_election.id, constituency.id, TransactionKind.VOTE_CAST, now - timedelta(seconds=i), None
            )
            for i in range(6)
        ]  # fmt: skip
    )
    pipeline.dirty_buckets_flush_all(election_id=live_election.id)
    row = HourlyStats.objects.get(constituency=constituency, hour__lte=now)
    later = now + timedelta(minutes=30)
    pipeline.election_sweep(election_id=live_election.id, now=later)
    row.refresh_from_db()
    minutes = (min(later, row.hour + timedelta(hours=1)) - row.hour).total_seconds() / 60
    assert row.vote_velocity == pytest.approx(6 / minutes)


def test_sweep_settles_velocities_of_hours_it_missed_during_a_beat_outage(live_election):
    """A row flushed five minutes into its hour divides by five minutes; if no sweep ran in
    the next two hours, the first sweep after the outage must still settle it to 60."""
    constituency = live_election.constituencies.first()
    now = timezone.now()
    hour = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=6)
    flushed_at = hour + timedelta(minutes=5)
    transactions_ingest(
        rows=[
            TransactionRow(
                f"o-{i}",
                live_election.id,
                constituency.id,
                TransactionKind.VOTE_CAST,
                hour + timedelta(minutes=1),
                None,
            )
            for i in range(30)
        ],  # fmt: skip
    )
    pipeline.dirty_buckets_flush(election_id=live_election.id, now=flushed_at)
    row = HourlyStats.objects.get(constituency=constituency)
    assert row.vote_velocity == pytest.approx(30 / 5)

    pipeline.election_sweep(election_id=live_election.id, now=now)

    row.refresh_from_db()
    assert row.vote_velocity == 30 / 60
    assert pipeline.unsettled_velocity_hours(election=live_election, now=now) == set()


def test_deleting_transactions_removes_their_buckets(election, constituencies, stats_match):
    transactions_ingest(rows=rows_for(election, constituencies, 40))
    pipeline.dirty_buckets_flush_all(election_id=election.id)
    transactions_delete(queryset=election.transactions.filter(constituency=constituencies[0]))
    pipeline.dirty_buckets_flush_all(election_id=election.id)
    assert not HourlyStats.objects.filter(constituency=constituencies[0]).exists()
    stats_match(election)


def test_late_transaction_raises_every_later_hours_rate(election, constituencies, stats_match):
    c = constituencies[0]
    day_two = VOTING_STARTS + timedelta(days=1)
    transactions_ingest(
        rows=[
            TransactionRow(f"d2-{i}", election.id, c.id, TransactionKind.VOTE_CAST, day_two + timedelta(hours=i), None)
            for i in range(4)
        ],  # fmt: skip
    )
    pipeline.dirty_buckets_flush_all(election_id=election.id)
    before = dict(HourlyStats.objects.filter(constituency=c).values_list("hour", "participation_rate"))
    transactions_ingest(
        rows=[TransactionRow("late", election.id, c.id, TransactionKind.VOTE_CAST, VOTING_STARTS, None)],
    )
    pipeline.dirty_buckets_flush_all(election_id=election.id)
    after = dict(HourlyStats.objects.filter(constituency=c).values_list("hour", "participation_rate"))
    for hour, rate in before.items():
        assert after[hour] == pytest.approx(rate + 100.0 / c.registered_voters)
    stats_match(election)


def test_manual_recompute_of_constituencies_refreshes_totals_without_buckets(election, constituencies, stats_match):
    transactions_ingest(rows=rows_for(election, constituencies[:3], 30))
    pipeline.dirty_buckets_flush_all(election_id=election.id)
    empty = constituencies[5]
    type(empty).objects.filter(pk=empty.pk).update(total_votes_cast=77, participation_rate=7.7)

    result = pipeline.election_recompute(election_id=election.id, constituency_ids=[constituencies[0].id, empty.id])
    assert result.constituencies_refreshed == 2
    empty.refresh_from_db()
    assert (empty.total_votes_cast, empty.participation_rate) == (0, 0.0)
    stats_match(election)


def test_manual_recompute_within_a_range_leaves_other_hours_alone(election, constituencies):
    transactions_ingest(rows=rows_for(election, constituencies, 60))
    pipeline.dirty_buckets_flush_all(election_id=election.id)
    HourlyStats.objects.filter(election=election).update(transaction_count=0)
    since, until = VOTING_STARTS + timedelta(hours=2), VOTING_STARTS + timedelta(hours=4)
    pipeline.election_recompute(election_id=election.id, since=since, until=until)
    inside = HourlyStats.objects.filter(election=election, hour__gte=since, hour__lt=until)
    assert inside.exists()
    assert not inside.filter(transaction_count=0).exists()
    assert HourlyStats.objects.filter(election=election, hour__lt=since, transaction_count=0).exists()


@pytest.mark.django_db(transaction=True)
def test_a_crash_before_the_mark_stores_nothing(live_election, monkeypatch):
    """Transaction.save commits the row and its dirty mark together, even in autocommit:
    a process dying between the two leaves neither."""
    from elections.tests.factories import TransactionFactory

    constituency = live_election.constituencies.first()

    def crash(**kwargs):  # the process dies between the row and its mark
        raise RuntimeError("killed")

    with monkeypatch.context() as patch:
        patch.setattr(pipeline, "buckets_mark_dirty", crash)
        with pytest.raises(RuntimeError):
            TransactionFactory(constituency=constituency, timestamp=timezone.now() - timedelta(hours=3))
    assert live_election.transactions.count() == 0
    assert marks(live_election) == 0


def test_sweep_repairs_a_transaction_stored_without_its_mark(live_election, stats_match):
    """A write that bypasses every door (raw bulk_create, a QuerySet.update, a manual SQL fix)
    leaves no mark; the sweep's recount is the safety net."""
    from elections.models import Transaction, TransactionKind
    from elections.timebuckets import hour_bucket

    constituency = live_election.constituencies.first()
    timestamp = timezone.now() - timedelta(hours=3)
    Transaction.objects.bulk_create(
        [
            Transaction(
                tx_hash="0xbypass",
                election=live_election,
                constituency=constituency,
                kind=TransactionKind.VOTE_CAST,
                timestamp=timestamp,
                hour=hour_bucket(timestamp, live_election.tz),
            )
        ]
    )
    assert marks(live_election) == 0
    assert not HourlyStats.objects.exists()

    (report,) = pipeline.active_elections_sweep()
    assert report["repaired_buckets"] == 1
    stats_match(live_election)
