"""Reads of observed data that the write path needs (no model import from elections.bounds,
which the models use)."""

from collections.abc import Callable
from datetime import datetime

from elections.models import Election

Window = tuple[datetime, datetime]


def election_window_lookup() -> Callable[[int], Window | None]:
    """Voting windows by election id, one query per election for the lookup's lifetime (a
    request or an import batch)."""
    windows: dict[int, Window | None] = {}

    def lookup(election_id: int) -> Window | None:
        if election_id not in windows:
            windows[election_id] = Election.objects.filter(pk=election_id).values_list("starts_at", "ends_at").first()
        return windows[election_id]

    return lookup
