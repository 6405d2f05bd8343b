"""How the metrics side learns of a change to observed data: two doors, one function.

- A saved Transaction's ``post_save`` (the single-save trigger; README, Architecture);
- ``elections.signals.buckets_changed``, which every other write of the elections service
  layer sends (bulk ingest, imports, deletes, constituency and election edits).

Both hand their buckets to ``buckets_changed_record``: dirty marks inside the writing
transaction, and one flush request after it commits. Nothing else marks buckets or touches
the metrics cache; readers learn of new figures from the version a recompute stores
(metrics/cache.py).
"""

from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver

from elections.models import Transaction
from elections.signals import buckets_changed
from metrics import pipeline, tasks
from metrics.cache import metrics_cache


def buckets_changed_record(*, election_id: int, buckets) -> None:
    """Mark the buckets in the current transaction; request a flush after it commits. No
    buckets: nothing to recount, the election's cached figures are retired in the same
    transaction (its version raised) and read again."""
    if not buckets:
        metrics_cache.election_version_bump(election_id)
        return
    pipeline.buckets_mark_dirty(election_id=election_id, buckets=buckets)
    transaction.on_commit(lambda: tasks.flush_request(election_id), robust=True)


@receiver(buckets_changed)
def bulk_write_recorded(sender, *, election_id, buckets, **kwargs):
    buckets_changed_record(election_id=election_id, buckets=buckets)


@receiver(post_save, sender=Transaction)
def transaction_saved(sender, instance, raw=False, **kwargs):
    if raw:
        return
    # Subtle: an edit that moved the transaction leaves its old bucket a row short; the
    # model remembers the bucket it was loaded from. Elections never change (the model
    # refuses), so both buckets are in the same election.
    buckets = {(instance.constituency_id, instance.hour), *instance.loaded_buckets()}
    buckets_changed_record(election_id=instance.election_id, buckets=buckets)
    instance.remember_bucket()
