"""Signal receivers: thin doors from every write path into metrics.pipeline.

Transaction deletions have no receiver on purpose: a post_delete receiver would make Django
load every transaction of a deleted election into memory. Transaction.delete() and the admin
go through elections.services.transactions_delete, which marks the buckets of what it
deletes; a bare QuerySet.delete() is repaired by the sweep while the election is active, and
by backfill_metrics after that.
"""

from django.db import transaction
from django.db.models.signals import post_delete, post_save, pre_save
from django.dispatch import receiver

from elections.models import Constituency, Election, Transaction
from elections.signals import buckets_changed, constituencies_changed
from metrics import pipeline
from metrics.cache import metrics_cache


@receiver(buckets_changed)
def mark_changed_buckets(sender, *, election_id, buckets, defer_flush=False, **kwargs):
    """The bulk paths (API lists, imports, seed): marks in the same transaction, one flush."""
    if buckets:
        pipeline.buckets_mark_dirty(election_id=election_id, buckets=buckets)
    if not defer_flush:
        pipeline.flush_request_on_commit(election_id)


@receiver(constituencies_changed)
def drop_cached_reads(sender, *, election_id, **kwargs):
    transaction.on_commit(lambda: metrics_cache.invalidate_election(election_id), robust=True)


@receiver(post_save, sender=Transaction)
def transaction_saved(sender, instance, raw=False, **kwargs):
    if raw:
        return
    buckets = {(instance.constituency_id, instance.hour)}
    previous = getattr(instance, "loaded_bucket", None)
    if previous and previous[0] is not None:
        buckets.add(previous)
    # Subtle: the old bucket may belong to another election's constituency only if the row
    # was moved between elections, which save() forbids; marks stay within one election.
    pipeline.buckets_mark_dirty(election_id=instance.election_id, buckets=buckets)
    pipeline.flush_request_on_commit(instance.election_id)
    instance.loaded_bucket = (instance.constituency_id, instance.hour)


@receiver(pre_save, sender=Constituency)
@receiver(pre_save, sender=Election)
def remember_inputs(sender, instance, **kwargs):
    """Registered voters and the voting window feed every rate, velocity and anomaly."""
    if instance.pk is None:
        instance.metric_inputs_before = None
        return
    fields = ("registered_voters",) if sender is Constituency else ("starts_at", "ends_at")
    instance.metric_inputs_before = sender.objects.filter(pk=instance.pk).values_list(*fields).first()


@receiver(post_save, sender=Constituency)
def constituency_saved(sender, instance, created, raw=False, **kwargs):
    if raw:
        return
    # Any edit (a new constituency, a name, registered voters) shows in reads computed from
    # the election's constituencies: drop its cached reads after commit, like a recompute.
    election_id = instance.election_id
    transaction.on_commit(lambda: metrics_cache.invalidate_election(election_id), robust=True)
    before = getattr(instance, "metric_inputs_before", None)
    if created or before is None or before == (instance.registered_voters,):
        return
    pipeline.buckets_mark_dirty(election_id=election_id, buckets={(instance.id, None)})
    pipeline.flush_request_on_commit(election_id)


@receiver(post_save, sender=Election)
def election_saved(sender, instance, created, raw=False, **kwargs):
    if raw:
        return
    election_id = instance.id
    transaction.on_commit(lambda: metrics_cache.invalidate_election(election_id), robust=True)
    before = getattr(instance, "metric_inputs_before", None)
    if created or before is None or before == (instance.starts_at, instance.ends_at):
        return
    pipeline.buckets_mark_dirty(election_id=election_id, buckets={(None, None)})
    pipeline.flush_request_on_commit(election_id)


@receiver(post_delete, sender=Constituency)
def constituency_deleted(sender, instance, **kwargs):
    """A peer left: the spikes of every hour it had data in must be re-judged for the others.

    Marked after commit, and only if the election survived (deleting an election cascades
    here for each of its constituencies, and there is nothing left to recompute then).
    """
    election_id = instance.election_id
    metrics_cache.forget_constituency(instance.id)

    def mark_election():
        with transaction.atomic():
            if Election.objects.filter(pk=election_id).exists():
                pipeline.buckets_mark_dirty(election_id=election_id, buckets={(None, None)})
                pipeline.flush_request_on_commit(election_id)
            else:
                metrics_cache.invalidate_election(election_id)

    transaction.on_commit(mark_election, robust=True)


@receiver(post_delete, sender=Election)
def election_deleted(sender, instance, **kwargs):
    """Cached reads of a deleted election (and the dashboards counting it) must go."""
    election_id = instance.id
    transaction.on_commit(lambda: metrics_cache.invalidate_election(election_id), robust=True)
