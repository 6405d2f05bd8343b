"""Celery tasks and their queueing: thin doors into alerts.services. They take ids and are
safe to run twice."""

import logging
from collections.abc import Iterable

from celery import shared_task
from django.conf import settings
from django.db import transaction

from alerts import services
from metrics.tasks import RETRYABLE

logger = logging.getLogger(__name__)


@shared_task(
    bind=True,
    name="alerts.deliver",
    acks_late=True,
    # Database and broker errors around the attempt; a failed send is retried below instead.
    autoretry_for=RETRYABLE,
    retry_backoff=1,
    retry_backoff_max=60,
    retry_jitter=True,
    max_retries=10,
    # An attempt never outlives its lease (settings, "Alerts and e-mail").
    soft_time_limit=settings.ALERTS_LEASE_SECONDS * 0.4,
    time_limit=settings.ALERTS_LEASE_SECONDS / 2,
)
def deliver_alert(self, delivery_id: int) -> str:
    result = services.alert_delivery_attempt(delivery_id=delivery_id)
    if result.retry_in is not None and not self.request.is_eager:
        # The attempt count in the delivery row bounds the retries, not Celery's counter.
        # In-process (eager) nothing can hold a countdown: the row stays pending, due at its
        # next_attempt_at, for the recovery job.
        raise self.retry(countdown=result.retry_in, max_retries=None)
    return result.status


@shared_task(name="alerts.recover_deliveries", acks_late=True, expires=25, autoretry_for=RETRYABLE, max_retries=3)
def recover_deliveries() -> dict:
    result = services.alert_deliveries_recover()
    deliveries_queue(delivery_ids=result.to_queue)
    return result.counts()


def deliveries_queue(*, delivery_ids: Iterable[int]) -> None:
    """One delivery task per delivery. A publish that fails (broker down) is logged and
    left to the recovery job, which re-queues pending deliveries."""
    for delivery_id in delivery_ids:
        try:
            deliver_alert.delay(delivery_id)
        except Exception:
            logger.exception("could not queue alert delivery %s; the recovery job will", delivery_id)


def deliveries_queue_on_commit(delivery_ids: list[int]) -> None:
    """Queue after the current transaction commits (at once outside one), so a worker never
    looks for a delivery that is not there yet."""
    if delivery_ids:
        transaction.on_commit(lambda: deliveries_queue(delivery_ids=delivery_ids))
