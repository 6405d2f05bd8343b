"""metrics/selectors.py against the independent reference (metrics/tests/reference.py), on
generated data ingested through the real service and recomputed by the real pipeline.

Also home of ``seeded_election``, the data builder the API tests share.
"""

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from django.core.exceptions import ValidationError
from django.http import Http404
from django.test import TestCase
from django.utils import timezone as dj_timezone

from elections.services import TransactionRow, transactions_ingest
from elections.tests.factories import ConstituencyFactory, ElectionFactory
from metrics import selectors
from metrics.models import DirtyBucket
from metrics.pipeline import election_recompute
from metrics.tests import reference

# Voting windows chosen to cross what can go wrong with local time: a half-hour offset with
# a month end inside the window, and a DST fall-back night (two local 02:00 hours) with a
# month end and an ISO week boundary.
ZONES = {
    "Asia/Kolkata": (datetime(2024, 3, 29, 2, 30, tzinfo=UTC), 4 * 24),
    "Europe/Berlin": (datetime(2024, 10, 25, 4, 0, tzinfo=UTC), 8 * 24),
}


@dataclass
class Seeded:
    election: object
    constituencies: list
    ref: reference.RefElection
    expected: dict

    def rollup(self, cid: int, period: str, start=None, end=None) -> list[dict]:
        return reference.rollup(self.expected, self.ref, cid, period, start, end)


def generate_transactions(
    *, constituency_ids: list[int], starts_at: datetime, hours: int, seed: int, prefix: str
) -> list[tuple[str, int, str, datetime]]:
    """Random activity with every anomaly rule firing somewhere: transactions before and
    after the window, votes outrunning bulletins, a turnout above 100 %, and a spike hour."""
    rng = random.Random(seed)
    txs = []
    n = 0

    def add(cid, kind, ts):
        nonlocal n
        n += 1
        txs.append((f"{prefix}-{n:07d}", cid, kind, ts))

    for index, cid in enumerate(constituency_ids):
        for hour in range(-2, hours + 2):  # two hours either side of the window
            if rng.random() > 0.3:
                continue
            base = starts_at + timedelta(hours=hour)
            bulletins = rng.randint(0, 6)
            votes = rng.randint(0, bulletins + (1 if index == 1 else 0))
            for _ in range(bulletins):
                add(cid, "bulletin_issued", base + timedelta(seconds=rng.randrange(3600)))
            for _ in range(votes):
                add(cid, "vote_cast", base + timedelta(seconds=rng.randrange(3600)))
            if rng.random() < 0.1:
                add(cid, "other", base + timedelta(seconds=rng.randrange(3600)))
    # Votes ahead of any bulletin, before the window opens: votes_exceed_bulletins.
    for _ in range(3):
        add(constituency_ids[1], "vote_cast", starts_at - timedelta(hours=3) + timedelta(seconds=rng.randrange(3600)))
    # Every constituency votes in hour 5, one of them far more: a velocity spike.
    spike_hour = starts_at + timedelta(hours=5)
    for index, cid in enumerate(constituency_ids):
        for _ in range(40 if index == 0 else 2):
            ts = spike_hour + timedelta(seconds=rng.randrange(3600))
            add(cid, "bulletin_issued", ts)
            add(cid, "vote_cast", ts)
    return txs


def seeded_election(
    *,
    tz: str = "Europe/Berlin",
    constituencies: int = 6,
    seed: int = 1,
    starts_at: datetime | None = None,
    hours: int | None = None,
    registered: list[int] | None = None,
) -> Seeded:
    """An election with data, built through the real ingest service and recompute, plus what
    the reference says every figure must be."""
    default_start, default_hours = ZONES.get(tz, (datetime(2024, 9, 6, 5, tzinfo=UTC), 48))
    starts_at = starts_at or default_start
    hours = hours or default_hours
    election = ElectionFactory(timezone=tz, starts_at=starts_at, ends_at=starts_at + timedelta(hours=hours))
    # The last constituency is small, so its turnout goes over 100 %.
    voters = registered or [1000 + 250 * i for i in range(constituencies - 1)] + [30]
    members = [ConstituencyFactory(election=election, registered_voters=voters[i]) for i in range(constituencies)]
    ids = [c.id for c in members]
    txs = generate_transactions(
        constituency_ids=ids, starts_at=starts_at, hours=hours, seed=seed, prefix=f"{election.code}-{seed}"
    )
    seed_transactions(election.id, txs)
    ref = reference.RefElection(
        tz=tz,
        starts_at=election.starts_at,
        ends_at=election.ends_at,
        registered={c.id: c.registered_voters for c in members},
        transactions=txs,
    )
    return Seeded(election, members, ref, reference.compute(ref, dj_timezone.now()))


def seed_transactions(election_id: int, txs) -> None:
    """Bulk load the way an import does: ingest with the flush deferred, then one
    whole-election recompute, which satisfies every dirty mark the ingest left."""
    rows = [TransactionRow(h, election_id, c, kind, ts, None) for h, c, kind, ts in txs]
    with TestCase.captureOnCommitCallbacks(execute=True):
        transactions_ingest(rows=rows)
        election_recompute(election_id=election_id)
        DirtyBucket.objects.filter(election_id=election_id).delete()


def ingest_and_recompute(election_id: int, txs) -> None:
    """The real write path: ingest, recompute, and run the on-commit callbacks (dirty-mark
    flush, cache invalidation) as the commit of a real request would."""
    rows = [TransactionRow(h, election_id, c, kind, ts, None) for h, c, kind, ts in txs]
    with TestCase.captureOnCommitCallbacks(execute=True):
        transactions_ingest(rows=rows)
        election_recompute(election_id=election_id)


def as_utc(value) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value.astimezone(UTC)


# --- tests -------------------------------------------------------------------------------------------------

pytestmark = pytest.mark.django_db

SUMMED = ("registered_voters", "total_bulletins_issued", "total_votes_cast", "total_transactions", "total_anomalies")


@pytest.fixture(params=sorted(ZONES))
def seeded(request) -> Seeded:
    return seeded_election(tz=request.param)


def test_hourly_stats_list_of_an_election_equals_the_reference_in_hour_then_constituency_order(seeded):
    rows = list(selectors.hourly_stats_list(election_id=seeded.election.id))
    expected = sorted(seeded.expected["hourly"].items(), key=lambda item: (item[0][1], item[0][0]))
    assert [(r.constituency_id, as_utc(r.hour)) for r in rows] == [key for key, _ in expected]
    for row, (_, want) in zip(rows, expected, strict=False):
        for name, value in want.items():
            assert getattr(row, name) == pytest.approx(value), name


def test_hourly_stats_list_keeps_start_inclusive_and_end_exclusive(seeded):
    hours = sorted({h for _, h in seeded.expected["hourly"]})
    start, end = hours[3], hours[10]
    cid = seeded.constituencies[0].id
    rows = selectors.hourly_stats_list(constituency_id=cid, start_time=start, end_time=end)
    want = sorted(h for c, h in seeded.expected["hourly"] if c == cid and start <= h < end)
    assert [as_utc(r.hour) for r in rows] == want


def test_constituency_metrics_equal_the_reference_with_local_hour_of_day(seeded):
    for member in seeded.constituencies:
        metrics, status = selectors.constituency_metrics(constituency_id=member.id)
        want = seeded.expected["constituencies"][member.id]
        assert status == "closed"
        assert metrics["constituency_id"] == member.id
        assert metrics["election_id"] == seeded.election.id
        for name, value in want.items():
            if name == "hourly_activity":
                assert metrics[name] == value
            else:
                assert metrics[name] == pytest.approx(value), name


def test_some_constituency_has_each_kind_of_anomaly(seeded):
    """Guards the generator: the data must exercise every rule, or the checks prove little."""
    kinds = {kind for _, _, kind in seeded.expected["anomalies"]}
    assert kinds == {"turnout_over_100", "votes_exceed_bulletins", "velocity_spike", "outside_voting_window"}


@pytest.mark.parametrize("period", ["hour", "day", "week", "month"])
def test_time_period_rollup_equals_the_reference(seeded, period):
    for member in seeded.constituencies:
        body, _ = selectors.constituency_time_period(constituency_id=member.id, period=period)
        assert body["buckets"] == _approx_buckets(seeded.rollup(member.id, period))


@pytest.mark.parametrize("period", ["hour", "day", "week"])
def test_time_period_rollup_within_a_range_keeps_cumulative_participation(seeded, period):
    hours = sorted({h for _, h in seeded.expected["hourly"]})
    start, end = hours[len(hours) // 3], hours[2 * len(hours) // 3]
    member = seeded.constituencies[2]
    body, _ = selectors.constituency_time_period(
        constituency_id=member.id, period=period, start_time=start, end_time=end
    )
    want = seeded.rollup(member.id, period, start, end)
    assert want, "the range should hold data"
    assert body["buckets"] == _approx_buckets(want)


def _approx_buckets(buckets: list[dict]) -> list[dict]:
    return [{**b, "participation_rate": pytest.approx(b["participation_rate"])} for b in buckets]


def test_day_buckets_follow_the_local_calendar(seeded):
    body, _ = selectors.constituency_time_period(constituency_id=seeded.constituencies[0].id, period="day")
    tz = seeded.election.tz
    for bucket in body["buckets"]:
        local_start = bucket["start"].astimezone(tz)
        assert (local_start.hour, local_start.minute) == (0, 0)
        assert (bucket["end"].astimezone(tz) - timedelta(seconds=1)).date() == local_start.date()


def test_fall_back_day_is_25_hours_long():
    seeded = seeded_election(tz="Europe/Berlin")
    body, _ = selectors.constituency_time_period(constituency_id=seeded.constituencies[0].id, period="day")
    tz = seeded.election.tz
    lengths = {b["start"].astimezone(tz).date().isoformat(): b["end"] - b["start"] for b in body["buckets"]}
    assert lengths["2024-10-27"] == timedelta(hours=25)
    assert lengths["2024-10-28"] == timedelta(hours=24)


def test_election_metrics_equal_the_reference(seeded):
    metrics = selectors.election_metrics(election_id=seeded.election.id)
    want = seeded.expected["election"]
    for name, value in want.items():
        if name == "hourly_turnout":
            continue
        assert metrics[name] == pytest.approx(value), name
    assert [
        (as_utc(t["hour"]), t["votes_cast"], pytest.approx(t["participation_rate"])) for t in metrics["hourly_turnout"]
    ] == [(t["hour"], t["votes_cast"], t["participation_rate"]) for t in want["hourly_turnout"]]
    assert metrics["status"] == "closed"


def test_election_participation_is_votes_over_registered_not_a_mean_of_rates():
    seeded = seeded_election(tz="Europe/Berlin", registered=[100, 100, 100, 100, 100, 10000])
    metrics = selectors.election_metrics(election_id=seeded.election.id)
    constituencies = seeded.expected["constituencies"].values()
    mean_of_rates = sum(c["participation_rate"] for c in constituencies) / len(constituencies)
    votes = sum(c["total_votes_cast"] for c in constituencies)
    assert metrics["participation_rate"] == pytest.approx(100.0 * votes / 10500)
    assert metrics["participation_rate"] != pytest.approx(mean_of_rates)


@pytest.mark.parametrize("ordering", ["anomaly_score", "-anomaly_score", "-participation_rate", "total_votes_cast"])
def test_election_constituencies_sorted_by_a_metric_with_ties_by_id(ordering):
    seeded = seeded_election(constituencies=8)
    rows, _ = selectors.election_constituency_metrics(election_id=seeded.election.id)
    ordered = selectors.constituency_metrics_order(rows, ordering)
    name = ordering.lstrip("-")
    sign = -1 if ordering.startswith("-") else 1
    expected = sorted(seeded.expected["constituencies"].items(), key=lambda item: (sign * item[1][name], item[0]))
    assert [r["constituency_id"] for r in ordered] == [cid for cid, _ in expected]


def test_dashboard_sums_every_election_and_ranks_anomalous_constituencies():
    first = seeded_election(tz="Asia/Kolkata", seed=3)
    second = seeded_election(tz="Europe/Berlin", seed=4)
    detailed = selectors.dashboard_detailed()
    summary = detailed["summary"]
    elections = [first.expected["election"], second.expected["election"]]
    assert summary["elections"] == 2
    assert summary["constituencies"] == 12
    for name in SUMMED:
        assert summary[name] == sum(e[name] for e in elections), name
    votes = sum(e["total_votes_cast"] for e in elections)
    assert summary["participation_rate"] == pytest.approx(100.0 * votes / summary["registered_voters"])
    assert selectors.dashboard_summary() | {"computed_at": None} == summary | {"computed_at": None}

    scores = {
        cid: c["anomaly_score"] for seeded in (first, second) for cid, c in seeded.expected["constituencies"].items()
    }
    top = sorted(scores, key=lambda cid: (-scores[cid], cid))[: selectors.TOP_ANOMALOUS_CONSTITUENCIES]
    assert [c["constituency_id"] for c in detailed["top_anomalous_constituencies"]] == top

    every = sorted(
        ((h, c, kind) for seeded in (first, second) for (c, h, kind) in seeded.expected["anomalies"]),
        key=lambda a: (-a[0].timestamp(), a[1], a[2]),
    )[: selectors.RECENT_ANOMALIES]
    assert [(as_utc(a["hour"]), a["constituency_id"], a["kind"]) for a in detailed["recent_anomalies"]] == every


def test_unknown_objects_are_not_found():
    with pytest.raises(Http404, match="No election with id 999999"):
        selectors.election_metrics(election_id=999999)
    with pytest.raises(Http404, match="No constituency with id 999999"):
        selectors.constituency_metrics_get(constituency_id=999999)
    with pytest.raises(ValidationError, match="No election with id 999999"):
        selectors.anomaly_list(election_id=999999)


def test_anomaly_list_filters_by_election_constituency_and_kind(seeded):
    member = seeded.constituencies[-1]
    rows = selectors.anomaly_list(election_id=seeded.election.id, constituency_id=member.id, kind="turnout_over_100")
    want = sorted(
        (h for (c, h, kind) in seeded.expected["anomalies"] if c == member.id and kind == "turnout_over_100"),
        reverse=True,
    )
    assert want
    assert [as_utc(r.hour) for r in rows] == want
