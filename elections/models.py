"""What was observed: elections, their constituencies and the transaction stream."""

from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models, transaction
from django.db.models import F, Q
from django.utils import timezone

from elections.timebuckets import hour_bucket, timezone_names, zone


def validate_timezone_name(value: str) -> None:
    if value not in timezone_names():
        raise ValidationError(f"'{value}' is not an IANA timezone name (e.g. Europe/Moscow).")


class ElectionStatus(models.TextChoices):
    SCHEDULED = "scheduled"
    ACTIVE = "active"
    CLOSED = "closed"


def grace_period() -> timedelta:
    return timedelta(hours=settings.ELECTION_GRACE_PERIOD_HOURS)


class ElectionQuerySet(models.QuerySet):
    def active(self, now: datetime | None = None):
        """Inside the voting window or its grace period after it (late data still arrives)."""
        now = now or timezone.now()
        return self.filter(starts_at__lte=now, ends_at__gt=now - grace_period())


class Election(models.Model):
    code = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=255)
    timezone = models.CharField(max_length=64, validators=[validate_timezone_name])
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    objects = ElectionQuerySet.as_manager()

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(condition=Q(ends_at__gt=F("starts_at")), name="election_window_positive"),
        ]
        permissions = [("ingest_data", "Can ingest elections, constituencies and transactions through the API")]

    def __str__(self) -> str:
        return f"{self.code} ({self.name})"

    @property
    def tz(self):
        return zone(self.timezone)

    def status_at(self, now: datetime) -> str:
        if now < self.starts_at:
            return ElectionStatus.SCHEDULED
        if now < self.ends_at + grace_period():
            return ElectionStatus.ACTIVE
        return ElectionStatus.CLOSED

    @property
    def status(self) -> str:
        return self.status_at(timezone.now())

    def clean(self):
        if self.starts_at and self.ends_at and self.ends_at <= self.starts_at:
            raise ValidationError({"ends_at": "The voting window must end after it starts."})
        if self.pk:
            stored_tz = Election.objects.filter(pk=self.pk).values_list("timezone", flat=True).first()
            if stored_tz and stored_tz != self.timezone and self.transactions.exists():
                # Hour buckets are stored on each transaction; re-bucketing a live stream is
                # not something to do silently.
                raise ValidationError({"timezone": "Cannot change the timezone of an election with transactions."})


# Written only by metrics.aggregation; read-only everywhere else (admin, API).
CONSTITUENCY_FIGURES = (
    "total_bulletins_issued",
    "total_votes_cast",
    "total_transactions",
    "total_anomalies",
    "participation_rate",
    "anomaly_score",
)
CONSTITUENCY_METRIC_FIELDS = (*CONSTITUENCY_FIGURES, "metrics_updated_at")


class Constituency(models.Model):
    election = models.ForeignKey(Election, on_delete=models.CASCADE, related_name="constituencies")
    code = models.CharField(max_length=64)
    name = models.CharField(max_length=255)
    registered_voters = models.PositiveIntegerField(validators=[MinValueValidator(1)])

    # Latest calculated metrics, written only by metrics.aggregation.
    total_bulletins_issued = models.BigIntegerField(default=0, editable=False)
    total_votes_cast = models.BigIntegerField(default=0, editable=False)
    total_transactions = models.BigIntegerField(default=0, editable=False)
    total_anomalies = models.IntegerField(default=0, editable=False)
    participation_rate = models.FloatField(default=0.0, editable=False)
    anomaly_score = models.FloatField(default=0.0, editable=False)
    metrics_updated_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["id"]
        verbose_name_plural = "constituencies"
        constraints = [
            models.UniqueConstraint(fields=["election", "code"], name="constituency_code_unique_in_election"),
            models.CheckConstraint(
                condition=Q(registered_voters__gt=0), name="constituency_registered_voters_positive"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.code} ({self.name})"

    def save(self, *args, **kwargs):
        # Subtle: an instance loaded before the last recompute (admin form, shell) holds stale
        # metrics; a plain save() would write them back over the calculator's. Updates write
        # only the fields a person can edit.
        if not self._state.adding and kwargs.get("update_fields") is None and not kwargs.get("force_insert"):
            kwargs["update_fields"] = [f.name for f in self._meta.concrete_fields if f.editable and not f.primary_key]
        super().save(*args, **kwargs)


class TransactionKind(models.TextChoices):
    BULLETIN_ISSUED = "bulletin_issued"
    VOTE_CAST = "vote_cast"
    OTHER = "other"


class Transaction(models.Model):
    # Unique through Meta.constraints, not unique=True: on PostgreSQL unique=True also builds
    # a varchar_pattern_ops "_like" index, a second B-tree on every insert that nothing reads
    # (tx_hash is only ever looked up exactly).
    tx_hash = models.CharField(max_length=128)
    election = models.ForeignKey(Election, on_delete=models.CASCADE, related_name="transactions", db_index=False)
    constituency = models.ForeignKey(
        Constituency, on_delete=models.CASCADE, related_name="transactions", db_index=False
    )
    kind = models.CharField(max_length=32, choices=TransactionKind.choices)
    timestamp = models.DateTimeField()
    # Start of the local hour (election timezone) holding ``timestamp``; derived on every
    # write so aggregation is a plain GROUP BY and one bucket is one index range.
    hour = models.DateTimeField(editable=False)
    block_number = models.BigIntegerField(null=True, blank=True)
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]
        indexes = [
            # Covering: a bucket's recount (metrics.aggregation._recount) reads only the index,
            # never the heap pages its rows are scattered over (PostgreSQL; SQLite ignores
            # INCLUDE and keeps the plain index).
            models.Index(
                fields=["constituency", "hour"],
                include=["election", "kind", "timestamp"],
                name="tx_constituency_hour_cov",
            ),
            models.Index(fields=["election", "hour"], name="tx_election_hour"),
        ]
        constraints = [
            # ON CONFLICT (tx_hash) in elections.services infers this constraint's index.
            models.UniqueConstraint(fields=["tx_hash"], name="transaction_tx_hash_unique"),
        ]

    def __str__(self) -> str:
        return self.tx_hash

    def save(self, *args, **kwargs):
        # Keep the derived bucket and the election in step with the constituency (the bulk
        # path derives the same in elections.services). No side effects: the post_save
        # receiver of the metrics app is the one that reacts.
        if self.election_id is None and self.constituency_id is not None:
            self.election_id = self.constituency.election_id
        if self.constituency.election_id != self.election_id:
            raise ValidationError({"constituency": "The constituency belongs to another election."})
        loaded_election_id = getattr(self, "loaded_election_id", None)
        if loaded_election_id is not None and loaded_election_id != self.election_id:
            # The old election's stats would keep counting it: delete and re-ingest instead.
            raise ValidationError({"election": "A stored transaction cannot move to another election."})
        if timezone.is_naive(self.timestamp):
            raise ValidationError({"timestamp": "The timestamp must carry a UTC offset."})
        self.hour = hour_bucket(self.timestamp, self.election.tz)
        update_fields = kwargs.get("update_fields")
        if update_fields is not None and "timestamp" in update_fields:
            kwargs["update_fields"] = {*update_fields, "hour"}
        # Subtle: post_save writes the dirty mark; atomic makes it commit with the row even
        # when the caller is in autocommit (a shell).
        with transaction.atomic():
            super().save(*args, **kwargs)

    def clean(self):
        if self.constituency_id and self.election_id and self.constituency.election_id != self.election_id:
            raise ValidationError({"constituency": "The constituency belongs to another election."})

    @classmethod
    def from_db(cls, db, field_names, values):
        instance = super().from_db(db, field_names, values)
        instance.remember_bucket()
        instance.loaded_election_id = instance.__dict__.get("election_id")
        return instance

    def remember_bucket(self) -> None:
        """The bucket the row is stored in, so that moving it can announce the old one too."""
        self._stored_bucket = (self.__dict__.get("constituency_id"), self.__dict__.get("hour"))

    def loaded_buckets(self) -> set[tuple]:
        stored = getattr(self, "_stored_bucket", None)
        return {stored} if stored and stored[0] is not None else set()
