"""Signals the metrics app sends to the apps above it (alerts): after commit, never inside a
recompute's transaction, so a receiver that fails cannot undo figures."""

from django.dispatch import Signal

# Sent after a verification repaired a settled election, with ``election_id`` and
# ``drift_check_id`` (metrics.models.DriftCheck).
drift_repaired = Signal()
