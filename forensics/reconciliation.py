"""Stream against protocol (SPEC section 11, "Reconciliation"): per constituency that has both a
stream of transactions and a protocol, and per election.

The stream's figures are the constituency's totals as the metrics pipeline last computed them
(``Constituency.total_votes_cast`` and ``total_bulletins_issued``); a constituency has a stream
when its ``total_transactions`` is above zero. The mismatch rule is one pure function,
``stream_protocol_mismatch``, so that the anomaly of the same name (SPEC section 4, weight 4)
can be raised from it by the metrics side.
"""

from django.db.models import QuerySet

from metrics import anomalies
from protocols.models import ProtocolResult

MISMATCH_MIN_VOTES = anomalies.MISMATCH_MIN_VOTES
MISMATCH_SHARE = anomalies.MISMATCH_SHARE


def stream_protocol_mismatch(*, votes_cast: int, ballots_cast: int) -> bool:
    """True when the stream's votes differ from the protocol's ballots (valid + invalid) by
    more than max(5, 0.5 % of the protocol's ballots): the metrics rule itself."""
    return anomalies.stream_protocol_mismatch(votes_cast=votes_cast, ballots_cast=ballots_cast) is not None


def stream_protocol_mismatch_magnitude(*, votes_cast: int, ballots_cast: int) -> int:
    """The anomaly's magnitude (SPEC section 4): the absolute difference in votes."""
    return abs(votes_cast - ballots_cast)


ROW_FIELDS = (
    "constituency_id",
    "code",
    "votes_cast",
    "bulletins_issued",
    "registered_voters",
    "protocol_registered_voters",
    "ballots_early",
    "ballots_on_day",
    "ballots_outside",
    "valid",
    "invalid",
)


def reconciliation_rows(*, election_id: int) -> QuerySet:
    """Constituencies of the election with a stream and a protocol, by constituency id, as
    tuples in the order of ROW_FIELDS (a queryset, so a page reads only its own rows)."""
    return (
        ProtocolResult.objects.filter(election_id=election_id, constituency__total_transactions__gt=0)
        .order_by("constituency_id")
        .values_list(
            "constituency_id",
            "constituency__code",
            "constituency__total_votes_cast",
            "constituency__total_bulletins_issued",
            "constituency__registered_voters",
            "registered_voters",
            "ballots_early",
            "ballots_on_day",
            "ballots_outside",
            "valid",
            "invalid",
        )
    )


def reconciliation_item(values: tuple) -> dict:
    """One constituency's comparison: both sides' figures and their differences (stream − protocol)."""
    row = dict(zip(ROW_FIELDS, values, strict=True))
    ballots_cast = row["valid"] + row["invalid"]
    ballots_issued = row["ballots_early"] + row["ballots_on_day"] + row["ballots_outside"]
    return {
        "constituency_id": row["constituency_id"],
        "code": row["code"],
        "votes_cast": row["votes_cast"],
        "bulletins_issued": row["bulletins_issued"],
        "ballots_cast": ballots_cast,
        "ballots_issued": ballots_issued,
        "registered_voters": row["registered_voters"],
        "protocol_registered_voters": row["protocol_registered_voters"],
        "votes_difference": row["votes_cast"] - ballots_cast,
        "bulletins_difference": row["bulletins_issued"] - ballots_issued,
        "registered_voters_difference": row["registered_voters"] - row["protocol_registered_voters"],
        "mismatch": stream_protocol_mismatch(votes_cast=row["votes_cast"], ballots_cast=ballots_cast),
    }


def reconciliation_totals(*, election_id: int) -> dict:
    """The election's totals over the compared constituencies, and how many mismatch."""
    totals = dict.fromkeys(
        (
            "votes_cast",
            "bulletins_issued",
            "ballots_cast",
            "ballots_issued",
            "registered_voters",
            "protocol_registered_voters",
            "votes_difference",
            "bulletins_difference",
            "registered_voters_difference",
        ),
        0,
    )
    compared = mismatches = 0
    for row in reconciliation_rows(election_id=election_id).iterator(chunk_size=5000):
        item = reconciliation_item(row)
        compared += 1
        mismatches += item["mismatch"]
        for name in totals:
            totals[name] += item[name]
    return {"constituencies": compared, "mismatches": mismatches, **totals}
