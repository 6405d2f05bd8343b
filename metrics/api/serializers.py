"""Shapes of the metrics API (README, HTTP API), field for field, and the filter serializers
that validate path and query parameters before any selector runs."""

import re

from rest_framework import serializers

from elections.api.serializers import AwareDateTimeField
from elections.models import Constituency, Election
from elections.timebuckets import PERIODS
from metrics.models import AnomalyKind, HourlyStats
from metrics.selectors import CONSTITUENCY_ORDERINGS, ID_MAX

# --- filters ------------------------------------------------------------------------------------

# An unencoded '+' in a query string arrives as a space: "...T05:00:00 03:00".
_SPACE_FOR_PLUS = re.compile(r"(T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) (\d{2}(?::?\d{2})?)$")


class QueryDateTimeField(AwareDateTimeField):
    """An aware ISO 8601 datetime from a query string, forgiving an unencoded '+' offset."""

    def to_internal_value(self, value):
        if isinstance(value, str):
            value = _SPACE_FOR_PLUS.sub(r"\1+\2", value.strip())
        return super().to_internal_value(value)


def _choice(choices, what: str, **kwargs) -> serializers.ChoiceField:
    allowed = ", ".join(value for value, _ in choices) if isinstance(choices[0], tuple) else ", ".join(choices)
    return serializers.ChoiceField(
        choices=choices,
        error_messages={"invalid_choice": f"'{{input}}' is not a valid {what}; use one of: {allowed}."},
        **kwargs,
    )


class IdField(serializers.IntegerField):
    """A positive 64-bit id whose errors say which id and what is wrong with it."""

    def __init__(self, what: str, **kwargs):
        self.what = what
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", ID_MAX)
        kwargs["error_messages"] = {
            "min_value": f"{what.capitalize()} ids are positive integers.",
            "max_value": f"No {what} has an id that large.",
            "max_string_length": f"No {what} has an id that large.",
            **kwargs.get("error_messages", {}),
        }
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        try:
            return super().to_internal_value(data)
        except serializers.ValidationError as error:
            if error.get_codes() == ["invalid"]:
                raise serializers.ValidationError(
                    f"'{data}' is not a valid {self.what} id; ids are positive integers.", code="invalid"
                ) from None
            raise


def _id_field(what: str, **kwargs) -> IdField:
    return IdField(what, **kwargs)


class ElectionPathSerializer(serializers.Serializer):
    election_id = _id_field("election")


class ConstituencyPathSerializer(serializers.Serializer):
    constituency_id = _id_field("constituency")


class TimeRangeFilterSerializer(serializers.Serializer):
    start_time = QueryDateTimeField(
        required=False, help_text="Inclusive lower bound on the hour, ISO 8601 with a UTC offset."
    )
    end_time = QueryDateTimeField(
        required=False, help_text="Exclusive upper bound on the hour, ISO 8601 with a UTC offset."
    )

    def validate(self, attrs):
        start, end = attrs.get("start_time"), attrs.get("end_time")
        if start is not None and end is not None and start > end:
            raise serializers.ValidationError({"start_time": ["start_time must not be after end_time."]})
        return attrs


class TimePeriodFilterSerializer(TimeRangeFilterSerializer):
    period = _choice(PERIODS, "period", help_text="Local hour, day, ISO week (from Monday) or calendar month.")


class ConstituencyOrderingSerializer(serializers.Serializer):
    ordering = _choice(
        CONSTITUENCY_ORDERINGS,
        "ordering",
        required=False,
        default="id",
        help_text="A metric to sort by; prefix '-' for descending. Ties are ordered by id.",
    )


class AnomalyFilterSerializer(serializers.Serializer):
    election = _id_field("election", required=False)
    constituency = _id_field("constituency", required=False)
    kind = _choice(AnomalyKind.choices, "anomaly kind", required=False)


class EpisodeFilterSerializer(AnomalyFilterSerializer):
    # Subtle: from a query string an absent BooleanField reads as False; default=None keeps
    # "not given" apart from open=false.
    open = serializers.BooleanField(
        required=False,
        allow_null=True,
        default=None,
        help_text="true: only episodes still running (their last hour is the constituency's latest); false: only ended.",
    )


# --- responses ------------------------------------------------------------------------------------


class HourlyStatsSerializer(serializers.ModelSerializer):
    election_id = serializers.IntegerField()
    constituency_id = serializers.IntegerField()

    class Meta:
        model = HourlyStats
        fields = [
            "id",
            "election_id",
            "constituency_id",
            "hour",
            "bulletins_issued",
            "votes_cast",
            "transaction_count",
            "bulletin_velocity",
            "vote_velocity",
            "participation_rate",
            "anomaly_count",
            "timestamp",
        ]
        read_only_fields = fields


class AnomalySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    election_id = serializers.IntegerField()
    constituency_id = serializers.IntegerField()
    hour = serializers.DateTimeField()
    kind = serializers.ChoiceField(choices=AnomalyKind.choices)
    weight = serializers.FloatField()
    details = serializers.DictField(help_text="What the rule saw, e.g. cumulative_votes and registered_voters.")
    detected_at = serializers.DateTimeField()


class EpisodeSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    election_id = serializers.IntegerField()
    constituency_id = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=AnomalyKind.choices)
    first_hour = serializers.DateTimeField(
        help_text="Its first flagged hour (bucket start); with kind and constituency, its identity."
    )
    last_hour = serializers.DateTimeField(help_text="Its last flagged hour (bucket start).")
    hours = serializers.IntegerField(
        help_text="Flagged hours in it, consecutive among the constituency's hours with data."
    )
    peak = serializers.FloatField(
        allow_null=True,
        help_text="The largest magnitude of its hours (per kind, see the anomaly rules); null when undefined.",
    )
    open = serializers.BooleanField(help_text="Its last hour is the constituency's latest hour with data.")
    weight = serializers.FloatField(help_text="The kind's weight: what the episode adds to S of the anomaly score.")


class HourlyActivitySerializer(serializers.Serializer):
    hour_of_day = serializers.IntegerField(
        min_value=0, max_value=23, help_text="Local hour in the election's timezone."
    )
    bulletins_issued = serializers.IntegerField()
    votes_cast = serializers.IntegerField()
    transaction_count = serializers.IntegerField()


class ConstituencyMetricsSerializer(serializers.Serializer):
    constituency_id = serializers.IntegerField()
    election_id = serializers.IntegerField()
    code = serializers.CharField()
    name = serializers.CharField()
    registered_voters = serializers.IntegerField()
    total_bulletins_issued = serializers.IntegerField()
    total_votes_cast = serializers.IntegerField()
    total_transactions = serializers.IntegerField()
    total_anomalies = serializers.IntegerField()
    participation_rate = serializers.FloatField(help_text="100 × total votes ÷ registered voters.")
    anomaly_score = serializers.FloatField(help_text="100 × (1 − e^(−S/10)), S = sum of the weights of its episodes.")
    computed_at = serializers.DateTimeField()


class ConstituencyMetricsDetailSerializer(ConstituencyMetricsSerializer):
    hourly_activity = HourlyActivitySerializer(many=True, help_text="24 entries, local hour of day 0-23.")


class PeriodBucketSerializer(serializers.Serializer):
    start = serializers.DateTimeField()
    end = serializers.DateTimeField(help_text="Start of the next period (exclusive).")
    bulletins_issued = serializers.IntegerField()
    votes_cast = serializers.IntegerField()
    transaction_count = serializers.IntegerField()
    anomaly_count = serializers.IntegerField()
    participation_rate = serializers.FloatField(help_text="Cumulative, at the last hour with data in the period.")


class TimePeriodSerializer(serializers.Serializer):
    constituency_id = serializers.IntegerField()
    period = serializers.ChoiceField(choices=PERIODS)
    buckets = PeriodBucketSerializer(many=True)
    computed_at = serializers.DateTimeField()


class HourlyTurnoutSerializer(serializers.Serializer):
    hour = serializers.DateTimeField()
    votes_cast = serializers.IntegerField()
    participation_rate = serializers.FloatField(help_text="Cumulative over the election, at the end of the hour.")


class ElectionMetricsSerializer(serializers.Serializer):
    election_id = serializers.IntegerField()
    code = serializers.CharField()
    name = serializers.CharField()
    status = serializers.ChoiceField(choices=["scheduled", "active", "closed"])
    registered_voters = serializers.IntegerField()
    total_bulletins_issued = serializers.IntegerField()
    total_votes_cast = serializers.IntegerField()
    total_transactions = serializers.IntegerField()
    total_anomalies = serializers.IntegerField()
    participation_rate = serializers.FloatField(help_text="100 × total votes ÷ total registered voters.")
    constituency_count = serializers.IntegerField()
    constituencies_with_anomalies = serializers.IntegerField()
    hourly_turnout = HourlyTurnoutSerializer(many=True)
    certified_at = serializers.DateTimeField(allow_null=True, help_text="When the count was certified final.")
    snapshot_sha256 = serializers.CharField(
        allow_null=True,
        help_text="Of a certified election: SHA-256 of the canonical text of its hourly rows and constituency "
        "figures, reproducible from this API (README, Certification).",
    )
    computed_at = serializers.DateTimeField()


class DashboardSummarySerializer(serializers.Serializer):
    elections = serializers.IntegerField()
    active_elections = serializers.IntegerField()
    constituencies = serializers.IntegerField()
    registered_voters = serializers.IntegerField()
    total_bulletins_issued = serializers.IntegerField()
    total_votes_cast = serializers.IntegerField()
    total_transactions = serializers.IntegerField()
    total_anomalies = serializers.IntegerField()
    participation_rate = serializers.FloatField(help_text="All votes ÷ all registered voters, over all elections.")
    computed_at = serializers.DateTimeField()


class DashboardDetailedSerializer(serializers.Serializer):
    summary = DashboardSummarySerializer()
    elections = ElectionMetricsSerializer(many=True)
    top_anomalous_constituencies = ConstituencyMetricsSerializer(
        many=True, help_text="Up to 10 with the highest anomaly score above 0, ties by id."
    )
    recent_anomalies = AnomalySerializer(many=True, help_text="The 20 latest by hour.")
    computed_at = serializers.DateTimeField()


class ErrorSerializer(serializers.Serializer):
    """A 404 (or 401/403/429): one message."""

    detail = serializers.CharField()


# --- writes -------------------------------------------------------------------------------------


class RecomputeRequestSerializer(serializers.Serializer):
    election = serializers.PrimaryKeyRelatedField(
        queryset=Election.objects.all(), required=False,
        error_messages={"does_not_exist": "No election with id {pk_value}.",
                        "incorrect_type": "An election id is an integer; got {data_type}."},
    )  # fmt: skip
    constituency = serializers.PrimaryKeyRelatedField(
        queryset=Constituency.objects.all(), required=False,
        error_messages={"does_not_exist": "No constituency with id {pk_value}.",
                        "incorrect_type": "A constituency id is an integer; got {data_type}."},
    )  # fmt: skip

    def validate(self, attrs):
        election, constituency = attrs.get("election"), attrs.get("constituency")
        if not election and not constituency:
            raise serializers.ValidationError({"non_field_errors": ["Give an election or a constituency."]})
        if election and constituency and constituency.election_id != election.id:
            raise serializers.ValidationError({"constituency": ["This constituency belongs to another election."]})
        return attrs


class RecomputeAcceptedSerializer(serializers.Serializer):
    task_id = serializers.CharField()
    election_id = serializers.IntegerField()
    constituency_id = serializers.IntegerField(allow_null=True)
