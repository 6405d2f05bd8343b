"""Celery tasks: thin doors into alerts.services. They take ids and are safe to run twice."""

from celery import shared_task
from django.conf import settings

from metrics.tasks import RETRYABLE


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
    from alerts.services import alert_delivery_attempt

    result = alert_delivery_attempt(delivery_id=delivery_id)
    if result.retry_in is not None and not self.request.is_eager:
        # The attempt count in the delivery row bounds the retries, not Celery's counter.
        # In-process (eager) nothing can hold a countdown: the row stays pending, due at its
        # next_attempt_at, for the recovery job.
        raise self.retry(countdown=result.retry_in, max_retries=None)
    return result.status


@shared_task(name="alerts.recover_deliveries", acks_late=True, expires=55, autoretry_for=RETRYABLE, max_retries=3)
def recover_deliveries() -> dict:
    from alerts.services import alert_deliveries_recover

    return alert_deliveries_recover()
