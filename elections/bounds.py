"""Bounds on observed dates (SPEC section 10, "Bounds").

Election dates lie in years 1970-2999, and a transaction's timestamp lies within
TRANSACTION_WINDOW_SLACK_DAYS of its election's voting window. Far from Python's limits
(years 1 and 9999), so that no arithmetic on a stored date (a grace period, a bucket's end,
a timezone conversion) can overflow.
"""

from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError

ELECTION_YEAR_MIN = 1970
ELECTION_YEAR_MAX = 2999

Window = tuple[datetime, datetime]


def validate_election_date(value: datetime | None) -> None:
    """A model and serializer field validator: the year (in UTC) lies in 1970-2999."""
    if value is None:
        return
    try:
        year = value.astimezone(UTC).year
    except (OverflowError, ValueError):
        year = None
    if year is None or not ELECTION_YEAR_MIN <= year <= ELECTION_YEAR_MAX:
        raise ValidationError(
            f"Election dates must lie in the years {ELECTION_YEAR_MIN}-{ELECTION_YEAR_MAX}.", code="out_of_range"
        )


def window_slack() -> timedelta:
    return timedelta(days=settings.TRANSACTION_WINDOW_SLACK_DAYS)


def timestamp_window_error(timestamp: datetime, window: Window) -> str | None:
    """Why ``timestamp`` lies too far outside the voting window, or None if it does not.

    Subtle: the slack is subtracted from the timestamp (itself bounded well inside
    Python's range by the parser), never added to a stored window end, so a legacy row
    with ``ends_at`` near year 9999 cannot overflow here."""
    starts_at, ends_at = window
    slack = window_slack()
    try:
        inside = timestamp + slack >= starts_at and timestamp - slack <= ends_at
    except OverflowError:  # a timestamp within the slack of year 1 or 9999
        inside = False
    if not inside:
        return (
            f"'{timestamp.isoformat()}' is more than {slack.days} days outside the election's voting window "
            f"({starts_at.isoformat()} to {ends_at.isoformat()})."
        )
    return None
