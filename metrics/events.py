"""Signals the metrics app sends to the apps above it (alerts): after commit, never inside a
recompute's transaction, so a receiver that fails cannot undo figures.

``episode_events_recorded`` is sent once per recompute that recorded at least one episode
event, after its database transaction committed, so a receiver never looks for an event that
is not there yet nor acts on one that rolled back. A receiver that fails is logged and is no
loss: its events stay in the outbox (``EpisodeEvent``) for a sweep to find
(docs/METRICS.md#episode-events).
"""

import logging
from collections.abc import Iterable

from django.db import transaction
from django.dispatch import Signal

from metrics.models import EpisodeEvent

logger = logging.getLogger(__name__)

# Sent after a verification repaired a settled election, with ``election_id`` and
# ``drift_check_id`` (metrics.models.DriftCheck).
drift_repaired = Signal()

# Sent with sender=EpisodeEvent and kwargs election_id (int), event_ids (list[int], ascending).
episode_events_recorded = Signal()


def episode_events_announce(*, election_id: int, event_ids: Iterable[int], using: str | None = None) -> None:
    """Send ``episode_events_recorded`` when the current transaction commits (at once outside one)."""
    ids = sorted(event_ids)
    if ids:
        transaction.on_commit(lambda: _send(election_id, ids), using=using)


def _send(election_id: int, event_ids: list[int]) -> None:
    # Subtle: the data is committed by now; a receiver's error must not turn the write
    # that caused it into a failure for its caller.
    for receiver, result in episode_events_recorded.send_robust(
        sender=EpisodeEvent, election_id=election_id, event_ids=event_ids
    ):
        if isinstance(result, Exception):
            logger.error("episode_events_recorded receiver %r failed", receiver, exc_info=result)
