"""Alert channels and the record of every notification sent through them (SPEC section 12).

A delivery is one (event, channel) pair, unique in the database: that key is what makes an
alert go out at most once per channel, whoever dispatches it and however often.
"""

import uuid

from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.core.validators import URLValidator, validate_email
from django.db import models
from django.db.models import Q
from django.utils import timezone

from elections.models import Election
from metrics.models import AnomalyKind, EpisodeEvent

WEBHOOK_URL_VALIDATOR = URLValidator(schemes=["http", "https"])


class ChannelKind(models.TextChoices):
    WEBHOOK = "webhook"
    EMAIL = "email"


class AlertEventType(models.TextChoices):
    """What a notification announces: an episode event (SPEC section 12), or a message such
    as the drift verification's (SPEC section 10)."""

    OPENED = "opened"
    CLOSED = "closed"
    WITHDRAWN = "withdrawn"
    MESSAGE = "message"


def recipients_split(text: str) -> list[str]:
    """E-mail addresses separated by commas, semicolons or line breaks."""
    return [part.strip() for part in text.replace(";", ",").replace("\n", ",").split(",") if part.strip()]


class AlertChannel(models.Model):
    """Where alerts go: one webhook URL or a list of e-mail recipients, for one election or
    (``election`` empty) for every election."""

    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=16, choices=ChannelKind.choices)
    election = models.ForeignKey(
        Election,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="+",
        help_text="Only this election's alerts; empty: every election's (a global channel).",
    )
    enabled = models.BooleanField(default=True)
    url = models.CharField(
        max_length=500, blank=True, validators=[WEBHOOK_URL_VALIDATOR], help_text="Webhook: an http(s) URL."
    )
    secret = models.CharField(
        max_length=200,
        blank=True,
        help_text="Webhook: the HMAC-SHA256 key of the X-Election-Monitor-Signature header.",
    )
    recipients = models.TextField(blank=True, help_text="E-mail: addresses separated by commas or line breaks.")
    events = models.JSONField(
        default=list, blank=True, help_text="Only these event types (opened, closed, withdrawn, message); empty: all."
    )
    anomaly_kinds = models.JSONField(
        default=list, blank=True, help_text="Only episodes of these anomaly kinds; empty: all."
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"

    def clean(self):
        errors = {}
        if self.kind == ChannelKind.WEBHOOK:
            if not self.url:
                errors["url"] = "A webhook needs a URL."
            if not self.secret:
                errors["secret"] = "A webhook needs a secret to sign its body with."
        elif self.kind == ChannelKind.EMAIL:
            addresses = recipients_split(self.recipients)
            if not addresses:
                errors["recipients"] = "An e-mail channel needs at least one recipient."
            for address in addresses:
                try:
                    validate_email(address)
                except ValidationError:
                    errors["recipients"] = f"Not an e-mail address: {address!r}."
        unknown = set(self.events or []) - set(AlertEventType.values)
        if unknown:
            errors["events"] = f"Unknown event types: {', '.join(sorted(unknown))}."
        unknown = set(self.anomaly_kinds or []) - set(AnomalyKind.values)
        if unknown:
            errors["anomaly_kinds"] = f"Unknown anomaly kinds: {', '.join(sorted(unknown))}."
        if errors:
            raise ValidationError(errors)

    @property
    def recipient_list(self) -> list[str]:
        return recipients_split(self.recipients)

    def accepts(self, *, event_type: str, anomaly_kind: str | None) -> bool:
        """Whether this channel's filters let an event of this type (and kind) through."""
        if self.events and event_type not in self.events:
            return False
        return not (self.anomaly_kinds and anomaly_kind is not None and anomaly_kind not in self.anomaly_kinds)


class AlertMessage(models.Model):
    """A free-form alert (the drift verification's repairs), delivered like episode events."""

    election = models.ForeignKey(Election, on_delete=models.CASCADE, null=True, blank=True, related_name="+")
    subject = models.CharField(max_length=200)
    body = models.JSONField(default=dict, encoder=DjangoJSONEncoder)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return self.subject


class DispatchedEvent(models.Model):
    """Marks an episode event whose deliveries were created, in the same transaction as they
    were: the recovery job dispatches the events without a mark (README, "Alerts").

    An event is dispatched once, to the channels enabled and matching at that moment; a
    channel added later does not receive older events.
    """

    event = models.OneToOneField(
        EpisodeEvent, on_delete=models.CASCADE, primary_key=True, related_name="alert_dispatch"
    )
    dispatched_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"event {self.event_id} dispatched at {self.dispatched_at.isoformat()}"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"
    SENDING = "sending"
    DELIVERED = "delivered"
    FAILED = "failed"


class AlertDelivery(models.Model):
    """One notification of one event (an episode event or a message) through one channel.

    ``uuid`` is sent with every attempt (header and body): a resend after a worker died
    between sending and recording carries the same id, and receivers dedupe on it
    (README, "Alerts"). ``attempts`` doubles as the fencing token of a claim: a worker
    records its outcome only if nobody claimed the row after it.
    """

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    # Exactly one of event and message is set (a check constraint says so).
    event = models.ForeignKey(EpisodeEvent, on_delete=models.CASCADE, null=True, related_name="+", db_index=False)
    message = models.ForeignKey(
        AlertMessage, on_delete=models.CASCADE, null=True, related_name="deliveries", db_index=False
    )
    # Subtle: RESTRICT, not CASCADE: deleting a channel would erase the record of what it was
    # sent; disable it instead. Deleting an election still removes its deliveries, through
    # their events (a cascade RESTRICT allows).
    channel = models.ForeignKey(AlertChannel, on_delete=models.RESTRICT, related_name="deliveries")
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(default=timezone.now, help_text="Not sent before this instant.")
    lease_until = models.DateTimeField(
        null=True, blank=True, help_text="While sending: another worker may take over after this instant."
    )
    created_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "alert deliveries"
        ordering = ["-id"]
        constraints = [
            # The at-most-once keys (their leading column also serves lookups by event).
            models.UniqueConstraint(fields=["event", "channel"], name="alert_delivery_once_per_event_channel"),
            models.UniqueConstraint(fields=["message", "channel"], name="alert_delivery_once_per_message_channel"),
            models.CheckConstraint(
                condition=Q(event__isnull=False, message__isnull=True) | Q(event__isnull=True, message__isnull=False),
                name="alert_delivery_event_xor_message",
            ),
        ]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="alert_delivery_status_due")]

    def __str__(self) -> str:
        return f"delivery {self.uuid} via {self.channel_id}: {self.status}"
