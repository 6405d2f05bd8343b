"""Hour, day, week and month buckets in an election's own timezone (docs/METRICS.md#hour-buckets-and-periods).

Subtle: a bucket is identified by its *instant*, not by its local wall-clock label. On a
fall-back night the two local 01:00 hours are different instants, so they are two buckets;
in a spring-forward gap the missing local hour simply has no bucket. Half-hour and
45-minute offsets fall out naturally because we subtract the local minutes, never round UTC.
"""

from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, available_timezones

HOUR = timedelta(hours=1)
PERIODS = ("hour", "day", "week", "month")


@lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


@lru_cache(maxsize=1)
def timezone_names() -> frozenset[str]:
    return frozenset(available_timezones())


def hour_bucket(ts: datetime, tz: ZoneInfo) -> datetime:
    """Start of the local hour holding ``ts``, as an aware UTC instant."""
    if ts.tzinfo is None:
        raise ValueError("hour_bucket needs an aware datetime")
    local = ts.astimezone(tz)
    start = ts - timedelta(minutes=local.minute, seconds=local.second, microseconds=local.microsecond)
    return start.astimezone(UTC)


# Stored hours lie strictly between these (timestamps are parsed within years 2-9998), so a
# query bound beyond them selects the same as the bound itself.
_QUERY_BOUND_MIN = datetime(2, 1, 1, tzinfo=UTC)
_QUERY_BOUND_MAX = datetime(9999, 1, 1, tzinfo=UTC)


def hour_bucket_ceil(ts: datetime, tz: ZoneInfo) -> datetime:
    """The first bucket start at or after ``ts``: for stored hours (always bucket starts),
    ``hour >= ts`` and ``hour < ts`` select exactly what they select with this instant, so
    query bounds can be rounded to it (a bounded set of cache keys, the same result).

    Subtle: bucket starts are what hour_bucket returns, looked for at quarter-hour steps
    over two hours, not at ``start + 1 h``: an offset change (a DST night, Lord Howe's
    half-hour one) makes some local hours shorter or longer than 60 minutes, and there a
    bucket's start need not lie inside the bucket (hour_bucket(start) != start)."""
    if ts <= _QUERY_BOUND_MIN:
        return _QUERY_BOUND_MIN
    if ts >= _QUERY_BOUND_MAX:
        return _QUERY_BOUND_MAX
    candidates = (hour_bucket(ts + timedelta(minutes=15 * step), tz) for step in range(9))
    return min(c for c in candidates if c >= ts)


def period_start(hour: datetime, tz: ZoneInfo, period: str) -> datetime:
    """Start of the local hour/day/ISO week/month holding ``hour``, as an aware UTC instant."""
    if period == "hour":
        return hour_bucket(hour, tz)
    local = hour.astimezone(tz)
    if period == "day":
        naive = datetime(local.year, local.month, local.day)
    elif period == "week":
        naive = datetime(local.year, local.month, local.day) - timedelta(days=local.weekday())
    elif period == "month":
        naive = datetime(local.year, local.month, 1)
    else:
        raise ValueError(f"unknown period {period!r}")
    return local_midnight_instant(naive, tz)


def period_end(start: datetime, tz: ZoneInfo, period: str) -> datetime:
    """Start of the next period (exclusive end of the one starting at ``start``)."""
    if period == "hour":
        return start + HOUR
    local = start.astimezone(tz)
    naive = datetime(local.year, local.month, local.day)
    if period == "day":
        naive += timedelta(days=1)
    elif period == "week":
        naive += timedelta(days=7)
    elif period == "month":
        naive = datetime(local.year + local.month // 12, local.month % 12 + 1, 1)
    else:
        raise ValueError(f"unknown period {period!r}")
    return local_midnight_instant(naive, tz)


def local_midnight_instant(naive: datetime, tz: ZoneInfo) -> datetime:
    """The first instant of a local calendar day (midnight may not exist on a DST day)."""
    aware = naive.replace(tzinfo=tz)
    # Subtle: where local midnight falls in a spring-forward gap (e.g. America/Santiago),
    # zoneinfo resolves it with the pre-transition offset, which lands after the gap; the
    # round trip through UTC gives the real first instant of that day.
    instant = aware.astimezone(UTC)
    if instant.astimezone(tz).date() != naive.date():
        instant = hour_bucket(instant + HOUR, tz)
    return instant


def hour_of_day(hour: datetime, tz: ZoneInfo) -> int:
    return hour.astimezone(tz).hour
