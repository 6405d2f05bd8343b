"""Keeping metrics current (docs/METRICS.md#how-figures-stay-current): dirty marks,
coalesced flushes, the sweep.

Every change to observed data reaches metrics.signals.buckets_changed_record, which marks
the buckets it touched in the DirtyBucket table inside the writing transaction and, after
commit, asks metrics.tasks for a flush of the election. At most one flush
per election is queued at a time (a short-lived flag in the cache); the flush clears the
flag *before* reading the marks, so a mark committed later always finds either the flag
clear (and queues another flush) or a flush that has not read yet. Nothing is dropped: a
lost task, a dead worker or a broker outage leaves the marks in the database, where the
beat sweep finds them.

Subtle: the flag only rate-limits; correctness rests on the marks. If the flag outlives its
task (task lost, worker dead), triggers queue nothing until it expires
(METRICS_FLUSH_PENDING_TTL) or the sweep runs. Recomputes of one election are serialized by
a lock on its row, and each reads with a fresh snapshot after taking it, so a slower flush
can never write older counts over a newer one's.
"""

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from election_monitor import bulk_sql
from elections.models import Constituency, Election, Transaction, TransactionKind
from elections.timebuckets import HOUR
from metrics.aggregation import (
    RecomputeResult,
    Scope,
    constituency_metrics_refresh,
    current_hours,
    metrics_recompute,
)
from metrics.cache import metrics_cache
from metrics.events import drift_repaired
from metrics.models import DirtyBucket, DriftCheck, HourlyStats

logger = logging.getLogger(__name__)

FLUSH_TIME_BUDGET = 20.0  # seconds one flush task works before handing over to a new one
MARKS_VACUUM_INTERVAL = 10  # seconds


def buckets_mark_dirty(*, election_id: int, buckets: Iterable[tuple[int | None, datetime | None]]) -> int:
    """Durably record that these buckets need a recompute. Call inside the writing transaction."""
    now = timezone.now()
    marks = [(election_id, c, h, now) for c, h in set(buckets)]
    bulk_sql.rows_insert(DirtyBucket, ["election", "constituency", "hour", "created_at"], marks)
    return len(marks)


def dirty_buckets_flush(*, election_id: int, limit: int | None = None, now: datetime | None = None) -> int:
    """Recompute one batch of the election's dirty marks; returns how many marks it consumed."""
    limit = limit or settings.METRICS_FLUSH_BATCH
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        if outermost:
            bulk_sql.derived_writes_tune()
        if not Election.objects.select_for_update(no_key=True).filter(pk=election_id).exists():
            return 0
        # Subtle: the marks are read before the recount, and exactly those are deleted after
        # it, so a mark committed meanwhile survives for the next flush.
        marks = list(
            DirtyBucket.objects.filter(election_id=election_id)
            .order_by("id")
            .values_list("id", "constituency_id", "hour")[:limit]
        )
        if not marks:
            return 0
        scope = Scope.marks(((c, h) for _, c, h in marks), totals_by_delta=True)
        metrics_recompute(election_id=election_id, scope=scope, now=now)
        ids = [pk for pk, _, _ in marks]
        for start in range(0, len(ids), 2000):
            DirtyBucket.objects.filter(id__in=ids[start : start + 2000]).delete()
    return len(marks)


@dataclass
class FlushOutcome:
    consumed: int = 0
    more: bool = False  # the time budget ran out with marks left: the caller queues a successor


def dirty_buckets_flush_all(*, election_id: int, time_budget: float | None = None) -> FlushOutcome:
    """Flush until no marks are left or the time budget (FLUSH_TIME_BUDGET) is spent."""
    metrics_cache.flush_pending_clear(election_id)
    deadline = time.monotonic() + (FLUSH_TIME_BUDGET if time_budget is None else time_budget)
    outcome = FlushOutcome()
    limit = settings.METRICS_FLUSH_BATCH
    while True:
        batch = dirty_buckets_flush(election_id=election_id, limit=limit)
        outcome.consumed += batch
        if batch < limit:
            # Subtle: a short batch read every mark committed before it; any mark committed
            # since then found the pending flag clear (cleared above) and queued a flush.
            break
        if time.monotonic() > deadline:
            outcome.more = True
            break
    if outcome.consumed:
        marks_table_vacuum()
    return outcome


def marks_table_vacuum() -> bool:
    """Vacuum the marks table, at most every MARKS_VACUUM_INTERVAL seconds.

    Every flush deletes the marks it consumed, and until a vacuum their dead index entries
    slow each later read of marks. Autovacuum's default thresholds react late for a small,
    busy table like this one, and not at all where it is off."""
    if not bulk_sql.is_postgresql() or connection.in_atomic_block:
        return False
    if metrics_cache.add("metrics:marks-vacuum", 1, MARKS_VACUUM_INTERVAL) is False:
        return False
    return bulk_sql.table_vacuum(DirtyBucket)


def stale_buckets_find(*, election_id: int) -> set[tuple[int, datetime]]:
    """Buckets whose stored counts disagree with their transactions (or that exist on only
    one side): what a lost update or a hand edit would leave behind. One grouped aggregate
    per side, never a query per bucket."""
    actual = {
        (r["constituency_id"], r["hour"]): (r["b"], r["v"], r["n"])
        for r in Transaction.objects.filter(election_id=election_id)
        .values("constituency_id", "hour")
        .annotate(
            b=Count("id", filter=Q(kind=TransactionKind.BULLETIN_ISSUED)),
            v=Count("id", filter=Q(kind=TransactionKind.VOTE_CAST)),
            n=Count("id"),
        )
        .order_by()
    }
    stored = {
        (c, h): (b, v, n)
        for c, h, b, v, n in HourlyStats.objects.filter(election_id=election_id)
        .values_list("constituency_id", "hour", "bulletins_issued", "votes_cast", "transaction_count")
        .order_by()
    }
    return {key for key in actual.keys() | stored.keys() if actual.get(key) != stored.get(key)}


def election_sweep(*, election_id: int, now: datetime | None = None) -> dict:
    """Flush leftover marks, repair buckets that disagree with their transactions, and
    refresh the clock-dependent velocities of the current and previous hour."""
    now = now or timezone.now()
    flushed = dirty_buckets_flush_all(election_id=election_id, time_budget=float("inf")).consumed
    stale = stale_buckets_find(election_id=election_id)
    if stale:
        # Subtle: a bucket whose transactions committed a moment ago but whose flush has not
        # run yet shows up here too; recomputing it early is harmless (idempotent).
        logger.warning("sweep: election %s had %d stale buckets; repairing", election_id, len(stale))
        metrics_recompute(election_id=election_id, scope=Scope.marks(stale), now=now)
    election = Election.objects.get(pk=election_id)
    hours = {*current_hours(election, now), *unsettled_velocity_hours(election=election, now=now)}
    metrics_recompute(election_id=election_id, scope=Scope.hours(hours), now=now)
    return {
        "election_id": election_id,
        "flushed_marks": flushed,
        "repaired_buckets": len(stale),
        "repaired_constituencies": constituency_totals_repair(election_id=election_id, now=now),
    }


def constituency_totals_repair(*, election_id: int, now: datetime | None = None) -> int:
    """Re-sum the constituencies whose totals are not the sum of their hourly rows.

    Flushes move totals by deltas, so a hand edit or delete of hourly rows would otherwise
    persist in the totals. Under the election lock: no flush moves totals meanwhile."""
    with transaction.atomic():
        if not Election.objects.select_for_update(no_key=True).filter(pk=election_id).exists():
            return 0
        drifted = constituency_totals_stale(election_id=election_id)
        if drifted:
            logger.warning(
                "sweep: election %s had %d constituencies with stale totals; repairing", election_id, len(drifted)
            )
            constituency_metrics_refresh(election_id=election_id, constituency_ids=drifted, now=now)
    return len(drifted)


def constituency_totals_stale(*, election_id: int) -> set[int]:
    """Constituencies whose stored totals are not the sum of their hourly rows: one
    statement, so a flush committing meanwhile cannot make a right total look wrong."""
    quote = connection.ops.quote_name
    sql = (
        f"SELECT c.id FROM {quote(Constituency._meta.db_table)} c LEFT JOIN ("
        f"SELECT constituency_id, SUM(bulletins_issued) AS b, SUM(votes_cast) AS v, SUM(transaction_count) AS n "
        f"FROM {quote(HourlyStats._meta.db_table)} WHERE election_id = %s GROUP BY constituency_id"
        f") s ON s.constituency_id = c.id WHERE c.election_id = %s AND ("
        f"c.total_bulletins_issued <> COALESCE(s.b, 0) OR c.total_votes_cast <> COALESCE(s.v, 0) "
        f"OR c.total_transactions <> COALESCE(s.n, 0))"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [election_id, election_id])
        return {pk for (pk,) in cursor.fetchall()}


def unsettled_velocity_hours(*, election: Election, now: datetime) -> set[datetime]:
    """Past hours with a row computed before the hour (or the window) ended: its velocity
    divided by the minutes elapsed then. Normally the sweep settles them within the next
    hour; after a longer beat outage this finds the ones it missed."""
    return set(
        HourlyStats.objects.filter(
            election_id=election.id,
            hour__gte=election.starts_at - HOUR,
            hour__lt=now - HOUR,
            timestamp__lt=F("hour") + HOUR,
        )
        .filter(timestamp__lt=election.ends_at)
        .values_list("hour", flat=True)
        .distinct()
        .order_by()
    )


def active_elections_sweep(*, now: datetime | None = None) -> list[dict]:
    """Sweep every active election, and flush the leftover marks of any other election (late
    data for a closed election whose flush task was lost would otherwise wait forever)."""
    now = now or timezone.now()
    active = list(Election.objects.active(now).values_list("id", flat=True).order_by("id"))
    reports = [election_sweep(election_id=pk, now=now) for pk in active]
    leftover = DirtyBucket.objects.exclude(election_id__in=active).values_list("election_id", flat=True)
    for pk in sorted(set(leftover.distinct().order_by())):
        flushed = dirty_buckets_flush_all(election_id=pk, time_budget=float("inf")).consumed
        repaired = constituency_totals_repair(election_id=pk, now=now)
        reports.append({"election_id": pk, "flushed_marks": flushed, "repaired_constituencies": repaired})
    return reports


def election_recompute(
    *,
    election_id: int,
    constituency_ids: Iterable[int] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> RecomputeResult:
    """The manual path (API, admin action, backfill): recount a whole election or some of
    its constituencies, optionally within [since, until)."""
    if constituency_ids is None:
        return metrics_recompute(election_id=election_id, scope=Scope.election(since=since, until=until))
    ids = set(constituency_ids)
    with transaction.atomic():
        result = metrics_recompute(election_id=election_id, scope=Scope.constituencies(ids, since=since, until=until))
        if result.constituencies_refreshed < len(ids):
            # A constituency without any bucket in range is not "touched" by the recount, but
            # its totals must still be right (e.g. after its stats were deleted by hand). Same
            # transaction, so still under the election lock metrics_recompute took.
            result.constituencies_refreshed = constituency_metrics_refresh(
                election_id=election_id, constituency_ids=ids
            )
    return result


def settled_elections_verify(
    *, election_ids: Iterable[int] | None = None, now: datetime | None = None
) -> list[DriftCheck]:
    """Recount every election that is not active (or the given ones) against its stored
    figures, repair what drifted, and record each check (docs/METRICS.md#drift).

    Active elections are the sweep's: their figures move by the minute. A repair of a
    settled election is an error worth telling people about: it is logged as one and
    announced through ``metrics.events.drift_repaired`` after commit."""
    now = now or timezone.now()
    elections = Election.objects.all() if election_ids is None else Election.objects.filter(id__in=election_ids)
    if election_ids is None:
        elections = elections.exclude(id__in=Election.objects.active(now).values("id"))
    checks = []
    for election_id in elections.order_by("id").values_list("id", flat=True):
        with transaction.atomic():
            stale = stale_buckets_find(election_id=election_id)
            if stale:
                metrics_recompute(election_id=election_id, scope=Scope.marks(stale), now=now)
            repaired_constituencies = constituency_totals_repair(election_id=election_id, now=now)
            check = DriftCheck.objects.create(
                election_id=election_id,
                checked_at=now,
                repaired_buckets=len(stale),
                repaired_constituencies=repaired_constituencies,
                details={"buckets": [[c, h.isoformat()] for c, h in sorted(stale, key=_bucket_order)[:100]]},
            )
            if check.drifted:
                logger.error(
                    "verification: election %s had drifted from its transactions: %d buckets and %d "
                    "constituency totals repaired (drift check %s)",
                    election_id,
                    len(stale),
                    repaired_constituencies,
                    check.id,
                )
                transaction.on_commit(
                    lambda e=election_id, c=check.id: drift_repaired.send(
                        sender=DriftCheck, election_id=e, drift_check_id=c
                    ),
                    robust=True,
                )
        checks.append(check)
    return checks


def _bucket_order(bucket: tuple[int, datetime]) -> tuple[int, float]:
    return bucket[0], bucket[1].timestamp()
