"""Celery tasks: thin doors into metrics.pipeline. They take ids and are safe to run twice."""

import logging

from celery import shared_task
from django.db import InterfaceError, OperationalError
from kombu.exceptions import OperationalError as BrokerOperationalError

logger = logging.getLogger(__name__)

# Only errors that can pass are retried: a database restart or failover, a broker blip.
RETRYABLE = (OperationalError, InterfaceError, BrokerOperationalError, ConnectionError)
RETRY = {
    "autoretry_for": RETRYABLE,
    "retry_backoff": 1,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": 10,
    "acks_late": True,
}


@shared_task(name="metrics.flush_dirty_buckets", **RETRY)
def flush_dirty_buckets(election_id: int) -> int:
    from metrics.pipeline import dirty_buckets_flush_all

    return dirty_buckets_flush_all(election_id=election_id)


@shared_task(name="metrics.sweep_active_elections", expires=300, **RETRY)
def sweep_active_elections() -> list[dict]:
    from metrics.pipeline import active_elections_sweep

    return active_elections_sweep()


@shared_task(name="metrics.recompute_election", **RETRY)
def recompute_election(
    election_id: int, constituency_id: int | None = None, since: str | None = None, until: str | None = None
) -> dict:
    from dataclasses import asdict
    from datetime import datetime

    from metrics.pipeline import election_recompute

    result = election_recompute(
        election_id=election_id,
        constituency_ids=None if constituency_id is None else [constituency_id],
        since=datetime.fromisoformat(since) if since else None,
        until=datetime.fromisoformat(until) if until else None,
    )
    logger.info("recomputed election %s constituency %s: %s", election_id, constituency_id, result)
    return asdict(result)
