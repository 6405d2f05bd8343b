"""metrics/models.py: the uniqueness the recompute relies on, and the seed plan's HourlyStats
CRUD (create, read by constituency / election / time range, update, delete, latest)."""

from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction

from elections.tests.factories import VOTING_STARTS, ConstituencyFactory, ElectionFactory
from metrics.models import Anomaly, AnomalyKind, DirtyBucket, HourlyStats
from metrics.tests.factories import AnomalyFactory, HourlyStatsFactory

pytestmark = pytest.mark.django_db

H = timedelta(hours=1)


# --- constraints ---------------------------------------------------------------------------


def test_hourly_stats_are_unique_per_constituency_and_hour(constituencies):
    HourlyStatsFactory(constituency=constituencies[0], hour=VOTING_STARTS)

    with pytest.raises(IntegrityError), transaction.atomic():
        HourlyStatsFactory(constituency=constituencies[0], hour=VOTING_STARTS)
    HourlyStatsFactory(constituency=constituencies[1], hour=VOTING_STARTS)
    HourlyStatsFactory(constituency=constituencies[0], hour=VOTING_STARTS + H)

    assert HourlyStats.objects.count() == 3


def test_anomalies_are_unique_per_constituency_hour_and_kind(constituencies):
    AnomalyFactory(constituency=constituencies[0], hour=VOTING_STARTS, kind=AnomalyKind.TURNOUT_OVER_100, weight=5)

    with pytest.raises(IntegrityError), transaction.atomic():
        AnomalyFactory(constituency=constituencies[0], hour=VOTING_STARTS, kind=AnomalyKind.TURNOUT_OVER_100, weight=5)
    AnomalyFactory(constituency=constituencies[0], hour=VOTING_STARTS, kind=AnomalyKind.VELOCITY_SPIKE, weight=2)
    AnomalyFactory(constituency=constituencies[1], hour=VOTING_STARTS, kind=AnomalyKind.TURNOUT_OVER_100, weight=5)
    AnomalyFactory(constituency=constituencies[0], hour=VOTING_STARTS + H, kind=AnomalyKind.TURNOUT_OVER_100, weight=5)

    assert Anomaly.objects.count() == 4


def test_deleting_a_constituency_deletes_its_stats_and_anomalies(constituencies):
    HourlyStatsFactory(constituency=constituencies[0])
    AnomalyFactory(constituency=constituencies[0])
    kept = HourlyStatsFactory(constituency=constituencies[1])

    constituencies[0].delete()

    assert list(HourlyStats.objects.values_list("id", flat=True)) == [kept.id]
    assert not Anomaly.objects.exists()


def test_deleting_a_constituency_or_an_election_deletes_their_dirty_marks(constituencies):
    """Marks carry no database constraint (metrics.models.DirtyBucket): the ORM cascade must."""
    election = constituencies[0].election
    for c in constituencies[:2]:
        DirtyBucket.objects.create(election=election, constituency=c, hour=VOTING_STARTS)
    DirtyBucket.objects.create(election=election, constituency=None, hour=None)

    constituencies[0].delete()
    assert set(DirtyBucket.objects.values_list("constituency_id", flat=True)) == {constituencies[1].id, None}
    election.delete()
    assert not DirtyBucket.objects.exists()


# --- CRUD -----------------------------------------------------------------------------------


@pytest.fixture
def grid(constituencies):
    """Hours 0-4 of the first three constituencies, and one row in another election."""
    rows = [
        HourlyStatsFactory(
            constituency=c, hour=VOTING_STARTS + n * H, votes_cast=10 * i + n, bulletins_issued=20, transaction_count=30
        )
        for i, c in enumerate(constituencies[:3])
        for n in range(5)
    ]
    other = HourlyStatsFactory(constituency=ConstituencyFactory(election=ElectionFactory()), hour=VOTING_STARTS + 9 * H)
    return rows, other


def test_create_stores_every_field(constituencies):
    created = HourlyStats.objects.create(
        election=constituencies[0].election,
        constituency=constituencies[0],
        hour=VOTING_STARTS,
        bulletins_issued=12,
        votes_cast=9,
        transaction_count=22,
        bulletin_velocity=0.2,
        vote_velocity=0.15,
        participation_rate=0.9,
        anomaly_count=1,
    )

    stored = HourlyStats.objects.get(pk=created.pk)
    assert (stored.election_id, stored.constituency_id, stored.hour) == (
        constituencies[0].election_id,
        constituencies[0].id,
        VOTING_STARTS,
    )
    assert (stored.bulletins_issued, stored.votes_cast, stored.transaction_count, stored.anomaly_count) == (
        12,
        9,
        22,
        1,
    )
    assert (stored.bulletin_velocity, stored.vote_velocity, stored.participation_rate) == (0.2, 0.15, 0.9)
    assert stored.timestamp is not None


def test_read_by_constituency_in_hour_order(grid, constituencies):
    rows = HourlyStats.objects.for_constituency(constituencies[1].id)

    assert [r.hour for r in rows] == [VOTING_STARTS + n * H for n in range(5)]
    assert {r.constituency_id for r in rows} == {constituencies[1].id}


def test_read_by_election_excludes_other_elections(grid, election):
    rows, other = grid

    found = HourlyStats.objects.for_election(election.id)

    assert sorted(r.id for r in found) == sorted(r.id for r in rows)
    assert other.id not in {r.id for r in found}


def test_read_by_time_range_includes_start_and_excludes_end(grid, election):
    found = HourlyStats.objects.for_election(election.id).between(VOTING_STARTS + H, VOTING_STARTS + 3 * H)

    assert sorted({r.hour for r in found}) == [VOTING_STARTS + H, VOTING_STARTS + 2 * H]
    assert found.count() == 6


def test_time_range_bounds_are_optional(grid, constituencies):
    mine = HourlyStats.objects.for_constituency(constituencies[0].id)

    assert mine.between(start=VOTING_STARTS + 3 * H).count() == 2
    assert mine.between(end=VOTING_STARTS + 3 * H).count() == 3
    assert mine.between().count() == 5


def test_time_range_compares_instants_not_wall_clock(grid, constituencies):
    from zoneinfo import ZoneInfo

    start = (VOTING_STARTS + 2 * H).astimezone(ZoneInfo("Asia/Kolkata"))  # the same instant at +05:30

    found = HourlyStats.objects.for_constituency(constituencies[0].id).between(start, start + H)

    assert [r.hour for r in found] == [VOTING_STARTS + 2 * H]


def test_update_changes_the_stored_row(grid, constituencies):
    row = HourlyStats.objects.for_constituency(constituencies[0].id).get(hour=VOTING_STARTS)
    row.votes_cast = 77
    row.participation_rate = 7.7

    row.save(update_fields=["votes_cast", "participation_rate"])

    stored = HourlyStats.objects.get(pk=row.pk)
    assert (stored.votes_cast, stored.participation_rate, stored.bulletins_issued) == (77, 7.7, 20)


def test_bulk_update_through_the_queryset(grid, constituencies):
    updated = (
        HourlyStats.objects.for_constituency(constituencies[2].id)
        .between(end=VOTING_STARTS + 2 * H)
        .update(anomaly_count=3)
    )

    assert updated == 2
    assert HourlyStats.objects.filter(anomaly_count=3).count() == 2


def test_delete_removes_only_the_selected_rows(grid, constituencies, election):
    deleted, _ = HourlyStats.objects.for_constituency(constituencies[0].id).between(VOTING_STARTS + 3 * H).delete()

    assert deleted == 2
    assert HourlyStats.objects.for_election(election.id).count() == 13


def test_latest_is_the_most_recent_hour(grid, constituencies, election):
    assert HourlyStats.objects.for_constituency(constituencies[1].id).latest().hour == VOTING_STARTS + 4 * H
    latest_overall = HourlyStats.objects.latest()
    assert latest_overall.hour == VOTING_STARTS + 9 * H  # the other election's row
    assert HourlyStats.objects.for_election(election.id).latest("votes_cast").votes_cast == 24


def test_latest_of_an_empty_selection_raises_does_not_exist(constituencies):
    with pytest.raises(HourlyStats.DoesNotExist):
        HourlyStats.objects.for_constituency(constituencies[0].id).latest()
