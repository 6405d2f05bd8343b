"""Celery tasks: thin doors into metrics.pipeline. They take ids and are safe to run twice."""

import logging
from dataclasses import asdict
from datetime import datetime

from celery import Task, shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError
from kombu.exceptions import OperationalError as BrokerOperationalError

from election_monitor.resilience import broker_breaker
from metrics import pipeline
from metrics.cache import metrics_cache

logger = logging.getLogger(__name__)


class MetricsTask(Task):
    """Logs retries and final failures with the task's ids, so the engineer on call can see
    which election is behind; the dirty marks stay in the database for the sweep."""

    def on_retry(self, exc, task_id, args, kwargs, einfo):
        logger.warning(
            "%s[%s] args=%r kwargs=%r: %s: %s; retry %d of %d",
            self.name,
            task_id,
            args,
            kwargs,
            type(exc).__name__,
            exc,
            self.request.retries + 1,
            self.max_retries,
        )

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        logger.error(
            "%s[%s] args=%r kwargs=%r failed after %d retries: %s: %s; the sweep will retry its marks",
            self.name,
            task_id,
            args,
            kwargs,
            self.request.retries,
            type(exc).__name__,
            exc,
            exc_info=(type(exc), exc, exc.__traceback__),
        )


# Only errors that can pass are retried: a database restart or failover, a broker blip.
RETRYABLE = (OperationalError, InterfaceError, BrokerOperationalError, ConnectionError)
RETRY = {
    "base": MetricsTask,
    "autoretry_for": RETRYABLE,
    "retry_backoff": 1,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": 10,
    "acks_late": True,
}


def flush_request(election_id: int) -> None:
    """Make sure a flush of the election's dirty marks is queued (call after commit).

    At most one is queued per election at a time: a short-lived flag in the cache, which
    the flush clears before it reads the marks (see metrics/pipeline.py)."""
    if not metrics_cache.flush_pending_claim(election_id):
        return
    try:
        # Through the broker's circuit breaker: a hanging broker costs one timeout per
        # process per interval, not one per write (election_monitor.resilience).
        broker_breaker().call(
            flush_dirty_buckets.apply_async, (election_id,), countdown=settings.METRICS_FLUSH_DEBOUNCE_SECONDS
        )
    except Exception:
        # The marks are safe in the database; the beat sweep will flush them.
        metrics_cache.flush_pending_clear(election_id)
        logger.warning("could not queue a metrics flush for election %s; the sweep will", election_id, exc_info=True)


@shared_task(name="metrics.flush_dirty_buckets", **RETRY)
def flush_dirty_buckets(election_id: int) -> int:
    outcome = pipeline.dirty_buckets_flush_all(election_id=election_id)
    if outcome.more:
        flush_request(election_id)  # hand over to a fresh task: others' elections get a turn
    return outcome.consumed


@shared_task(name="metrics.sweep_active_elections", expires=300, **RETRY)
def sweep_active_elections() -> list[dict]:
    return pipeline.active_elections_sweep()


@shared_task(name="metrics.verify_settled_elections", expires=23 * 3600, **RETRY)
def verify_settled_elections() -> list[dict]:
    checks = pipeline.settled_elections_verify()
    return [
        {
            "election_id": c.election_id,
            "repaired_buckets": c.repaired_buckets,
            "repaired_constituencies": c.repaired_constituencies,
        }
        for c in checks
    ]


@shared_task(name="metrics.recompute_election", **RETRY)
def recompute_election(
    election_id: int, constituency_id: int | None = None, since: str | None = None, until: str | None = None
) -> dict:
    result = pipeline.election_recompute(
        election_id=election_id,
        constituency_ids=None if constituency_id is None else [constituency_id],
        since=datetime.fromisoformat(since) if since else None,
        until=datetime.fromisoformat(until) if until else None,
    )
    logger.info("recomputed election %s constituency %s: %s", election_id, constituency_id, result)
    return asdict(result)
