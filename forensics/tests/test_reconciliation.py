"""Stream against protocol: the mismatch rule, and the endpoint over a stream loaded through the
import command and counted by the metrics backfill (the same doors an operator uses)."""

import csv
import io
from datetime import timedelta
from fractions import Fraction

import pytest
from django.core.management import call_command
from hypothesis import given
from hypothesis import strategies as st

from elections.models import Constituency
from elections.tests.factories import VOTING_STARTS, ElectionFactory
from forensics.reconciliation import stream_protocol_mismatch, stream_protocol_mismatch_magnitude
from forensics.tests.conftest import import_rows
from protocols.tests.files import station


@pytest.mark.parametrize(
    ("votes", "ballots", "mismatch"),
    [
        (105, 100, False),  # 5 = max(5, 0.5) : not more than
        (106, 100, True),
        (94, 100, True),
        (2010, 2000, False),  # 10 = 0.5 % of 2000
        (2011, 2000, True),
        (1989, 2000, True),
        (0, 0, False),
        (6, 0, True),
    ],
)
def test_mismatch_is_more_than_five_votes_or_half_a_percent(votes, ballots, mismatch):
    assert stream_protocol_mismatch(votes_cast=votes, ballots_cast=ballots) is mismatch
    assert stream_protocol_mismatch_magnitude(votes_cast=votes, ballots_cast=ballots) == abs(votes - ballots)


@given(st.integers(0, 10**7), st.integers(0, 10**7))
def test_mismatch_rule_matches_exact_arithmetic(votes, ballots):
    threshold = max(Fraction(5), Fraction(ballots, 200))
    assert stream_protocol_mismatch(votes_cast=votes, ballots_cast=ballots) == (abs(votes - ballots) > threshold)


def stream_csv(path, constituency: Constituency, *, votes: int, bulletins: int, start: int):
    with open(path, "a", newline="") as handle:
        writer = csv.writer(handle)
        if handle.tell() == 0:
            writer.writerow(["tx_hash", "constituency", "kind", "timestamp"])
        moment = VOTING_STARTS + timedelta(hours=2)
        for i in range(bulletins):
            writer.writerow(
                [f"b-{start + i}", constituency.code, "bulletin_issued", (moment + timedelta(seconds=i)).isoformat()]
            )
        for i in range(votes):
            writer.writerow(
                [f"v-{start + i}", constituency.code, "vote_cast", (moment + timedelta(seconds=i + 30)).isoformat()]
            )


@pytest.mark.django_db(transaction=True)
def test_reconciliation_per_constituency_and_per_election(api_client, tmp_path):
    election = ElectionFactory(code="reconcile")
    rows = [
        station("1", registered=800, issued=200, votes=(100, 80, 15), invalid=5),  # cast 200
        station("2", registered=900, issued=300, votes=(150, 120, 25), invalid=5),  # cast 300
        station("3", registered=700, issued=100, votes=(50, 40, 5), invalid=5),  # no stream
    ]
    import_rows(election, rows, tmp_path)
    by_uik = {c.name.rsplit(" / ", 1)[1]: c for c in Constituency.objects.filter(election=election)}
    Constituency.objects.filter(pk=by_uik["2"].pk).update(registered_voters=950)
    stream = tmp_path / "stream.csv"
    stream_csv(stream, by_uik["1"], votes=203, bulletins=204, start=0)  # within max(5, 1)
    stream_csv(stream, by_uik["2"], votes=290, bulletins=300, start=10_000)  # 10 short: a mismatch
    call_command("import_transactions", str(stream), "--election", election.code, "--no-progress", stdout=io.StringIO())
    call_command("backfill_metrics", "--election", election.code, stdout=io.StringIO(), stderr=io.StringIO())

    body = api_client.get(f"/api/forensics/election/{election.id}/reconciliation/").json()

    assert (body["election_id"], body["count"]) == (election.id, 2)
    first, second = body["results"]
    assert first == {
        "constituency_id": by_uik["1"].id,
        "code": by_uik["1"].code,
        "votes_cast": 203,
        "bulletins_issued": 204,
        "ballots_cast": 200,
        "ballots_issued": 200,
        "registered_voters": 800,
        "protocol_registered_voters": 800,
        "votes_difference": 3,
        "bulletins_difference": 4,
        "registered_voters_difference": 0,
        "mismatch": False,
    }
    assert (second["votes_difference"], second["registered_voters_difference"], second["mismatch"]) == (-10, 50, True)
    assert body["totals"] == {
        "constituencies": 2,
        "mismatches": 1,
        "votes_cast": 493,
        "bulletins_issued": 504,
        "ballots_cast": 500,
        "ballots_issued": 500,
        "registered_voters": 1750,
        "protocol_registered_voters": 1700,
        "votes_difference": -7,
        "bulletins_difference": 4,
        "registered_voters_difference": 50,
    }

    page = api_client.get(f"/api/forensics/election/{election.id}/reconciliation/", {"page_size": 1}).json()
    assert (page["count"], len(page["results"]), page["totals"]["constituencies"]) == (2, 1, 2)
    assert page["next"] is not None
