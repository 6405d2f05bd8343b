"""elections/models.py: constraints, derived status and hour, and the ORM ingest path."""

from datetime import UTC, datetime, timedelta, timezone

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from elections.models import Constituency, Election, ElectionStatus, Transaction
from elections.tests.factories import VOTING_STARTS, ConstituencyFactory, ElectionFactory, TransactionFactory
from metrics.models import DirtyBucket, HourlyStats

pytestmark = pytest.mark.django_db


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --- constraints ---------------------------------------------------------------------------


def test_tx_hash_is_unique():
    first = TransactionFactory()

    with pytest.raises(IntegrityError), transaction.atomic():
        TransactionFactory(tx_hash=first.tx_hash, constituency=first.constituency)

    assert Transaction.objects.count() == 1


def test_constituency_code_is_unique_within_an_election_only(election):
    ConstituencyFactory(election=election, code="c-1")

    with pytest.raises(IntegrityError), transaction.atomic():
        ConstituencyFactory(election=election, code="c-1")
    ConstituencyFactory(election=ElectionFactory(), code="c-1")

    assert Constituency.objects.filter(code="c-1").count() == 2


@pytest.mark.parametrize("voters", [0, -1])
def test_registered_voters_must_be_positive(election, voters):
    with pytest.raises(IntegrityError), transaction.atomic():
        ConstituencyFactory(election=election, registered_voters=voters)

    assert not Constituency.objects.exists()


@pytest.mark.parametrize("voters", [0, -1])
def test_full_clean_names_registered_voters(election, voters):
    constituency = Constituency(election=election, code="c", name="C", registered_voters=voters)

    with pytest.raises(ValidationError) as error:
        constituency.full_clean()

    assert "registered_voters" in error.value.message_dict


@pytest.mark.parametrize("length", [timedelta(0), timedelta(hours=-1)])
def test_voting_window_must_end_after_it_starts(length):
    with pytest.raises(IntegrityError), transaction.atomic():
        ElectionFactory(starts_at=VOTING_STARTS, ends_at=VOTING_STARTS + length)

    assert not Election.objects.exists()


def test_full_clean_names_ends_at_for_an_empty_window():
    election = Election(code="e", name="E", timezone="UTC", starts_at=VOTING_STARTS, ends_at=VOTING_STARTS)

    with pytest.raises(ValidationError) as error:
        election.full_clean()

    assert "ends_at" in error.value.message_dict


def test_full_clean_refuses_an_unknown_timezone():
    election = Election(
        code="e", name="E", timezone="Europe/Atlantis", starts_at=VOTING_STARTS, ends_at=VOTING_STARTS + timedelta(1)
    )

    with pytest.raises(ValidationError) as error:
        election.full_clean()

    assert "timezone" in error.value.message_dict


# --- status --------------------------------------------------------------------------------


@pytest.fixture
def window():
    return ElectionFactory(starts_at=utc(2024, 9, 6, 5), ends_at=utc(2024, 9, 8, 17))


@pytest.mark.parametrize(
    ("now", "status"),
    [
        (utc(2024, 9, 6, 4, 59, 59), ElectionStatus.SCHEDULED),
        (utc(2024, 9, 6, 5), ElectionStatus.ACTIVE),
        (utc(2024, 9, 7, 12), ElectionStatus.ACTIVE),
        (utc(2024, 9, 8, 17), ElectionStatus.ACTIVE),  # the window is over, the grace period is not
        (utc(2024, 9, 8, 22, 59, 59), ElectionStatus.ACTIVE),
        (utc(2024, 9, 8, 23), ElectionStatus.CLOSED),  # ends_at + the default 6 hours
        (utc(2025, 1, 1), ElectionStatus.CLOSED),
    ],
)
def test_status_is_scheduled_then_active_through_the_grace_period_then_closed(window, now, status):
    assert window.status_at(now) == status


def test_grace_period_is_a_setting(window, settings):
    settings.ELECTION_GRACE_PERIOD_HOURS = 1

    assert window.status_at(utc(2024, 9, 8, 17, 59)) == ElectionStatus.ACTIVE
    assert window.status_at(utc(2024, 9, 8, 18)) == ElectionStatus.CLOSED


def test_zero_grace_period_closes_at_the_end_of_the_window(window, settings):
    settings.ELECTION_GRACE_PERIOD_HOURS = 0

    assert window.status_at(utc(2024, 9, 8, 16, 59)) == ElectionStatus.ACTIVE
    assert window.status_at(utc(2024, 9, 8, 17)) == ElectionStatus.CLOSED


def test_status_uses_the_current_time():
    now = datetime.now(UTC)
    running = ElectionFactory(starts_at=now - timedelta(hours=1), ends_at=now + timedelta(hours=1))
    upcoming = ElectionFactory(starts_at=now + timedelta(days=1), ends_at=now + timedelta(days=2))
    finished = ElectionFactory(starts_at=now - timedelta(days=5), ends_at=now - timedelta(days=4))

    assert (running.status, upcoming.status, finished.status) == ("active", "scheduled", "closed")


@pytest.mark.parametrize("grace", [0, 6, 24])
def test_active_queryset_agrees_with_status(settings, grace):
    settings.ELECTION_GRACE_PERIOD_HOURS = grace
    now = utc(2024, 9, 10, 12)
    elections = [
        ElectionFactory(starts_at=now + timedelta(hours=offset), ends_at=now + timedelta(hours=offset + length))
        for offset in (-48, -30, -12, -7, -6, -1, 0, 1)
        for length in (1, 6, 12)
    ]

    active = set(Election.objects.active(now).values_list("id", flat=True))

    assert active == {e.id for e in elections if e.status_at(now) == ElectionStatus.ACTIVE}
    assert active  # the sample holds active elections for every grace period


# --- Transaction.save: the derived hour and its guards -----------------------------------


@pytest.mark.parametrize(
    ("tz", "timestamp", "hour"),
    [
        ("Europe/Moscow", utc(2024, 9, 6, 5, 47, 12), utc(2024, 9, 6, 5)),
        ("Europe/Moscow", utc(2024, 9, 6, 5), utc(2024, 9, 6, 5)),
        ("UTC", utc(2024, 9, 6, 23, 59, 59, 999999), utc(2024, 9, 6, 23)),
        # +05:30: local hours start at :30 UTC.
        ("Asia/Kolkata", utc(2024, 9, 6, 5, 10), utc(2024, 9, 6, 4, 30)),
        ("Asia/Kolkata", utc(2024, 9, 6, 5, 40), utc(2024, 9, 6, 5, 30)),
        ("Asia/Kolkata", utc(2024, 9, 6, 5, 30), utc(2024, 9, 6, 5, 30)),
        # +05:45
        ("Asia/Kathmandu", utc(2024, 9, 6, 5, 50), utc(2024, 9, 6, 5, 15)),
        # An offset given in another zone is the same instant.
        ("Asia/Kolkata", datetime(2024, 9, 6, 8, 10, tzinfo=timezone(timedelta(hours=3))), utc(2024, 9, 6, 4, 30)),
    ],
)
def test_save_derives_the_local_hour_bucket(tz, timestamp, hour):
    constituency = ConstituencyFactory(election=ElectionFactory(timezone=tz))

    saved = TransactionFactory(constituency=constituency, timestamp=timestamp)

    saved.refresh_from_db()
    assert saved.hour == hour
    assert saved.election_id == constituency.election_id


def test_save_fills_the_election_from_the_constituency(constituencies):
    saved = Transaction(
        tx_hash="0xorm",
        constituency=constituencies[0],
        kind="vote_cast",
        timestamp=VOTING_STARTS + timedelta(minutes=5),
    )

    saved.save()

    assert Transaction.objects.get(tx_hash="0xorm").election_id == constituencies[0].election_id


def test_saving_a_new_timestamp_with_update_fields_moves_the_hour(constituencies):
    saved = TransactionFactory(constituency=constituencies[0], timestamp=VOTING_STARTS + timedelta(minutes=5))
    saved.timestamp = VOTING_STARTS + timedelta(hours=3, minutes=5)

    saved.save(update_fields=["timestamp"])

    saved.refresh_from_db()
    assert saved.hour == VOTING_STARTS + timedelta(hours=3)


def test_save_refuses_a_constituency_of_another_election(constituencies):
    other_election = ElectionFactory()

    with pytest.raises(ValidationError) as error:
        TransactionFactory(constituency=constituencies[0], election=other_election)

    assert "constituency" in error.value.message_dict
    assert not Transaction.objects.exists()
    assert not DirtyBucket.objects.exists()


def test_save_refuses_moving_a_stored_transaction_to_another_election(constituencies):
    stored = TransactionFactory(constituency=constituencies[0])
    elsewhere = ConstituencyFactory(election=ElectionFactory())
    loaded = Transaction.objects.get(pk=stored.pk)
    loaded.constituency, loaded.election = elsewhere, elsewhere.election

    with pytest.raises(ValidationError) as error:
        loaded.save()

    assert "election" in error.value.message_dict
    assert Transaction.objects.get(pk=stored.pk).constituency_id == constituencies[0].id


def test_save_refuses_a_naive_timestamp(constituencies):
    with pytest.raises(ValidationError) as error:
        TransactionFactory(constituency=constituencies[0], timestamp=datetime(2024, 9, 6, 10, 0))  # noqa: DTZ001

    assert "timestamp" in error.value.message_dict
    assert not Transaction.objects.exists()


def test_full_clean_names_a_constituency_of_another_election(constituencies):
    candidate = Transaction(
        tx_hash="0xclean",
        election=ElectionFactory(),
        constituency=constituencies[0],
        kind="vote_cast",
        timestamp=VOTING_STARTS,
    )

    with pytest.raises(ValidationError) as error:
        candidate.full_clean(exclude=["hour"])

    assert "constituency" in error.value.message_dict


# --- the timezone-change guard -------------------------------------------------------------


def test_timezone_cannot_change_once_transactions_are_stored(constituencies):
    TransactionFactory(constituency=constituencies[0])
    election = Election.objects.get(pk=constituencies[0].election_id)
    election.timezone = "Asia/Kolkata"

    with pytest.raises(ValidationError) as error:
        election.full_clean()

    assert "timezone" in error.value.message_dict


def test_timezone_can_change_while_no_transaction_is_stored(election):
    election.timezone = "Asia/Kolkata"

    election.full_clean()
    election.save()

    assert Election.objects.get(pk=election.pk).timezone == "Asia/Kolkata"


def test_other_fields_can_change_with_transactions_stored(constituencies):
    TransactionFactory(constituency=constituencies[0])
    election = Election.objects.get(pk=constituencies[0].election_id)
    election.name = "Renamed"

    election.full_clean()


# --- the ORM save path feeds the metrics pipeline ------------------------------------------


def test_save_marks_its_bucket_dirty_in_the_same_transaction(constituencies):
    saved = TransactionFactory(constituency=constituencies[0], timestamp=VOTING_STARTS + timedelta(minutes=50))

    marks = set(DirtyBucket.objects.values_list("election_id", "constituency_id", "hour"))
    assert marks == {(saved.election_id, constituencies[0].id, VOTING_STARTS)}


def test_moving_a_transaction_marks_the_old_and_the_new_bucket(constituencies):
    saved = TransactionFactory(constituency=constituencies[0], timestamp=VOTING_STARTS + timedelta(minutes=50))
    DirtyBucket.objects.all().delete()
    moved = Transaction.objects.get(pk=saved.pk)
    moved.constituency = constituencies[1]
    moved.timestamp = VOTING_STARTS + timedelta(hours=2, minutes=1)

    moved.save()

    marks = set(DirtyBucket.objects.values_list("constituency_id", "hour"))
    assert marks == {(constituencies[0].id, VOTING_STARTS), (constituencies[1].id, VOTING_STARTS + timedelta(hours=2))}


def test_orm_saves_update_the_metrics_after_commit(constituencies, django_capture_on_commit_callbacks):
    first, second = constituencies[:2]
    with django_capture_on_commit_callbacks(execute=True):
        TransactionFactory(constituency=first, kind="bulletin_issued", timestamp=VOTING_STARTS + timedelta(minutes=1))
        TransactionFactory(constituency=first, kind="vote_cast", timestamp=VOTING_STARTS + timedelta(minutes=2))
        TransactionFactory(constituency=second, kind="vote_cast", timestamp=VOTING_STARTS + timedelta(hours=1))

    rows = {(r.constituency_id, r.hour): r for r in HourlyStats.objects.all()}
    assert set(rows) == {(first.id, VOTING_STARTS), (second.id, VOTING_STARTS + timedelta(hours=1))}
    hour = rows[(first.id, VOTING_STARTS)]
    assert (hour.bulletins_issued, hour.votes_cast, hour.transaction_count) == (1, 1, 2)
    assert hour.participation_rate == pytest.approx(100 * 1 / 1000)
    first.refresh_from_db()
    assert (first.total_votes_cast, first.total_transactions) == (1, 2)
    assert not DirtyBucket.objects.exists()


def test_moving_a_transaction_by_orm_moves_its_stats(constituencies, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        saved = TransactionFactory(constituency=constituencies[0], timestamp=VOTING_STARTS + timedelta(minutes=1))
    moved = Transaction.objects.get(pk=saved.pk)
    moved.timestamp = VOTING_STARTS + timedelta(hours=5, minutes=1)

    with django_capture_on_commit_callbacks(execute=True):
        moved.save()

    assert list(HourlyStats.objects.values_list("hour", "votes_cast")) == [(VOTING_STARTS + timedelta(hours=5), 1)]


def test_nothing_is_recomputed_before_commit(constituencies, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        TransactionFactory(constituency=constituencies[0])

    assert callbacks  # the flush waits for the commit ...
    assert not HourlyStats.objects.exists()  # ... so nothing was counted yet
    assert DirtyBucket.objects.count() == 1
