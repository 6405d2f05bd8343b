"""What was observed: elections, their constituencies and the transaction stream."""

from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models, transaction
from django.db.models import F, Q
from django.utils import timezone

from elections.bounds import timestamp_window_error, validate_election_date
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
    starts_at = models.DateTimeField(validators=[validate_election_date])
    ends_at = models.DateTimeField(validators=[validate_election_date])
    created_at = models.DateTimeField(auto_now_add=True)
    # Set by certification (elections.services.election_certify): from then on every write to
    # the election, its constituencies and its transactions is refused until un-certified.
    certified_at = models.DateTimeField(null=True, blank=True, editable=False)
    certified_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )

    objects = ElectionQuerySet.as_manager()

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(condition=Q(ends_at__gt=F("starts_at")), name="election_window_positive"),
        ]
        permissions = [
            ("ingest_data", "Can ingest elections, constituencies and transactions through the API"),
            ("certify_election", "Can certify and un-certify elections"),
        ]

    def __str__(self) -> str:
        return f"{self.code} ({self.name})"

    @property
    def tz(self):
        return zone(self.timezone)

    def status_at(self, now: datetime) -> str:
        if now < self.starts_at:
            return ElectionStatus.SCHEDULED
        # Subtle: the grace period is subtracted from now, never added to a stored ends_at,
        # which may lie near year 9999 in rows from before the bounds (no overflow).
        if now - grace_period() < self.ends_at:
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
        # The registered voters of a flush's spike peers, read in id order without the table,
        # whose rows carry every figure (docs/PERFORMANCE.md, "National scale").
        indexes = [models.Index(fields=["election", "id", "registered_voters"], name="constituency_voters")]

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
    # Who sent it, through which path (README, Trusted writes). Subtle: no database constraint and
    # no index: the batch row is written by the same service, in the same transaction, just
    # before; a constraint would add a check per inserted row to the hottest insert.
    batch = models.ForeignKey(
        "IngestBatch",
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        related_name="+",
        db_constraint=False,
        db_index=False,
    )

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
        if self.timestamp and self.constituency_id:
            election = self.constituency.election
            if problem := timestamp_window_error(self.timestamp, (election.starts_at, election.ends_at)):
                raise ValidationError({"timestamp": problem})

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


class IngestSource(models.TextChoices):
    API = "api"
    IMPORT = "import"
    ADMIN = "admin"


class IngestBatch(models.Model):
    """One delivery of observed data: an API request, an import run, an admin save.

    Every transaction points at the batch that stored it, so who sent what, through which
    path, is always answerable (README, Trusted writes)."""

    election = models.ForeignKey(Election, on_delete=models.CASCADE, related_name="batches")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    source = models.CharField(max_length=16, choices=IngestSource.choices)
    label = models.CharField(max_length=255, blank=True, help_text="The file imported, or the request's path.")
    created_at = models.DateTimeField(default=timezone.now)
    created = models.IntegerField(default=0)
    duplicates = models.IntegerField(default=0)
    conflicts = models.IntegerField(default=0)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "ingest batches"

    def __str__(self) -> str:
        return f"#{self.pk} {self.source} {self.label}".strip()


class IngestGrant(models.Model):
    """Limits a user's ingest credential to an election, or to one constituency of it.

    A user with no grant may write wherever the ingest permission allows; a user with
    grants only inside them (a write outside is refused with 403 and stores nothing)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="ingest_grants")
    election = models.ForeignKey(Election, on_delete=models.CASCADE, related_name="+")
    constituency = models.ForeignKey(Constituency, null=True, blank=True, on_delete=models.CASCADE, related_name="+")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "election", "constituency"], name="ingest_grant_unique"),
        ]

    def __str__(self) -> str:
        where = f"constituency {self.constituency_id}" if self.constituency_id else "every constituency"
        return f"{self.user_id}: election {self.election_id}, {where}"

    def clean(self):
        if self.constituency_id and self.constituency.election_id != self.election_id:
            raise ValidationError({"constituency": "The constituency belongs to another election."})


class CertificationAction(models.TextChoices):
    CERTIFY = "certify"
    UNCERTIFY = "uncertify"


class CertificationEvent(models.Model):
    """Append-only log of certifications and un-certifications."""

    election = models.ForeignKey(Election, on_delete=models.CASCADE, related_name="certifications")
    action = models.CharField(max_length=16, choices=CertificationAction.choices)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    reason = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.action} election {self.election_id} at {self.created_at.isoformat()}"


class AuditAction(models.TextChoices):
    ADD = "add"
    CHANGE = "change"
    DELETE = "delete"


class AuditEntry(models.Model):
    """Append-only record of an admin edit or delete of observed data: who, when, what.

    Kept when the object itself is deleted (no foreign key to it); the user's name is
    copied so that the entry outlives the account."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    username = models.CharField(max_length=150)
    action = models.CharField(max_length=16, choices=AuditAction.choices)
    model = models.CharField(max_length=64)
    object_id = models.BigIntegerField()
    object_repr = models.CharField(max_length=255)
    changes = models.JSONField(default=dict, help_text="Field -> [before, after]; for deletes, the values deleted.")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "audit entries"
        indexes = [models.Index(fields=["model", "object_id"], name="audit_object")]

    def __str__(self) -> str:
        return f"{self.username} {self.action} {self.model} {self.object_id}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise ValidationError("Audit entries are append-only.")
        super().save(*args, **kwargs)
