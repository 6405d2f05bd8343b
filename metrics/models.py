"""What we derive from the transaction stream: hourly statistics, anomaly flags and episodes."""

from datetime import datetime

from django.db import models
from django.utils import timezone

from elections.models import Constituency, Election


class HourlyStatsQuerySet(models.QuerySet):
    """The reads of the seed plan's HourlyStats CRUD, each served by an index."""

    def for_constituency(self, constituency_id: int) -> "HourlyStatsQuerySet":
        return self.filter(constituency_id=constituency_id)

    def for_election(self, election_id: int) -> "HourlyStatsQuerySet":
        return self.filter(election_id=election_id)

    def between(self, start: datetime | None = None, end: datetime | None = None) -> "HourlyStatsQuerySet":
        """Hours with ``start`` <= hour < ``end`` (the API's convention); either bound optional."""
        queryset = self
        if start is not None:
            queryset = queryset.filter(hour__gte=start)
        if end is not None:
            queryset = queryset.filter(hour__lt=end)
        return queryset

    def latest(self, *fields):
        """The row of the most recent hour (ties: the newest row) unless fields are given."""
        return super().latest(*(fields or ("hour", "id")))


# Everything a recompute writes on an hourly row (the rest is its key).
HOURLY_COMPUTED_FIELDS = (
    "bulletins_issued",
    "votes_cast",
    "transaction_count",
    "bulletin_velocity",
    "vote_velocity",
    "participation_rate",
    "anomaly_count",
    "timestamp",
)


class HourlyStats(models.Model):
    """One row per (constituency, local hour) holding at least one transaction."""

    # Subtle: no database constraint and no index of its own. The constituency's key already
    # pins the election, whose (election, hour) index serves every lookup by election; the
    # constraint's check and the index cost a full recompute a trigger and an index entry
    # per new row (docs/PERFORMANCE.md, full recompute). The ORM still cascades deletes.
    election = models.ForeignKey(
        Election, on_delete=models.CASCADE, related_name="hourly_stats", db_constraint=False, db_index=False
    )
    constituency = models.ForeignKey(
        Constituency, on_delete=models.CASCADE, related_name="hourly_stats", db_index=False
    )
    hour = models.DateTimeField(help_text="Bucket start: the local hour in the election's timezone, as an instant.")
    bulletins_issued = models.IntegerField(default=0)
    votes_cast = models.IntegerField(default=0)
    transaction_count = models.IntegerField(default=0)
    bulletin_velocity = models.FloatField(default=0.0, help_text="Bulletins per minute.")
    vote_velocity = models.FloatField(default=0.0, help_text="Votes per minute.")
    participation_rate = models.FloatField(
        default=0.0, help_text="100 × cumulative votes up to the end of this hour ÷ registered voters."
    )
    anomaly_count = models.IntegerField(default=0)
    timestamp = models.DateTimeField(default=timezone.now, help_text="When this row was last computed.")

    objects = HourlyStatsQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "hourly stats"
        ordering = ["hour", "constituency_id"]
        constraints = [
            models.UniqueConstraint(fields=["constituency", "hour"], name="hourly_stats_unique_bucket"),
        ]
        # A flush judges its hour's velocity spikes against every row of that hour: this index
        # answers that read (constituency and votes, in constituency order) without the
        # table, whose rows of one hour lie on as many pages as there are constituencies
        # (docs/PERFORMANCE.md, "National scale").
        indexes = [
            models.Index(fields=["election", "hour", "constituency", "votes_cast"], name="hourly_stats_hour_peers")
        ]

    def __str__(self) -> str:
        return f"{self.constituency_id} @ {self.hour.isoformat()}"


class AnomalyKind(models.TextChoices):
    TURNOUT_OVER_100 = "turnout_over_100"
    VOTES_EXCEED_BULLETINS = "votes_exceed_bulletins"
    VELOCITY_SPIKE = "velocity_spike"
    OUTSIDE_VOTING_WINDOW = "outside_voting_window"
    # Reconciliation of the stream against a published protocol (docs/METRICS.md#stream_protocol_mismatch).
    STREAM_PROTOCOL_MISMATCH = "stream_protocol_mismatch"


class Anomaly(models.Model):
    election = models.ForeignKey(Election, on_delete=models.CASCADE, related_name="anomalies", db_index=False)
    constituency = models.ForeignKey(Constituency, on_delete=models.CASCADE, related_name="anomalies", db_index=False)
    hour = models.DateTimeField()
    kind = models.CharField(max_length=32, choices=AnomalyKind.choices)
    weight = models.FloatField()
    details = models.JSONField(default=dict)
    detected_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "anomalies"
        ordering = ["-hour", "constituency_id", "kind"]
        constraints = [
            models.UniqueConstraint(fields=["constituency", "hour", "kind"], name="anomaly_unique_per_bucket_kind"),
        ]
        indexes = [
            models.Index(fields=["election", "hour"], name="anomaly_election_hour"),
            models.Index(fields=["election", "kind", "hour"], name="anomaly_election_kind_hour"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.constituency_id} @ {self.hour.isoformat()}"


class Episode(models.Model):
    """A maximal run of one constituency's flagged hours of one kind (docs/METRICS.md#episodes).

    Consecutive means consecutive among the constituency's hours with data, so a night
    without transactions does not split a run. Re-derived from the Anomaly rows by
    ``metrics.episodes.episodes_refresh``; its identity is (constituency, kind, first_hour).
    """

    election = models.ForeignKey(Election, on_delete=models.CASCADE, related_name="episodes", db_index=False)
    constituency = models.ForeignKey(Constituency, on_delete=models.CASCADE, related_name="episodes", db_index=False)
    kind = models.CharField(max_length=32, choices=AnomalyKind.choices)
    first_hour = models.DateTimeField()
    last_hour = models.DateTimeField()
    hours = models.IntegerField(help_text="Flagged hours in the episode.")
    peak = models.FloatField(null=True, help_text="The largest magnitude of its hours; null when none is defined.")
    open = models.BooleanField(help_text="Its last hour is the constituency's latest hour with data.")
    weight = models.FloatField()
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-last_hour", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["constituency", "kind", "first_hour"], name="episode_unique_identity"),
        ]
        indexes = [
            # The API's order, whole or per election; the identity's index serves constituency reads.
            models.Index(fields=["-last_hour", "-id"], name="episode_recent"),
            models.Index(fields=["election", "-last_hour", "-id"], name="episode_election_recent"),
            models.Index(fields=["election", "kind", "open"], name="episode_election_kind_open"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.constituency_id} from {self.first_hour.isoformat()}"


class EpisodeEventKind(models.TextChoices):
    OPENED = "opened"
    CLOSED = "closed"
    WITHDRAWN = "withdrawn"


class EpisodeEvent(models.Model):
    """The outbox of episode changes that alerts deliver (docs/METRICS.md#episode-events).

    Written in the same database transaction as the episode change it records, so an
    event is never lost to a crash between the two nor recorded for a change that rolled
    back. ``payload`` holds the episode's fields at the event: a withdrawn episode's row is
    gone, its event is not. See docs/METRICS.md#episode-events for how merges and splits map to events.
    """

    election = models.ForeignKey(Election, on_delete=models.CASCADE, related_name="+", db_index=False)
    constituency = models.ForeignKey(Constituency, on_delete=models.CASCADE, related_name="+", db_index=False)
    kind = models.CharField(max_length=32, choices=AnomalyKind.choices)
    first_hour = models.DateTimeField()
    event = models.CharField(max_length=16, choices=EpisodeEventKind.choices)
    payload = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["election", "id"], name="episode_event_election_id"),
            models.Index(fields=["constituency", "kind", "first_hour"], name="episode_event_identity"),
        ]

    def __str__(self) -> str:
        return f"{self.event} {self.kind} {self.constituency_id} from {self.first_hour.isoformat()}"


class DirtyBucket(models.Model):
    """A durable mark that a bucket's stats must be recomputed.

    Written in the same database transaction as the data that made it dirty, so a crash, a
    lost task or an unreachable broker never loses the need to recompute. Append-only: a
    flush deletes exactly the marks it read, so a mark added while it runs survives it.
    ``hour`` null means every hour of the constituency; ``constituency`` null, the whole
    election.
    """

    # Subtle: no database constraint on either key. A mark is written in the transaction of
    # the data that made it dirty, whose own keys already hold the election and constituency,
    # and checking both again for every mark at commit was a large share of a big ingest
    # (docs/PERFORMANCE.md). Deleting through the ORM still cascades to the marks.
    election = models.ForeignKey(
        Election, on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False
    )
    constituency = models.ForeignKey(
        Constituency, on_delete=models.CASCADE, null=True, related_name="+", db_index=False, db_constraint=False
    )
    hour = models.DateTimeField(null=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["election", "id"], name="dirty_bucket_election_id")]

    def __str__(self) -> str:
        scope = "whole election" if self.constituency_id is None else f"constituency {self.constituency_id}"
        return f"election {self.election_id}, {scope}, {self.hour.isoformat() if self.hour else 'every hour'}"


class MetricsVersion(models.Model):
    """How many times an election's figures have been recomputed: the version cached reads
    are checked against (metrics/cache.py).

    Written by every recompute in its own database transaction, so a reader in any process
    sees a new version exactly when the figures it stands for are committed, even if every
    cache write around it failed.
    """

    election = models.OneToOneField(Election, on_delete=models.CASCADE, primary_key=True, related_name="+")
    version = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"election {self.election_id} v{self.version}"


class DriftCheck(models.Model):
    """One verification of a settled (not active) election against its transactions, with
    what it repaired: figures that drifted from the data are repaired, logged as an error,
    and announced to the alert channels."""

    election = models.ForeignKey(Election, on_delete=models.CASCADE, related_name="+")
    checked_at = models.DateTimeField(default=timezone.now)
    repaired_buckets = models.IntegerField(default=0)
    repaired_constituencies = models.IntegerField(default=0)
    details = models.JSONField(default=dict, help_text="Up to 100 of the repaired buckets, as they were found.")

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["election", "-checked_at"], name="drift_check_election")]

    def __str__(self) -> str:
        return f"election {self.election_id} checked {self.checked_at.isoformat()}"

    @property
    def drifted(self) -> bool:
        return bool(self.repaired_buckets or self.repaired_constituencies)


class RecomputeRun(models.Model):
    """A full recompute of an election spread over Celery workers (metrics/parallel.py).

    Every step computes at the run's ``now``, so the parts agree with each other exactly as
    one process would with itself."""

    election = models.ForeignKey(Election, on_delete=models.CASCADE, related_name="+")
    now = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"recompute of election {self.election_id} at {self.now.isoformat()}"


class RecomputeStage(models.TextChoices):
    PART = "part"  # every hour of a span of constituencies, spikes aside
    SPIKES = "spikes"  # one hour's velocity spikes, judged across all its constituencies


class RecomputeStep(models.Model):
    """One task of a run; ``done_at`` makes a redelivered task a no-op, and the step that
    leaves none of its stage undone starts the next stage."""

    run = models.ForeignKey(RecomputeRun, on_delete=models.CASCADE, related_name="steps")
    stage = models.CharField(max_length=16, choices=RecomputeStage.choices)
    first = models.BigIntegerField(null=True, help_text="Lowest constituency id of a part.")
    last = models.BigIntegerField(null=True, help_text="Highest constituency id of a part.")
    hour = models.DateTimeField(null=True, help_text="The hour of a spikes step.")
    done_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["run", "stage"], name="recompute_step_run_stage")]

    def __str__(self) -> str:
        what = f"constituencies {self.first}-{self.last}" if self.stage == RecomputeStage.PART else self.hour
        return f"run {self.run_id} {self.stage} {what}"
