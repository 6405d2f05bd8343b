from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework import serializers

from elections.bounds import validate_election_date
from elections.models import Constituency, Election, Transaction, TransactionKind


class AwareDateTimeField(serializers.DateTimeField):
    """Refuses naive datetimes instead of silently reading them as UTC."""

    default_error_messages = {"naive": "Datetime has no UTC offset; add one such as 'Z' or '+03:00'."}

    def to_internal_value(self, value):
        if isinstance(value, str):
            # Subtle: DateTimeField(default_timezone=None) still makes values aware in the
            # current timezone, so the offset is checked on the raw ISO 8601 parse.
            try:
                parsed = parse_datetime(value.strip())
            except ValueError:
                parsed = None  # out-of-range parts: super() answers with its own message
            if parsed is not None and timezone.is_naive(parsed):
                self.fail("naive")
        return super().to_internal_value(value)


class ElectionSerializer(serializers.ModelSerializer):
    starts_at = AwareDateTimeField(validators=[validate_election_date])
    ends_at = AwareDateTimeField(validators=[validate_election_date])
    status = serializers.CharField(read_only=True)

    class Meta:
        model = Election
        fields = ["id", "code", "name", "timezone", "starts_at", "ends_at", "status", "created_at"]
        read_only_fields = ["id", "status", "created_at"]

    def validate(self, attrs):
        if attrs["ends_at"] <= attrs["starts_at"]:
            raise serializers.ValidationError({"ends_at": ["The voting window must end after it starts."]})
        return attrs


class ConstituencySerializer(serializers.ModelSerializer):
    registered_voters = serializers.IntegerField(min_value=1, max_value=2_147_483_647)

    class Meta:
        model = Constituency
        fields = ["id", "election", "code", "name", "registered_voters"]
        read_only_fields = ["id"]


class TransactionSerializer(serializers.ModelSerializer):
    """How a stored transaction is shown, and (for the docs and the browsable API form) the
    shape of one incoming item; validation itself is elections.services.transaction_row_parse,
    shared by every ingest path."""

    election = serializers.IntegerField(source="election_id", required=False)
    constituency = serializers.IntegerField(source="constituency_id")
    kind = serializers.ChoiceField(choices=TransactionKind.choices)
    timestamp = AwareDateTimeField()

    class Meta:
        model = Transaction
        fields = [
            "id",
            "tx_hash",
            "election",
            "constituency",
            "kind",
            "timestamp",
            "hour",
            "block_number",
            "received_at",
        ]
        read_only_fields = ["id", "hour", "received_at"]


class BulkIngestResultSerializer(serializers.Serializer):
    created = serializers.IntegerField()
    duplicates = serializers.IntegerField()
