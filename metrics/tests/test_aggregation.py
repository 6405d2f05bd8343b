"""metrics.aggregation: incremental and full recomputes, by behaviour, against the reference."""

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.db import OperationalError, connection, connections

from election_monitor import bulk_sql
from elections.models import Constituency
from elections.tests.factories import ConstituencyFactory, ElectionFactory
from metrics.aggregation import Scope, metrics_recompute
from metrics.models import Anomaly, AnomalyKind, Episode, EpisodeEvent, HourlyStats
from metrics.pipeline import dirty_buckets_flush
from metrics.tests import checks

HOUR = timedelta(hours=1)
T0 = datetime(2024, 9, 6, 5, 0, tzinfo=UTC)  # 08:00 in Moscow: buckets on the UTC hour
VOTE, BULLETIN = "vote_cast", "bulletin_issued"


def tracked(*, voters=(1000,) * 6, tz="Europe/Moscow", starts_at=T0, hours=12) -> checks.Tracked:
    election = ElectionFactory(timezone=tz, starts_at=starts_at, ends_at=starts_at + hours * HOUR)
    places = [ConstituencyFactory(election=election, registered_voters=v) for v in voters]
    return checks.Tracked(election, places)


def rows(cid: int) -> dict[datetime, HourlyStats]:
    return {r.hour: r for r in HourlyStats.objects.filter(constituency_id=cid)}


def kinds(cid: int) -> set[tuple[datetime, str]]:
    return set(Anomaly.objects.filter(constituency_id=cid).values_list("hour", "kind"))


@pytest.mark.django_db
def test_late_vote_for_an_early_hour_raises_every_later_hour():
    t = tracked(voters=(1000,))
    for h in range(4):
        t.add(0, BULLETIN, T0 + h * HOUR + timedelta(minutes=10), n=2)
        t.add(0, VOTE, T0 + h * HOUR + timedelta(minutes=20), n=2)
    now = T0 + 6 * HOUR
    t.flush(now)
    assert [r.participation_rate for _, r in sorted(rows(t.ids[0]).items())] == [0.2, 0.4, 0.6, 0.8]

    t.add(0, BULLETIN, T0 + timedelta(minutes=50), n=5)
    t.add(0, VOTE, T0 + timedelta(minutes=55), n=5)
    t.flush(now)

    assert [r.participation_rate for _, r in sorted(rows(t.ids[0]).items())] == [0.7, 0.9, 1.1, 1.3]
    assert Constituency.objects.get(pk=t.ids[0]).participation_rate == 1.3
    t.check(now)


@pytest.mark.django_db
def test_a_late_transaction_in_one_place_rejudges_the_spike_of_its_peers():
    """c5's 25 votes stand out, but only once five places have data that hour: a late
    transaction in c1 makes the spike appear in c5, deleting it makes it go again. c5's own
    buckets are never dirty, so this is the peer path of the incremental recompute."""
    t = tracked()
    hour = T0 + 2 * HOUR
    now = T0 + 8 * HOUR
    for index in (2, 3, 4):
        t.add(index, BULLETIN, hour + timedelta(minutes=5))
        t.add(index, VOTE, hour + timedelta(minutes=6))
    t.add(5, BULLETIN, hour + timedelta(minutes=7), n=25)
    t.add(5, VOTE, hour + timedelta(minutes=8), n=25)
    t.flush(now)
    assert kinds(t.ids[5]) == set()

    late = t.add(1, BULLETIN, hour + timedelta(minutes=59)) + t.add(1, VOTE, hour + timedelta(minutes=59))
    t.flush(now)
    assert kinds(t.ids[5]) == {(hour, AnomalyKind.VELOCITY_SPIKE)}
    assert rows(t.ids[5])[hour].anomaly_count == 1
    c5 = Constituency.objects.get(pk=t.ids[5])
    assert (c5.total_anomalies, c5.anomaly_score) == (1, 18.13)
    t.check(now)

    t.delete(late)
    t.flush(now)
    assert kinds(t.ids[5]) == set()
    assert rows(t.ids[5])[hour].anomaly_count == 0
    c5.refresh_from_db()
    assert (c5.total_anomalies, c5.anomaly_score) == (0, 0.0)
    t.check(now)


@pytest.mark.django_db
def test_raising_registered_voters_removes_turnout_anomalies():
    t = tracked(voters=(10,))
    t.add(0, BULLETIN, T0 + timedelta(minutes=1), n=12)
    t.add(0, VOTE, T0 + timedelta(minutes=2), n=12)
    t.add(0, VOTE, T0 + HOUR + timedelta(minutes=2))  # still over 100% an hour later
    t.flush(T0 + 3 * HOUR)
    assert {kind for _, kind in kinds(t.ids[0])} == {AnomalyKind.TURNOUT_OVER_100, AnomalyKind.VOTES_EXCEED_BULLETINS}
    assert rows(t.ids[0])[T0].participation_rate == 120.0

    t.set_voters(0, 100)
    t.flush(T0 + 3 * HOUR)

    assert {kind for _, kind in kinds(t.ids[0])} == {AnomalyKind.VOTES_EXCEED_BULLETINS}
    assert rows(t.ids[0])[T0].participation_rate == 12.0
    assert rows(t.ids[0])[T0].anomaly_count == 0
    t.check(T0 + 3 * HOUR)


@pytest.mark.django_db
def test_deleting_transactions_removes_their_anomalies_and_empty_buckets():
    t = tracked(voters=(1000,))
    t.add(0, BULLETIN, T0 + timedelta(minutes=1))
    extra_votes = t.add(0, VOTE, T0 + timedelta(minutes=2), n=3)
    early = t.add(0, BULLETIN, T0 - timedelta(minutes=30))
    now = T0 + 3 * HOUR
    t.flush(now)
    assert {kind for _, kind in kinds(t.ids[0])} == {
        AnomalyKind.VOTES_EXCEED_BULLETINS,
        AnomalyKind.OUTSIDE_VOTING_WINDOW,
    }

    t.delete(extra_votes[1:] + early)
    t.flush(now)

    assert kinds(t.ids[0]) == set()
    assert list(rows(t.ids[0])) == [T0]
    c = Constituency.objects.get(pk=t.ids[0])
    assert (c.total_transactions, c.total_anomalies, c.anomaly_score) == (2, 0, 0.0)
    t.check(now)


@pytest.mark.django_db
def test_velocity_of_the_current_partial_hour_counts_only_the_minutes_past():
    t = tracked(voters=(1000,))
    t.add(0, VOTE, T0 + 2 * HOUR + timedelta(minutes=1), n=30)
    t.flush(T0 + 2 * HOUR + timedelta(minutes=15))
    assert rows(t.ids[0])[T0 + 2 * HOUR].vote_velocity == 2.0  # 30 votes in 15 minutes

    # The sweep refreshes the current hours as the clock moves on.
    later = T0 + 3 * HOUR + timedelta(minutes=5)
    metrics_recompute(election_id=t.election.id, scope=Scope.hours([T0 + 2 * HOUR, T0 + 3 * HOUR]), now=later)
    assert rows(t.ids[0])[T0 + 2 * HOUR].vote_velocity == 0.5  # the full hour
    t.check(later)


@pytest.mark.django_db
def test_velocity_of_hours_partly_outside_the_window():
    # Voting from 08:20 to 10:45 Moscow time: the first hour has 40 minutes inside, the last 45.
    starts_at = T0 + timedelta(minutes=20)
    ends_at = T0 + 2 * HOUR + timedelta(minutes=45)
    election = ElectionFactory(timezone="Europe/Moscow", starts_at=starts_at, ends_at=ends_at)
    t = checks.Tracked(election, [ConstituencyFactory(election=election, registered_voters=1000)])
    t.add(0, VOTE, T0 + timedelta(minutes=30), n=20)
    t.add(0, BULLETIN, T0 + timedelta(minutes=10), n=2)  # before the window, same bucket
    t.add(0, VOTE, T0 + 2 * HOUR + timedelta(minutes=30), n=9)
    t.add(0, VOTE, T0 + 4 * HOUR, n=3)  # an hour wholly outside: at least 1 minute
    now = T0 + 6 * HOUR
    t.flush(now)

    got = rows(t.ids[0])
    assert got[T0].vote_velocity == 0.5
    assert got[T0].bulletin_velocity == 0.05
    assert got[T0 + 2 * HOUR].vote_velocity == 0.2
    assert got[T0 + 4 * HOUR].vote_velocity == 3.0
    t.check(now)


@pytest.mark.django_db
def test_kolkata_buckets_start_at_half_past_utc():
    t = tracked(voters=(1000,), tz="Asia/Kolkata", starts_at=datetime(2024, 4, 19, 1, 30, tzinfo=UTC))
    t.add(0, VOTE, datetime(2024, 4, 19, 5, 10, tzinfo=UTC))  # 10:40 IST
    t.add(0, VOTE, datetime(2024, 4, 19, 5, 29, 59, tzinfo=UTC))  # 10:59:59 IST
    t.add(0, VOTE, datetime(2024, 4, 19, 5, 30, tzinfo=UTC))  # 11:00 IST
    now = datetime(2024, 4, 19, 9, tzinfo=UTC)
    t.flush(now)
    assert {h: r.votes_cast for h, r in rows(t.ids[0]).items()} == {
        datetime(2024, 4, 19, 4, 30, tzinfo=UTC): 2,
        datetime(2024, 4, 19, 5, 30, tzinfo=UTC): 1,
    }
    t.check(now)


@pytest.mark.django_db
def test_a_fall_back_night_has_two_one_oclock_buckets():
    # New York, 3 November 2024: 01:00-02:00 EDT, then 01:00-02:00 EST.
    t = tracked(voters=(1000,), tz="America/New_York", starts_at=datetime(2024, 11, 3, 4, tzinfo=UTC), hours=6)
    t.add(0, VOTE, datetime(2024, 11, 3, 5, 30, tzinfo=UTC), n=2)  # 01:30 EDT
    t.add(0, VOTE, datetime(2024, 11, 3, 6, 30, tzinfo=UTC), n=3)  # 01:30 EST
    now = datetime(2024, 11, 3, 12, tzinfo=UTC)
    t.flush(now)
    got = rows(t.ids[0])
    assert {h: (r.votes_cast, r.participation_rate) for h, r in got.items()} == {
        datetime(2024, 11, 3, 5, tzinfo=UTC): (2, 0.2),
        datetime(2024, 11, 3, 6, tzinfo=UTC): (3, 0.5),
    }
    assert {h.astimezone(t.election.tz).hour for h in got} == {1}
    t.check(now)


@pytest.mark.django_db
def test_saving_a_constituency_keeps_its_computed_metrics():
    """An instance loaded before a recompute (an admin form, a shell) must not write its
    stale totals back when it is saved."""
    t = tracked(voters=(1000,))
    stale = Constituency.objects.get(pk=t.ids[0])
    t.add(0, VOTE, T0 + timedelta(minutes=5), n=4)
    t.flush(T0 + 2 * HOUR)

    stale.name = "Renamed"
    stale.save()

    c = Constituency.objects.get(pk=t.ids[0])
    assert (c.name, c.total_votes_cast, c.participation_rate) == ("Renamed", 4, 0.4)
    t.check(T0 + 2 * HOUR)


# --- idempotence and concurrency -----------------------------------------------------------


def _busy_election(places: int = 6, hours: int = 4) -> checks.Tracked:
    t = tracked(voters=(40,) + (1000,) * (places - 1))
    for h in range(hours):
        for i in range(places):
            t.add(i, BULLETIN, T0 + h * HOUR + timedelta(minutes=i), n=2)
            t.add(i, VOTE, T0 + h * HOUR + timedelta(minutes=i + 1), n=1 + (i == 5) * 24)
    t.add(0, VOTE, T0 - timedelta(minutes=1), n=45)  # turnout over 100%, outside the window
    return t


def _full_rows(election_id: int) -> tuple[list, list, list, list]:
    return (
        list(HourlyStats.objects.filter(election_id=election_id).order_by("id").values()),
        list(Anomaly.objects.filter(election_id=election_id).order_by("id").values()),
        list(Episode.objects.filter(election_id=election_id).order_by("id").values()),
        list(EpisodeEvent.objects.filter(election_id=election_id).order_by("id").values()),
    )


def _by_bucket(rows: list[dict]) -> dict:
    return {(r["constituency_id"], r["hour"]): {k: v for k, v in r.items() if k != "id"} for r in rows}


@pytest.mark.django_db
def test_running_the_same_recompute_twice_gives_identical_rows():
    t = _busy_election()
    now = T0 + 5 * HOUR
    t.flush(now)
    first = _full_rows(t.election.id)
    # Every kind the recompute derives (a protocol mismatch comes from reconciliation).
    assert {a["kind"] for a in first[1]} == set(AnomalyKind.values) - {AnomalyKind.STREAM_PROTOCOL_MISMATCH}
    assert first[2]
    assert first[3]

    metrics_recompute(election_id=t.election.id, scope=Scope.election(), now=now)
    metrics_recompute(election_id=t.election.id, scope=Scope.marks([(t.ids[2], T0 + HOUR)]), now=now)
    metrics_recompute(election_id=t.election.id, scope=Scope.election(), now=now)

    # Same ids, values, detected_at and episodes; no event: nothing duplicated or re-announced.
    assert _full_rows(t.election.id) == first
    t.check(now)


@pytest.mark.django_db
def test_large_writes_staged_by_copy_give_the_same_rows(monkeypatch):
    """Every write through the path PostgreSQL takes for large batches (the embedded default
    runs the same test through the ORM)."""
    t = _busy_election()
    now = T0 + 5 * HOUR
    t.flush(now)
    first = _full_rows(t.election.id)
    monkeypatch.setattr(bulk_sql, "STAGE_MIN_ROWS", 1)
    HourlyStats.objects.filter(election_id=t.election.id, hour=T0 + HOUR).delete()
    metrics_recompute(election_id=t.election.id, scope=Scope.election(), now=now)

    hourly, found, *_ = _full_rows(t.election.id)
    assert _by_bucket(hourly) == _by_bucket(first[0])  # the deleted hour's rows are back, with new ids
    assert found == first[1]
    t.add(1, "vote_cast", T0 + 2 * HOUR + timedelta(minutes=5), n=40)
    t.flush(now)
    metrics_recompute(election_id=t.election.id, scope=Scope.election(), now=now)
    t.check(now)


@pytest.mark.django_db(transaction=True)
def test_concurrent_recomputes_of_one_election_agree():
    t = _busy_election()
    now = T0 + 5 * HOUR
    HourlyStats.objects.all().delete()
    errors = []

    retries = []

    def run(scope):
        try:
            for _ in range(200):
                try:
                    metrics_recompute(election_id=t.election.id, scope=scope, now=now)
                    return
                except OperationalError as error:
                    # What the Celery task does (autoretry on OperationalError). Only SQLite's
                    # shared in-memory test database refuses a second writer instead of waiting.
                    retries.append(error)
                    time.sleep(0.01)
        except Exception as error:
            errors.append(error)
        finally:
            connections.close_all()

    scopes = [Scope.election()] * 3 + [Scope.marks([(c, T0 + HOUR) for c in t.ids]), Scope.constituencies(t.ids[:2])]
    threads = [threading.Thread(target=run, args=(scope,)) for scope in scopes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    if connection.vendor == "postgresql":
        assert retries == []  # the election row lock makes the others wait, not fail
    t.check(now)  # every row and anomaly exactly once, as the reference has them


# --- cost: queries do not grow with the election ------------------------------------------

# Both include the one upsert of the election's figures version (metrics/cache.py).
# Episode upkeep, where flags or hours moved: stored episodes, anomalies and hours read once
# each; at most a delete, an update, an insert and the events' insert.
EPISODE_QUERIES = 7
INCREMENTAL_QUERIES = 21 + EPISODE_QUERIES  # includes the one SUM of the hours before the earliest changed one
FULL_QUERIES = 15 + EPISODE_QUERIES


@pytest.mark.django_db
@pytest.mark.parametrize(("places", "hours"), [(5, 1), (50, 1), (5, 10)])
def test_recompute_query_count_does_not_grow_with_the_election(places, hours, django_assert_max_num_queries):
    """One bound for 5 hourly rows and for 10x as many places or hours. Writes are one
    statement per batch of rows (SQLite allows 999 bound parameters: 90 hourly rows per
    INSERT; PostgreSQL 2000 rows), so up to a batch the count is exactly the same; beyond
    it, one statement more per batch, never one per row or per transaction."""
    t = tracked(voters=(1000,) * places, hours=hours + 2)
    for h in range(hours):
        for i in range(places):
            t.add(i, VOTE, T0 + h * HOUR + timedelta(minutes=3), n=1 + (i == 0) * 30)
    now = T0 + (hours + 3) * HOUR
    t.flush(now)

    t.add(places - 1, VOTE, T0 + timedelta(minutes=50))  # one late vote: one dirty bucket
    with django_assert_max_num_queries(INCREMENTAL_QUERIES):
        assert dirty_buckets_flush(election_id=t.election.id, now=now) == 1
    with django_assert_max_num_queries(FULL_QUERIES):
        metrics_recompute(election_id=t.election.id, scope=Scope.election(), now=now)
    t.check(now)


@pytest.mark.django_db
def test_rows_fetch_gives_the_values_the_orm_gives():
    """The recount's fetch (binary on PostgreSQL, no Django loaders) returns the ORM's values,
    aware datetimes included, and nothing for a filter that matches nothing."""
    t = tracked(voters=(1000, 2000))
    t.add(0, VOTE, T0 + timedelta(minutes=5), n=3)
    t.add(1, BULLETIN, T0 + HOUR + timedelta(minutes=5), n=2)
    metrics_recompute(election_id=t.election.id, scope=Scope.election(), now=T0 + 3 * HOUR)
    queryset = (
        HourlyStats.objects.filter(election_id=t.election.id)
        .values_list("id", "constituency_id", "hour", "votes_cast", "vote_velocity", "participation_rate")
        .order_by("id")
    )
    fetched = bulk_sql.rows_fetch(queryset)
    assert fetched == list(queryset)
    assert len(fetched) == 2
    assert all(row[2].utcoffset() == timedelta(0) for row in fetched)
    assert bulk_sql.rows_fetch(queryset.filter(id__in=[])) == []
    # More parameters than PostgreSQL binds on the server (an IN list over most of a national
    # election's constituencies): the same rows, fetched as Django fetches them.
    many = bulk_sql.SERVER_BOUND_PARAMETERS_MAX + 10 if connection.vendor == "postgresql" else 500
    wide = queryset.filter(constituency_id__in=[*range(10**9, 10**9 + many), *t.ids])
    assert bulk_sql.rows_fetch(wide) == list(queryset)


@pytest.mark.django_db
def test_int_rows_reads_integer_columns_as_the_orm_does():
    # The flush reads its spike peers with bulk_sql.int_rows: the same values as values_list.
    t = tracked(voters=(1000, 2500, 70))
    for i in range(3):
        t.add(i, VOTE, T0 + timedelta(minutes=5), n=i + 1)
    t.flush(T0 + 5 * HOUR)
    query = HourlyStats.objects.filter(election_id=t.election.id).values_list(
        "constituency_id", "votes_cast", "constituency__registered_voters"
    )
    assert sorted(map(tuple, bulk_sql.int_rows(query.order_by()).tolist())) == sorted(query)
    assert bulk_sql.int_rows(query.filter(hour=T0 + HOUR).order_by()).shape == (0, 3)
