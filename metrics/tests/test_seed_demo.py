from datetime import UTC, datetime
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db.models import Count, Min, Q
from django.utils import timezone as dj_timezone

from elections.models import Constituency, Election, Transaction
from metrics import demo
from metrics.models import Anomaly, DirtyBucket, Episode, HourlyStats
from metrics.tests import reference

pytestmark = pytest.mark.django_db

SMALL = ["--constituencies", "9", "--transactions", "4000"]


def _seed(*args):
    out = StringIO()
    call_command("seed_demo", *args, stdout=out)
    return out.getvalue()


def test_small_demo_has_a_realistic_shape_and_each_injected_anomaly_is_found_where_it_was_injected():
    report = demo.demo_election_seed(constituencies=9, transactions=4000)

    election = Election.objects.get(code=demo.DEFAULT_CODE)
    assert election.timezone == "Europe/Moscow"
    assert (election.starts_at, election.ends_at) == (
        datetime(2024, 3, 15, 5, 0, tzinfo=UTC),
        datetime(2024, 3, 17, 17, 0, tzinfo=UTC),
    )
    assert Constituency.objects.filter(election=election).count() == 9
    stored = Transaction.objects.filter(election=election).count()
    assert 3800 <= stored <= 4600
    assert report.transactions == stored
    assert 30 < report.participation_rate < 80

    by_kind = dict(Transaction.objects.filter(election=election).values_list("kind").annotate(n=Count("id")))
    assert by_kind["bulletin_issued"] >= by_kind["vote_cast"] * 0.95
    assert by_kind["other"] > 0
    # Nights are quiet: nearly every transaction is between 08:00 and 20:00 Moscow time (UTC+3).
    day_hours = Transaction.objects.filter(election=election, timestamp__hour__gte=5, timestamp__hour__lt=17).count()
    assert day_hours / stored > 0.97

    # Each kind is flagged in exactly the constituency it was injected into, and nowhere else.
    flagged = {
        kind: set(Anomaly.objects.filter(election=election, kind=kind).values_list("constituency__code", flat=True))
        for kind in report.injected
    }
    assert flagged == {kind: {code} for kind, code in report.injected.items()}
    assert len(set(report.injected.values())) == 4
    assert not DirtyBucket.objects.exists()


def test_demo_metrics_match_the_reference():
    demo.demo_election_seed(code="demo-ref", constituencies=8, transactions=3000, seed=5)
    election = Election.objects.get(code="demo-ref")
    constituencies = Constituency.objects.filter(election=election)
    ref = reference.compute(
        reference.RefElection(
            tz=election.timezone,
            starts_at=election.starts_at,
            ends_at=election.ends_at,
            registered={c.id: c.registered_voters for c in constituencies},
            transactions=list(
                Transaction.objects.filter(election=election).values_list(
                    "tx_hash", "constituency_id", "kind", "timestamp"
                )
            ),
        ),
        now=dj_timezone.now(),
    )
    stored = {
        (s.constituency_id, s.hour): (s.bulletins_issued, s.votes_cast, s.transaction_count, s.anomaly_count)
        for s in HourlyStats.objects.filter(election=election)
    }
    assert stored == {
        key: (r["bulletins_issued"], r["votes_cast"], r["transaction_count"], r["anomaly_count"])
        for key, r in ref["hourly"].items()
    }
    assert set(Anomaly.objects.filter(election=election).values_list("constituency_id", "hour", "kind")) == set(
        ref["anomalies"]
    )
    for c in constituencies:
        assert c.participation_rate == pytest.approx(ref["constituencies"][c.id]["participation_rate"])
        assert c.anomaly_score == pytest.approx(ref["constituencies"][c.id]["anomaly_score"])


def test_bulletins_are_issued_before_the_first_vote_in_every_constituency():
    demo.demo_election_seed(constituencies=8, transactions=3000)
    firsts = (
        Transaction.objects.filter(election__code=demo.DEFAULT_CODE)
        .values("constituency__code")
        .annotate(
            first_bulletin=Min("timestamp", filter=Q(kind="bulletin_issued")),
            first_vote=Min("timestamp", filter=Q(kind="vote_cast")),
        )
    )
    assert len(firsts) == 8
    for row in firsts:
        assert row["first_bulletin"] < row["first_vote"], row


def test_seed_is_idempotent_and_reset_recreates_the_same_data():
    out = _seed(*SMALL)
    assert "Created election demo-2024" in out
    for kind in ("velocity_spike", "turnout_over_100", "votes_exceed_bulletins", "outside_voting_window"):
        assert kind in out
    before = set(Transaction.objects.values_list("tx_hash", "constituency__code", "kind", "timestamp"))
    election_id = Election.objects.get().id

    again = _seed(*SMALL)
    assert "already exists" in again
    assert Election.objects.get().id == election_id
    assert set(Transaction.objects.values_list("tx_hash", "constituency__code", "kind", "timestamp")) == before

    _seed(*SMALL, "--reset")
    assert Election.objects.get().id != election_id
    assert set(Transaction.objects.values_list("tx_hash", "constituency__code", "kind", "timestamp")) == before


def test_a_demo_too_small_to_hold_its_anomalies_is_refused():
    with pytest.raises(CommandError, match="At least 8 constituencies"):
        _seed("--constituencies", "3")
    with pytest.raises(CommandError, match="At least 2000 transactions"):
        _seed("--transactions", "10")
    assert not Election.objects.exists()


@pytest.mark.parametrize(("constituencies", "transactions", "seed"), [(40, 30000, 2024), (40, 30000, 7)])
def test_each_injected_anomaly_forms_exactly_one_episode(constituencies, transactions, seed):
    """An observer reads one episode per injected problem, and the ranking puts the worst
    first: turnout over 100 % (weight 5) above votes exceeding bulletins (3)."""
    report = demo.demo_election_seed(constituencies=constituencies, transactions=transactions, seed=seed)
    election = Election.objects.get(code=demo.DEFAULT_CODE)
    episodes = Episode.objects.filter(election=election).values_list("kind", "constituency__code", "hours")
    assert sorted((kind, code) for kind, code, _ in episodes) == sorted(report.injected.items())
    ranking = list(
        Constituency.objects.filter(election=election, anomaly_score__gt=0)
        .order_by("-anomaly_score", "id")
        .values_list("code", flat=True)
    )
    order = ["turnout_over_100", "votes_exceed_bulletins", "velocity_spike", "outside_voting_window"]
    assert ranking == [report.injected[kind] for kind in order]
