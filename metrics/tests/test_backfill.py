"""The backfill_metrics command: argument checks, what it repairs, and that it is
set-based, idempotent and restartable."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from elections.models import Constituency, TransactionKind
from elections.services import TransactionRow, transactions_ingest
from elections.tests.factories import VOTING_STARTS, ConstituencyFactory
from metrics.models import Anomaly, HourlyStats


def ingest(election, constituencies, n, *, hours=10, prefix="bf"):
    kinds = (TransactionKind.BULLETIN_ISSUED, TransactionKind.VOTE_CAST, TransactionKind.VOTE_CAST)
    rows = [
        TransactionRow(f"{prefix}-{i}", election.id, constituencies[i % len(constituencies)].id, kinds[i % 3],
                       VOTING_STARTS + timedelta(minutes=(i * 7) % (60 * hours)), None)
        for i in range(n)
    ]  # fmt: skip
    # Marks only: the backfill alone must produce every figure.
    transactions_ingest(rows=rows)


def backfill(*args) -> str:
    out = StringIO()
    call_command("backfill_metrics", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def snapshot(election):
    hourly = sorted(
        HourlyStats.objects.filter(election=election).values_list(
            "constituency_id", "hour", "bulletins_issued", "votes_cast", "transaction_count", "participation_rate", "anomaly_count"
        )
    )  # fmt: skip
    anomalies = sorted(
        Anomaly.objects.filter(election=election).values_list("constituency_id", "hour", "kind", "weight")
    )
    totals = sorted(
        Constituency.objects.filter(election=election).values_list(
            "id", "total_bulletins_issued", "total_votes_cast", "total_transactions", "total_anomalies", "participation_rate", "anomaly_score"
        )
    )  # fmt: skip
    return hourly, anomalies, totals


def test_backfill_computes_everything_and_says_what_it_did(election, constituencies, stats_match):
    ingest(election, constituencies, 300)
    out = backfill("--election", election.code)
    stats_match(election)
    assert "6 constituencies" in out
    buckets = HourlyStats.objects.filter(election=election).count()
    assert f"{buckets} buckets recounted" in out
    assert f"{buckets} hourly rows written" in out
    assert "anomalies now" in out
    assert "s." in out


def test_backfill_twice_gives_the_same_rows(election, constituencies):
    ingest(election, constituencies, 300)
    backfill("--election", election.code)
    first = snapshot(election)
    backfill("--election", election.code)
    assert snapshot(election) == first


def test_backfill_repairs_hand_edits_and_deletions(election, constituencies, stats_match):
    ingest(election, constituencies, 300)
    backfill("--election", election.code)
    HourlyStats.objects.filter(election=election, constituency=constituencies[0]).update(votes_cast=0)
    HourlyStats.objects.filter(election=election, constituency=constituencies[1]).delete()
    Constituency.objects.filter(pk=constituencies[2].pk).update(total_transactions=12345)
    backfill("--election", election.code)
    stats_match(election)


def test_backfill_in_chunks_equals_one_pass(election, stats_match):
    constituencies = ConstituencyFactory.create_batch(7, election=election, registered_voters=300)
    ingest(election, constituencies, 400)
    backfill("--election", election.code)
    whole = snapshot(election)
    HourlyStats.objects.filter(election=election).delete()
    Anomaly.objects.filter(election=election).delete()
    out = backfill("--election", election.code, "--chunk", "3")
    assert snapshot(election) == whole
    assert "7 constituency totals refreshed" in out
    stats_match(election)


def test_backfill_is_set_based(election, constituencies):
    """The same number of queries for 3 hours as for 30: never a query per bucket."""

    def queries_for(hours, prefix):
        HourlyStats.objects.all().delete()
        ingest(election, constituencies, 60 * hours, hours=hours, prefix=prefix)
        with CaptureQueriesContext(connection) as captured:
            backfill("--election", election.code, "--chunk", "2")
        return len(captured)

    few = queries_for(3, "few")
    many = queries_for(30, "many")
    assert HourlyStats.objects.count() >= 30 * len(constituencies)
    assert many <= few + 4, (few, many)  # bulk writes may take an extra batch


def test_backfill_of_one_constituency_leaves_the_others_alone(election, constituencies):
    ingest(election, constituencies, 120)
    backfill("--election", election.code)
    HourlyStats.objects.filter(election=election).update(transaction_count=0)
    backfill("--election", election.code, "--constituency", constituencies[0].code)
    assert not HourlyStats.objects.filter(constituency=constituencies[0], transaction_count=0).exists()
    assert HourlyStats.objects.filter(constituency=constituencies[1], transaction_count=0).exists()


def test_backfill_of_a_time_range(election, constituencies):
    ingest(election, constituencies, 300)
    backfill("--election", election.code)
    HourlyStats.objects.filter(election=election).update(transaction_count=0)
    since, until = VOTING_STARTS + timedelta(hours=3), VOTING_STARTS + timedelta(hours=5)
    out = backfill("--election", election.code, "--since", since.isoformat(), "--until", until.isoformat())
    inside = HourlyStats.objects.filter(election=election, hour__gte=since, hour__lt=until)
    assert inside.exists()
    assert not inside.filter(transaction_count=0).exists()
    assert HourlyStats.objects.filter(election=election, hour__lt=since, transaction_count=0).exists()
    assert HourlyStats.objects.filter(election=election, hour__gte=until, transaction_count=0).exists()
    assert since.isoformat() in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--election", "nope"], "Unknown election 'nope'"),
        (["--election", "test-election", "--constituency", "nope"], "Unknown constituency 'nope'"),
        (
            ["--election", "test-election", "--since", "2024-09-06T05:00:00"],
            "--since: '2024-09-06T05:00:00' has no UTC offset",
        ),
        (["--election", "test-election", "--until", "yesterday"], "--until: 'yesterday' is not an ISO 8601 datetime"),
        (
            ["--election", "test-election", "--since", "2024-09-07T00:00Z", "--until", "2024-09-06T00:00Z"],
            "--since must be before --until",
        ),
        (["--election", "test-election", "--chunk", "0"], "--chunk must be at least 1"),
    ],
)
def test_bad_arguments_are_clear_errors_and_change_nothing(election, constituencies, args, message):
    ingest(election, constituencies, 30)
    with pytest.raises(CommandError, match=message.replace("(", r"\(")):
        backfill(*args)
    assert not HourlyStats.objects.exists()
