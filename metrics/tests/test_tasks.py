"""metrics.tasks: thin, id-taking, idempotent, acks_late, retried only on errors that can
pass; and the beat entry the migration created."""

import logging
from datetime import timedelta

import pytest
from django.db import OperationalError
from django_celery_beat.models import PeriodicTask

from elections.models import TransactionKind
from elections.services import TransactionRow, transactions_ingest
from elections.tests.factories import VOTING_STARTS
from metrics import pipeline, tasks
from metrics.models import DirtyBucket, HourlyStats
from metrics.schedule import SCHEDULE


@pytest.fixture
def marked_election(election, constituencies):
    rows = [
        TransactionRow(f"t-{i}", election.id, constituencies[i % 6].id,
                       (TransactionKind.VOTE_CAST, TransactionKind.BULLETIN_ISSUED)[i % 2],
                       VOTING_STARTS + timedelta(minutes=9 * i), None)
        for i in range(50)
    ]  # fmt: skip
    transactions_ingest(rows=rows)
    return election


def stats_snapshot(election):
    return sorted(
        HourlyStats.objects.filter(election=election).values_list(
            "constituency_id", "hour", "bulletins_issued", "votes_cast", "transaction_count", "participation_rate", "anomaly_count"
        )
    )  # fmt: skip


@pytest.mark.parametrize("task", [tasks.flush_dirty_buckets, tasks.sweep_active_elections, tasks.recompute_election])
def test_tasks_ack_late_and_retry_only_passing_errors(task):
    assert task.acks_late
    assert OperationalError in task.autoretry_for
    assert not any(issubclass(ValueError, kind) for kind in task.autoretry_for)
    assert task.retry_backoff
    assert task.retry_jitter
    assert task.max_retries


def test_flush_task_twice_gives_the_same_rows(marked_election, stats_match):
    assert tasks.flush_dirty_buckets.delay(marked_election.id).get() > 0
    first = stats_snapshot(marked_election)
    assert tasks.flush_dirty_buckets.delay(marked_election.id).get() == 0
    assert tasks.recompute_election.delay(marked_election.id).get()["buckets_recounted"] == len(first)
    assert stats_snapshot(marked_election) == first
    stats_match(marked_election)


def test_recompute_task_takes_iso_strings(marked_election):
    c = marked_election.constituencies.first()
    result = tasks.recompute_election.delay(
        marked_election.id, c.id, VOTING_STARTS.isoformat(), (VOTING_STARTS + timedelta(hours=2)).isoformat()
    ).get()
    assert 0 < result["buckets_recounted"] <= 2
    assert result["constituencies_refreshed"] == 1


def test_database_error_is_retried_and_nothing_is_lost(marked_election, monkeypatch, caplog, stats_match):
    real = pipeline.dirty_buckets_flush
    calls = []

    def flaky(**kwargs):  # a fault: the database drops the first connection
        calls.append(kwargs)
        if len(calls) == 1:
            raise OperationalError("server closed the connection unexpectedly")
        return real(**kwargs)

    monkeypatch.setattr(pipeline, "dirty_buckets_flush", flaky)
    with caplog.at_level(logging.WARNING, logger="metrics.tasks"):
        result = tasks.flush_dirty_buckets.apply(args=(marked_election.id,), throw=False)
    assert result.state == "SUCCESS"
    assert len(calls) >= 2  # the failed batch, then the retry's batches until none is left
    assert caplog.text.count("retry 1 of") == 1
    assert "metrics.flush_dirty_buckets" in caplog.text
    assert f"({marked_election.id},)" in caplog.text
    assert "retry 1 of" in caplog.text
    assert not DirtyBucket.objects.filter(election_id=marked_election.id).exists()
    stats_match(marked_election)


def test_programming_error_is_not_retried_and_is_logged_with_context(marked_election, monkeypatch, caplog):
    calls = []

    def broken(**kwargs):
        calls.append(kwargs)
        raise ValueError("a bug")

    monkeypatch.setattr(pipeline, "dirty_buckets_flush", broken)
    with caplog.at_level(logging.ERROR, logger="metrics.tasks"):
        result = tasks.flush_dirty_buckets.apply(args=(marked_election.id,), throw=False)
    assert result.state == "FAILURE"
    assert len(calls) == 1
    assert "failed after 0 retries" in caplog.text
    assert f"({marked_election.id},)" in caplog.text
    assert DirtyBucket.objects.filter(election_id=marked_election.id).exists(), "the marks wait for the sweep"


def test_sweep_task_reports_each_election(marked_election):
    (report,) = tasks.sweep_active_elections.delay().get()  # closed, but it has marks left
    assert report["election_id"] == marked_election.id
    assert report["flushed_marks"] > 0
    assert not DirtyBucket.objects.filter(election_id=marked_election.id).exists()


def test_migration_created_the_periodic_sweep(db):
    for entry in SCHEDULE:
        task = PeriodicTask.objects.get(name=entry["name"])
        assert task.task == entry["task"]
        assert task.enabled
        assert (task.interval.every, task.interval.period) == (entry["every_seconds"], "seconds")
        assert task.expire_seconds == entry["expire_seconds"]
    assert PeriodicTask.objects.get(name="metrics: sweep active elections").task == tasks.sweep_active_elections.name
