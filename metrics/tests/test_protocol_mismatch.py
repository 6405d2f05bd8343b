"""stream_protocol_mismatch: the stream's votes against the protocol's ballots, flagged at the
constituency's last hour with data, kept current by the recompute like every other rule."""

from datetime import timedelta

import pytest

from elections.models import TransactionKind
from elections.services import TransactionRow, transactions_ingest
from elections.tests.factories import VOTING_STARTS
from metrics.models import Anomaly, AnomalyKind, Episode
from metrics.pipeline import election_recompute
from protocols.models import ProtocolImport, ProtocolResult

MISMATCH = AnomalyKind.STREAM_PROTOCOL_MISMATCH


def protocol(constituency, *, valid: int, invalid: int = 0) -> ProtocolResult:
    record = ProtocolImport.objects.create(election=constituency.election, source="test.csv", file_format="plain")
    return ProtocolResult.objects.create(
        election=constituency.election,
        constituency=constituency,
        protocol_import=record,
        line=2,
        registered_voters=constituency.registered_voters,
        ballots_early=0,
        ballots_on_day=valid + invalid,
        ballots_outside=0,
        valid=valid,
        invalid=invalid,
    )


def votes(constituency, count: int, *, hours: int = 3, prefix: str = "v"):
    rows = [
        TransactionRow(
            f"{prefix}{constituency.id}-{i}",
            constituency.election_id,
            constituency.id,
            TransactionKind.VOTE_CAST,
            VOTING_STARTS + timedelta(hours=i % hours, minutes=5),
            None,
        )
        for i in range(count)
    ]
    transactions_ingest(rows=rows)


@pytest.mark.django_db
def test_a_stream_that_disagrees_with_its_protocol_is_flagged_once_at_its_last_hour(constituencies):
    c, other = constituencies[0], constituencies[1]
    votes(c, 40)
    votes(other, 30)
    protocol(c, valid=50, invalid=2)  # 40 against 52: 12 > max(5, 0.26)
    protocol(other, valid=29, invalid=1)  # 30 against 30: in agreement
    election_recompute(election_id=c.election_id)

    (flag,) = Anomaly.objects.filter(kind=MISMATCH)
    assert flag.constituency_id == c.id
    assert flag.hour == VOTING_STARTS + timedelta(hours=2)  # the last hour with data
    assert flag.details == {"votes_cast": 40, "protocol_ballots": 52, "difference": 12}
    assert flag.weight == 4.0
    (episode,) = Episode.objects.filter(kind=MISMATCH)
    assert (episode.constituency_id, episode.peak, episode.hours) == (c.id, 12.0, 1)


@pytest.mark.django_db
def test_the_flag_follows_later_data_and_goes_when_the_stream_agrees(constituencies):
    c = constituencies[0]
    votes(c, 40)
    protocol(c, valid=52)
    election_recompute(election_id=c.election_id)
    assert Anomaly.objects.filter(kind=MISMATCH).count() == 1

    # Twelve more votes in a later hour, through the incremental path: now in agreement.
    rows = [
        TransactionRow(
            f"late-{i}", c.election_id, c.id, TransactionKind.VOTE_CAST, VOTING_STARTS + timedelta(hours=5), None
        )
        for i in range(12)
    ]
    transactions_ingest(rows=rows)
    from metrics.pipeline import dirty_buckets_flush_all

    dirty_buckets_flush_all(election_id=c.election_id)
    assert not Anomaly.objects.filter(kind=MISMATCH).exists()
    assert not Episode.objects.filter(kind=MISMATCH).exists()

    # Three more: 55 against 52 is within max(5, 0.26) of it, still no flag; ten more flags it
    # again, at the new last hour.
    votes(c, 13, hours=1, prefix="more")
    dirty_buckets_flush_all(election_id=c.election_id)
    (flag,) = Anomaly.objects.filter(kind=MISMATCH)
    assert flag.details["difference"] == 13
    assert flag.hour == VOTING_STARTS + timedelta(hours=5)


@pytest.mark.django_db
def test_a_constituency_without_a_protocol_or_without_a_stream_is_not_flagged(constituencies):
    votes(constituencies[0], 10)
    protocol(constituencies[1], valid=100)  # a protocol, no stream
    election_recompute(election_id=constituencies[0].election_id)
    assert not Anomaly.objects.filter(kind=MISMATCH).exists()
