"""What the commissions published after the count (SPEC section 11): one protocol per polling
station (constituency), the election's options, and a record of each import.

Observed data, like the transaction stream: written only by protocols.services, read by the
forensics figures and the reconciliation above it.
"""

from django.db import models

from elections.models import Constituency, Election


class ElectionOption(models.Model):
    """A party or candidate on the ballot. ``position`` is its index in every protocol's
    ``votes`` list (0-based, in the order the commission's file lists the options)."""

    election = models.ForeignKey(Election, on_delete=models.CASCADE, related_name="options")
    position = models.PositiveSmallIntegerField()
    name = models.CharField(max_length=500)

    class Meta:
        ordering = ["election", "position"]
        constraints = [
            models.UniqueConstraint(fields=["election", "position"], name="option_position_unique_in_election"),
        ]

    def __str__(self) -> str:
        return self.name


class ProtocolImport(models.Model):
    """One import of an election's protocols. Its id is the version of everything computed from
    them: the forensics cache keys carry the latest id (docs/FORENSICS.md, "Caching"), so a
    re-import committed by any process is seen at once."""

    election = models.ForeignKey(Election, on_delete=models.CASCADE, related_name="protocol_imports")
    source = models.CharField(max_length=500, help_text="File name the protocols came from.")
    file_format = models.CharField(max_length=16)
    imported_at = models.DateTimeField(auto_now_add=True)
    read = models.PositiveIntegerField(default=0)
    stored = models.PositiveIntegerField(default=0)
    skipped_empty = models.PositiveIntegerField(default=0)
    rejected = models.PositiveIntegerField(default=0)
    constituencies_created = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.election.code} from {self.source} ({self.imported_at:%Y-%m-%d %H:%M})"


class ProtocolResult(models.Model):
    """A polling station's protocol. ``votes[i]`` is the votes of the election's option at
    position i. A JSON list keeps the options of any election in one row on every backend; the
    figures read whole elections at once, never one option across rows."""

    election = models.ForeignKey(Election, on_delete=models.CASCADE, related_name="protocols", db_index=False)
    constituency = models.OneToOneField(Constituency, on_delete=models.CASCADE, related_name="protocol")
    protocol_import = models.ForeignKey(ProtocolImport, on_delete=models.CASCADE, related_name="protocols")
    line = models.PositiveIntegerField(help_text="Line of the imported file this protocol was read from.")
    registered_voters = models.PositiveIntegerField()
    ballots_early = models.PositiveIntegerField()
    ballots_on_day = models.PositiveIntegerField(help_text="Issued on the day in the premises.")
    ballots_outside = models.PositiveIntegerField(help_text="Issued on the day outside the premises.")
    valid = models.PositiveIntegerField()
    invalid = models.PositiveIntegerField()
    votes = models.JSONField(default=list)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["election", "constituency"], name="protocol_election_constituency")]

    def __str__(self) -> str:
        return f"protocol of {self.constituency_id}"

    @property
    def ballots_issued(self) -> int:
        return self.ballots_early + self.ballots_on_day + self.ballots_outside

    @property
    def ballots_cast(self) -> int:
        return self.valid + self.invalid
