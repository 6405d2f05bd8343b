"""Alerts: which deliveries exist (dispatch), and one attempt at sending each (delivery).

The guarantees and what happens when a worker dies at each step are in the README's
"Alerts" section. Nothing here queues a task: the functions return the delivery ids to
queue, and the doors (alerts.tasks, alerts.signals, alerts.notify) queue them.

In short: a delivery row per (event, channel), created once by a
conflict-ignoring insert; a worker sends only after claiming the row with a conditional
UPDATE; a recovery job on the beat finds what a dead process left behind.
"""

import json
import logging
import random
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from alerts.models import (
    AlertChannel,
    AlertDelivery,
    AlertEventType,
    AlertMessage,
    ChannelKind,
    DeliveryStatus,
    DispatchedEvent,
)
from alerts.transports import DeliveryFailed, email_send, webhook_post
from metrics.models import EpisodeEvent

logger = logging.getLogger(__name__)

# Events dispatched per database transaction, and rows per INSERT statement (9 parameters
# each, well under SQLite's limit of 32,766).
DISPATCH_CHUNK = 1000
INSERT_CHUNK = 500
# Deliveries the recovery job re-queues, and events it dispatches, per run.
RECOVERY_LIMIT = 5000


@dataclass(frozen=True)
class AttemptResult:
    """What one call of ``alert_delivery_attempt`` did: ``delivered``, ``retry`` (after
    ``retry_in`` seconds), ``failed``, or ``skipped`` (not ours to send: already delivered,
    failed, not due yet, or being sent by another worker)."""

    status: str
    retry_in: float | None = None


# --- Dispatch: which deliveries exist -----------------------------------------------------


def alert_channels_enabled(*, election_ids: Iterable[int]) -> list[AlertChannel]:
    """Enabled channels of these elections, and the global ones."""
    return list(
        AlertChannel.objects.filter(enabled=True).filter(
            Q(election__isnull=True) | Q(election_id__in=set(election_ids))
        )
    )


def episode_events_dispatch(*, event_ids: Iterable[int]) -> list[int]:
    """Create the deliveries of each event to each matching channel, once. Safe to run twice
    and concurrently: returns the ids of the deliveries this call created, which the caller
    queues (alerts.tasks.deliveries_queue_on_commit); a concurrent or earlier call's are not
    created again, so nobody queues them twice."""
    ids = sorted(set(event_ids))
    created: list[int] = []
    for start in range(0, len(ids), DISPATCH_CHUNK):
        chunk = ids[start : start + DISPATCH_CHUNK]
        with transaction.atomic():
            events = list(EpisodeEvent.objects.filter(id__in=chunk).values_list("id", "election_id", "kind", "event"))
            channels = alert_channels_enabled(election_ids={election_id for _, election_id, _, _ in events})
            rows = [
                (event_id, None, channel.id)
                for event_id, election_id, kind, event_type in events
                for channel in channels
                if channel.election_id in (None, election_id)
                and channel.accepts(event_type=event_type, anomaly_kind=kind)
            ]
            new_ids = _deliveries_insert(rows)
            DispatchedEvent.objects.bulk_create(
                [DispatchedEvent(event_id=event_id) for event_id, *_ in events], ignore_conflicts=True
            )
        created.extend(new_ids)
    return created


def alert_message_create(*, election_id: int | None, subject: str, body: dict) -> tuple[AlertMessage, list[int]]:
    """A message and its deliveries to every enabled channel of the election and the global
    ones (only the global ones when ``election_id`` is None); returns the message and the
    ids of its deliveries, for the caller to queue (alerts.notify.alert_send does both)."""
    with transaction.atomic():
        message = AlertMessage.objects.create(election_id=election_id, subject=subject[:200], body=body)
        channels = alert_channels_enabled(election_ids=[] if election_id is None else [election_id])
        rows = [
            (None, message.id, channel.id)
            for channel in channels
            if channel.election_id in (None, election_id)
            and channel.accepts(event_type=AlertEventType.MESSAGE, anomaly_kind=None)
        ]
        return message, _deliveries_insert(rows)


def _deliveries_insert(rows: list[tuple[int | None, int | None, int]]) -> list[int]:
    """Insert (event_id, message_id, channel_id) deliveries, skipping those that exist;
    returns the ids of the rows inserted.

    Subtle: raw SQL because Django's bulk_create(ignore_conflicts=True) does not say which
    rows it inserted, and only their creator may queue them (one task per delivery). The
    statement is the same on PostgreSQL and SQLite (3.35+): a concurrent insert of the same
    key waits for the other transaction and then does nothing.
    """
    if not rows:
        return []
    names = ("uuid", "event", "message", "channel", "status", "attempts", "last_error", "next_attempt_at", "created_at")
    fields = [AlertDelivery._meta.get_field(name) for name in names]
    quote = connection.ops.quote_name
    columns = ", ".join(quote(field.column) for field in fields)
    placeholder = "(" + ", ".join(["%s"] * len(fields)) + ")"
    now = timezone.now()
    inserted: list[int] = []
    for start in range(0, len(rows), INSERT_CHUNK):
        chunk = rows[start : start + INSERT_CHUNK]
        params = []
        for event_id, message_id, channel_id in chunk:
            values = (uuid.uuid4(), event_id, message_id, channel_id, DeliveryStatus.PENDING, 0, "", now, now)
            params.extend(
                field.get_db_prep_save(value, connection) for field, value in zip(fields, values, strict=True)
            )
        sql = (
            f"INSERT INTO {quote(AlertDelivery._meta.db_table)} ({columns}) "
            f"VALUES {', '.join([placeholder] * len(chunk))} ON CONFLICT DO NOTHING RETURNING {quote('id')}"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            inserted.extend(row[0] for row in cursor.fetchall())
    return inserted


# --- Delivery: one attempt ----------------------------------------------------------------


def alert_delivery_attempt(*, delivery_id: int) -> AttemptResult:
    """Claim the delivery, send it once, record the outcome.

    The claim is a conditional UPDATE (pending and due, or sending with an expired lease →
    sending, attempts + 1, a new lease): of any number of workers holding a task for this
    delivery, one wins and sends; the others return ``skipped``. The outcome is recorded
    only if the row still carries this attempt's number, so a worker whose lease expired
    never overwrites a newer attempt's record.
    """
    now = timezone.now()
    claimed = (
        AlertDelivery.objects.filter(pk=delivery_id, attempts__lt=settings.ALERTS_MAX_ATTEMPTS)
        .filter(
            Q(status=DeliveryStatus.PENDING, next_attempt_at__lte=now)
            | Q(status=DeliveryStatus.SENDING, lease_until__lt=now)
        )
        .update(
            status=DeliveryStatus.SENDING,
            attempts=F("attempts") + 1,
            lease_until=now + timedelta(seconds=settings.ALERTS_LEASE_SECONDS),
        )
    )
    if not claimed:
        return AttemptResult("skipped")
    delivery = (
        AlertDelivery.objects.select_related("channel", "event__election", "event__constituency", "message__election")
        .filter(pk=delivery_id)
        .first()
    )
    if delivery is None:  # its event or message was deleted meanwhile
        return AttemptResult("skipped")
    attempt = delivery.attempts
    channel = delivery.channel
    if not channel.enabled:
        _attempt_record(
            delivery, attempt, status=DeliveryStatus.FAILED, error="the channel was disabled before delivery"
        )
        return AttemptResult(DeliveryStatus.FAILED)

    payload = alert_payload(delivery)
    event_type = payload["type"]
    try:
        if channel.kind == ChannelKind.WEBHOOK:
            webhook_post(
                url=channel.url,
                secret=channel.secret,
                body=alert_body_encode(payload),
                delivery_id=str(delivery.uuid),
                event_type=event_type,
            )
        else:
            email_send(
                recipients=channel.recipient_list,
                subject=alert_subject(delivery),
                text=alert_text(delivery, payload),
                delivery_id=str(delivery.uuid),
                event_type=event_type,
            )
    except DeliveryFailed as failure:
        error = f"attempt {attempt}: {failure}"
        if failure.retryable and attempt < settings.ALERTS_MAX_ATTEMPTS:
            delay = retry_delay(attempt=attempt)
            _attempt_record(
                delivery,
                attempt,
                status=DeliveryStatus.PENDING,
                error=error,
                next_attempt_at=timezone.now() + timedelta(seconds=delay),
            )
            logger.warning("alert delivery %s: %s; retrying in %.1fs", delivery.uuid, error, delay)
            return AttemptResult("retry", retry_in=delay)
        _attempt_record(delivery, attempt, status=DeliveryStatus.FAILED, error=error)
        logger.error("alert delivery %s failed: %s", delivery.uuid, error)
        return AttemptResult(DeliveryStatus.FAILED)
    _attempt_record(delivery, attempt, status=DeliveryStatus.DELIVERED, delivered_at=timezone.now())
    return AttemptResult(DeliveryStatus.DELIVERED)


def _attempt_record(delivery: AlertDelivery, attempt: int, *, status: str, error: str | None = None, **fields) -> None:
    if error is not None:
        fields["last_error"] = error[:2000]
    recorded = AlertDelivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.SENDING, attempts=attempt).update(
        status=status, lease_until=None, **fields
    )
    if not recorded:
        logger.warning(
            "alert delivery %s: attempt %d outlived its lease; a later attempt owns the record", delivery.uuid, attempt
        )


def retry_delay(*, attempt: int) -> float:
    """Exponential backoff with jitter: half of base × 2^(attempt - 1) fixed, half random,
    at most the cap."""
    ceiling = min(settings.ALERTS_RETRY_MAX_SECONDS, settings.ALERTS_RETRY_BASE_SECONDS * 2 ** (attempt - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


# --- What is sent -------------------------------------------------------------------------


def alert_payload(delivery: AlertDelivery) -> dict:
    """The JSON of a webhook (and of an e-mail's body): the same on every attempt."""
    if delivery.event_id is not None:
        event = delivery.event
        return {
            "delivery_id": str(delivery.uuid),
            "type": f"episode.{event.event}",
            "election": {"id": event.election_id, "code": event.election.code},
            "event": {
                "id": event.id,
                "event": event.event,
                "kind": event.kind,
                "constituency": {"id": event.constituency_id, "code": event.constituency.code},
                "first_hour": event.first_hour,
                "created_at": event.created_at,
            },
            "episode": event.payload,
        }
    message = delivery.message
    election = message.election
    return {
        "delivery_id": str(delivery.uuid),
        "type": AlertEventType.MESSAGE.value,
        "election": None if election is None else {"id": election.id, "code": election.code},
        "message": {
            "id": message.id,
            "subject": message.subject,
            "body": message.body,
            "created_at": message.created_at,
        },
    }


def alert_body_encode(payload: dict) -> bytes:
    """The exact bytes that are sent and signed."""
    return json.dumps(payload, cls=DjangoJSONEncoder, sort_keys=True, separators=(",", ":")).encode()


def alert_subject(delivery: AlertDelivery) -> str:
    if delivery.event_id is not None:
        event = delivery.event
        return (
            f"[Election Monitor] {event.election.code}: {event.kind} episode {event.event} in {event.constituency.code}"
        )
    message = delivery.message
    scope = message.election.code if message.election_id else "all elections"
    return f"[Election Monitor] {scope}: {message.subject}"


def alert_text(delivery: AlertDelivery, payload: dict) -> str:
    details = json.dumps(payload, cls=DjangoJSONEncoder, indent=2, sort_keys=True)
    return f"{alert_subject(delivery)}\n\nDelivery {delivery.uuid}.\n\n{details}\n"


# --- Recovery: what a dead process left behind ----------------------------------------------


@dataclass(frozen=True)
class RecoveryResult:
    events_dispatched: int
    created: list[int]
    overdue: list[int]
    deliveries_lost: int

    @property
    def to_queue(self) -> list[int]:
        return [*self.created, *self.overdue]

    def counts(self) -> dict:
        return {
            "events_dispatched": self.events_dispatched,
            "deliveries_created": len(self.created),
            "deliveries_requeued": len(self.overdue),
            "deliveries_lost": self.deliveries_lost,
        }


def alert_deliveries_recover() -> RecoveryResult:
    """The beat job's work: dispatch episode events that were never dispatched (the process
    died between their commit and the receiver), fail deliveries whose last attempt was
    lost, and find the deliveries to queue again: overdue (their task lost) or with an
    expired lease (their worker died mid-attempt). The task queues what it returns."""
    now = timezone.now()
    settle = now - timedelta(seconds=settings.ALERTS_REQUEUE_AFTER_SECONDS)
    undispatched = list(
        EpisodeEvent.objects.filter(
            created_at__gte=now - timedelta(hours=settings.ALERTS_DISPATCH_LOOKBACK_HOURS),
            created_at__lte=settle,
            alert_dispatch__isnull=True,
        )
        .order_by("id")
        .values_list("id", flat=True)[:RECOVERY_LIMIT]
    )
    created = episode_events_dispatch(event_ids=undispatched) if undispatched else []
    lost = AlertDelivery.objects.filter(
        status=DeliveryStatus.SENDING, lease_until__lt=now, attempts__gte=settings.ALERTS_MAX_ATTEMPTS
    ).update(
        status=DeliveryStatus.FAILED,
        lease_until=None,
        last_error="the worker was lost during the last attempt: the receiver may or may not have it",
    )
    overdue = list(
        AlertDelivery.objects.filter(
            Q(status=DeliveryStatus.PENDING, next_attempt_at__lte=settle)
            | Q(status=DeliveryStatus.SENDING, lease_until__lt=now)
        )
        .order_by("id")
        .values_list("id", flat=True)[:RECOVERY_LIMIT]
    )
    result = RecoveryResult(events_dispatched=len(undispatched), created=created, overdue=overdue, deliveries_lost=lost)
    if undispatched or overdue or lost:
        logger.warning("alert recovery: %s", result.counts())
    return result
