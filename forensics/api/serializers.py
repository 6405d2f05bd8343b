"""Shapes of the forensics API (SPEC section 11), and the serializers that validate query
parameters before any figure is computed."""

from rest_framework import serializers

from forensics.figures import HISTOGRAM_OF, bin_steps

# A request computes in about 3 s per 1,000 repetitions over 100,000 stations (uncached):
# the cap keeps one request well inside a worker's timeout.
REPS_MAX = 5_000
SEED_MAX = 2**32 - 1
BIN_MIN, BIN_MAX = 0.01, 50.0


def _bin_field(default: float) -> serializers.FloatField:
    return serializers.FloatField(
        required=False,
        default=default,
        min_value=BIN_MIN,
        max_value=BIN_MAX,
        help_text=f"Bin width in percentage points; it must divide 100 (e.g. 0.1, 0.5, 1, 2). Default {default}.",
    )


def _validate_bin(value: float) -> float:
    try:
        bin_steps(value)
    except ValueError:
        raise serializers.ValidationError(
            f"{value} does not divide 100 into whole bins; use a width such as 0.1, 0.2, 0.5, 1 or 2."
        ) from None
    return round(value, 6)


class HistogramQuerySerializer(serializers.Serializer):
    of = serializers.ChoiceField(
        choices=HISTOGRAM_OF,
        error_messages={"invalid_choice": "'{input}' is not a histogram; use turnout or leader_result."},
    )
    bin = _bin_field(0.1)

    def validate_bin(self, value):
        return _validate_bin(value)


class FingerprintQuerySerializer(serializers.Serializer):
    bin = _bin_field(1.0)

    def validate_bin(self, value):
        return _validate_bin(value)


class IntegerExcessQuerySerializer(serializers.Serializer):
    reps = serializers.IntegerField(
        required=False, default=1000, min_value=1, max_value=REPS_MAX, help_text="Monte Carlo repetitions."
    )
    seed = serializers.IntegerField(
        required=False, default=42, min_value=0, max_value=SEED_MAX, help_text="Seed of the random generator."
    )


# --- responses ---------------------------------------------------------------------------------


class ExcludedField(serializers.DictField):
    def __init__(self, **kwargs):
        super().__init__(child=serializers.IntegerField(), help_text="Reason → stations left out.", **kwargs)


class SummarySerializer(serializers.Serializer):
    election_id = serializers.IntegerField()
    stations = serializers.IntegerField()
    registered_voters = serializers.IntegerField()
    ballots_issued = serializers.IntegerField()
    ballots_cast = serializers.IntegerField(help_text="Valid + invalid ballots.")
    turnout = serializers.FloatField(help_text="Percent: ballots issued ÷ registered voters.")
    leader_result = serializers.FloatField(help_text="Percent: leader's votes ÷ ballots cast.")
    leader = serializers.CharField(allow_null=True, help_text="The option with the most votes.")
    excluded = ExcludedField()
    computed_at = serializers.DateTimeField()


class HistogramBinSerializer(serializers.Serializer):
    center = serializers.FloatField()
    stations = serializers.IntegerField()
    voters = serializers.IntegerField(help_text="Registered voters of the stations in the bin.")


class HistogramSerializer(serializers.Serializer):
    of = serializers.ChoiceField(choices=HISTOGRAM_OF)
    bin = serializers.FloatField()
    bins = HistogramBinSerializer(many=True)
    stations = serializers.IntegerField()
    excluded = ExcludedField()
    computed_at = serializers.DateTimeField()


class FingerprintCellSerializer(serializers.Serializer):
    turnout = serializers.FloatField(help_text="Cell centre, percent.")
    leader_result = serializers.FloatField(help_text="Cell centre, percent.")
    voters = serializers.IntegerField(help_text="Registered voters of the stations in the cell.")


class FingerprintSerializer(serializers.Serializer):
    bin = serializers.FloatField()
    cells = FingerprintCellSerializer(many=True)
    stations = serializers.IntegerField()
    excluded = ExcludedField()
    computed_at = serializers.DateTimeField()


class IntegerCountSerializer(serializers.Serializer):
    percent = serializers.IntegerField()
    observed = serializers.IntegerField()
    expected = serializers.FloatField()


class IntegerKindSerializer(serializers.Serializer):
    observed = serializers.IntegerField()
    expected = serializers.FloatField(help_text="Mean over the repetitions.")
    excess = serializers.FloatField(help_text="observed − expected.")
    per_integer = IntegerCountSerializer(many=True)


class IntegerExcessSerializer(serializers.Serializer):
    reps = serializers.IntegerField()
    seed = serializers.IntegerField()
    stations = serializers.IntegerField(help_text="Stations included.")
    excluded = ExcludedField()
    turnout = IntegerKindSerializer()
    leader_result = IntegerKindSerializer()
    either = IntegerKindSerializer(help_text="Turnout or leader's result: the published headline figure.")
    computed_at = serializers.DateTimeField()


class ReconciliationItemSerializer(serializers.Serializer):
    constituency_id = serializers.IntegerField()
    code = serializers.CharField()
    votes_cast = serializers.IntegerField(help_text="Stream.")
    bulletins_issued = serializers.IntegerField(help_text="Stream.")
    ballots_cast = serializers.IntegerField(help_text="Protocol: valid + invalid.")
    ballots_issued = serializers.IntegerField(help_text="Protocol: early + on the day + outside.")
    registered_voters = serializers.IntegerField(help_text="The constituency's.")
    protocol_registered_voters = serializers.IntegerField()
    votes_difference = serializers.IntegerField(help_text="votes_cast − ballots_cast.")
    bulletins_difference = serializers.IntegerField(help_text="bulletins_issued − ballots_issued.")
    registered_voters_difference = serializers.IntegerField()
    mismatch = serializers.BooleanField(help_text="|votes_difference| > max(5, 0.5 % of ballots_cast).")


class ReconciliationTotalsSerializer(serializers.Serializer):
    constituencies = serializers.IntegerField(help_text="Constituencies with both a stream and a protocol.")
    mismatches = serializers.IntegerField()
    votes_cast = serializers.IntegerField()
    bulletins_issued = serializers.IntegerField()
    ballots_cast = serializers.IntegerField()
    ballots_issued = serializers.IntegerField()
    registered_voters = serializers.IntegerField()
    protocol_registered_voters = serializers.IntegerField()
    votes_difference = serializers.IntegerField()
    bulletins_difference = serializers.IntegerField()
    registered_voters_difference = serializers.IntegerField()


class ReconciliationPageSerializer(serializers.Serializer):
    election_id = serializers.IntegerField()
    count = serializers.IntegerField()
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = ReconciliationItemSerializer(many=True)
    totals = ReconciliationTotalsSerializer()
