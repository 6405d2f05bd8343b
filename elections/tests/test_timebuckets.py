"""elections.timebuckets: hour, day, week and month buckets in the election's timezone."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elections.timebuckets import (
    HOUR,
    hour_bucket,
    hour_bucket_ceil,
    hour_of_day,
    local_midnight_instant,
    period_end,
    period_start,
)
from metrics.tests import reference

# Whole-hour DST shifts on the local hour only: Lord Howe's 30-minute shift is out of scope.
ZONES = [
    "UTC",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "America/St_Johns",
    "Australia/Adelaide",
    "Europe/London",
    "America/New_York",
    "Europe/Moscow",
    "America/Santiago",  # DST changes at local midnight
]
NEW_YORK = ZoneInfo("America/New_York")


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("zone", "ts", "start"),
    [
        ("Asia/Kolkata", utc(2024, 4, 19, 5, 10), utc(2024, 4, 19, 4, 30)),  # 10:40 IST
        ("Asia/Kolkata", utc(2024, 4, 19, 5, 30), utc(2024, 4, 19, 5, 30)),  # 11:00 IST exactly
        ("Asia/Kathmandu", utc(2024, 4, 19, 5, 10), utc(2024, 4, 19, 4, 15)),  # 10:55 NPT
        ("America/St_Johns", utc(2024, 7, 1, 12, 0), utc(2024, 7, 1, 11, 30)),  # 09:30 NDT
        ("Australia/Adelaide", utc(2024, 1, 10, 0, 20), utc(2024, 1, 9, 23, 30)),  # 10:50 ACDT
    ],
)
def test_half_hour_and_45_minute_offsets_bucket_on_the_local_hour(zone, ts, start):
    assert hour_bucket(ts, ZoneInfo(zone)) == start


def test_a_fall_back_night_has_two_distinct_one_oclock_buckets():
    first = hour_bucket(utc(2024, 11, 3, 5, 30), NEW_YORK)  # 01:30 EDT
    second = hour_bucket(utc(2024, 11, 3, 6, 30), NEW_YORK)  # 01:30 EST
    assert (first, second) == (utc(2024, 11, 3, 5), utc(2024, 11, 3, 6))
    assert hour_of_day(first, NEW_YORK) == hour_of_day(second, NEW_YORK) == 1


def test_a_spring_forward_night_has_no_two_oclock_bucket():
    before = hour_bucket(utc(2024, 3, 10, 6, 59, 59), NEW_YORK)  # 01:59:59 EST
    after = hour_bucket(utc(2024, 3, 10, 7, 0), NEW_YORK)  # 03:00 EDT
    assert after - before == HOUR
    assert [hour_of_day(h, NEW_YORK) for h in (before, after)] == [1, 3]


def test_a_naive_timestamp_is_refused():
    with pytest.raises(ValueError):
        hour_bucket(datetime(2024, 1, 1, 12), NEW_YORK)


def test_days_weeks_and_months_are_local_and_follow_dst():
    ts = hour_bucket(utc(2024, 11, 3, 12), NEW_YORK)  # Sunday 07:00 EST, the fall-back day
    day = period_start(ts, NEW_YORK, "day")
    assert day == utc(2024, 11, 3, 4)  # midnight EDT
    assert period_end(day, NEW_YORK, "day") - day == timedelta(hours=25)
    assert period_start(ts, NEW_YORK, "week") == utc(2024, 10, 28, 4)  # Monday
    assert period_start(ts, NEW_YORK, "month") == utc(2024, 11, 1, 4)
    assert period_end(utc(2024, 12, 1, 5), NEW_YORK, "month") == utc(2025, 1, 1, 5)


def test_a_day_whose_midnight_falls_in_a_dst_gap_starts_at_one():
    santiago = ZoneInfo("America/Santiago")  # 8 September 2024: 00:00 -04 becomes 01:00 -03
    assert local_midnight_instant(datetime(2024, 9, 8), santiago) == utc(2024, 9, 8, 4)
    assert period_start(utc(2024, 9, 8, 15), santiago, "day") == utc(2024, 9, 8, 4)


instants = st.datetimes(min_value=datetime(2010, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(UTC))


@settings(max_examples=300, deadline=None)
@given(ts=instants, zone=st.sampled_from(ZONES))
def test_hour_bucket_agrees_with_the_reference(ts, zone):
    bucket = hour_bucket(ts, ZoneInfo(zone))
    assert bucket == reference.bucket(ts, zone)
    assert bucket <= ts < bucket + HOUR
    assert bucket.astimezone(ZoneInfo(zone)).minute == 0


@settings(max_examples=200, deadline=None)
@given(ts=instants, zone=st.sampled_from(ZONES), period=st.sampled_from(["day", "week", "month"]))
def test_periods_agree_with_the_reference(ts, zone, period):
    tz = ZoneInfo(zone)
    start = period_start(hour_bucket(ts, tz), tz, period)
    assert start == reference._period_start(reference.bucket(ts, zone), zone, period)
    assert period_end(start, tz, period) == reference._next_period(start, zone, period)
    assert start <= ts < period_end(start, tz, period)


def bucket_starts_around(ts: datetime, zone: str) -> list[datetime]:
    """Every bucket start within a day of ``ts``, by the reference, minute by minute."""
    return sorted({reference.bucket(ts + timedelta(minutes=m), zone) for m in range(-1440, 1440)})


@settings(max_examples=150, deadline=None)
@given(ts=instants, zone=st.sampled_from([*ZONES, "Australia/Lord_Howe", "Pacific/Chatham"]), on_grid=st.booleans())
def test_hour_bucket_ceil_is_the_first_bucket_start_at_or_after(ts, zone, on_grid):
    if on_grid:
        ts = reference.bucket(ts, zone)
    starts = bucket_starts_around(ts, zone)
    expected = min(start for start in starts if start >= ts)
    assert hour_bucket_ceil(ts, ZoneInfo(zone)) == expected


def test_hour_bucket_ceil_of_the_extremes_does_not_overflow():
    tz = ZoneInfo("Pacific/Kiritimati")  # UTC+14
    assert hour_bucket_ceil(datetime(9999, 12, 31, 23, 59, tzinfo=UTC), tz) == datetime(9999, 1, 1, tzinfo=UTC)
    assert hour_bucket_ceil(datetime(1, 1, 1, tzinfo=UTC), tz) == datetime(2, 1, 1, tzinfo=UTC)
