"""A full recompute of one election spread over Celery workers, with the single-process
recompute's result (docs/PERFORMANCE.md, national scale).

A run goes through three stages, each step one task, so N workers share the work:

1. **parts**: every hour of a span of constituencies (ids ``first``..``last``, at most
   METRICS_RECOMPUTE_PART_SIZE of them): counts, velocities, cumulative participation, the
   anomalies a constituency's own rows decide, its totals. A part cannot judge a velocity
   spike, which compares a constituency with every other one in the same hour
   (docs/METRICS.md#anomaly-rules): it keeps the stored spikes and counts them.
2. **spikes**: one step per hour, judging that hour's spikes across all its constituencies
   and moving the anomaly counts of its rows by the spikes that came or went.
3. **finish**: every constituency's episodes (docs/METRICS.md), totals, anomaly count and
   score, as the single-process recompute ends.

Locks: parts and spike steps hold the election row FOR SHARE, so they run side by side
(they write disjoint rows), while a flush or another recompute of the election, which take
it FOR NO KEY UPDATE (metrics/aggregation.py), waits for them; the finish takes it FOR NO
KEY UPDATE itself. A flush may run between two steps: it leaves consistent rows, and the
later stages re-judge every hour and re-sum every total from what is stored then.

Idempotent: a redelivered step whose ``done_at`` is set does nothing; the step that
completes its stage (counted under the run row's lock) starts the next one.
"""

import logging
from datetime import datetime
from functools import partial

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from election_monitor import bulk_sql
from elections.models import Constituency, Election
from metrics import anomalies
from metrics.aggregation import (
    ANOMALY_UPSERT_FIELDS,
    DELETE_BATCH,
    Scope,
    constituency_metrics_refresh,
    hour_peers_load,
)
from metrics.aggregation import metrics_recompute as recompute
from metrics.episodes import episodes_refresh
from metrics.models import Anomaly, AnomalyKind, HourlyStats, RecomputeRun, RecomputeStage, RecomputeStep

logger = logging.getLogger(__name__)


def election_is_split(election_id: int) -> bool:
    """Whether a full recompute of the election takes more than one part."""
    return Constituency.objects.filter(election_id=election_id).count() > settings.METRICS_RECOMPUTE_PART_SIZE


def election_recompute_start(
    *, election_id: int, part_size: int | None = None, now: datetime | None = None
) -> RecomputeRun:
    """Create a run of the whole election and queue its parts (after commit)."""
    part_size = part_size or settings.METRICS_RECOMPUTE_PART_SIZE
    ids = list(Constituency.objects.filter(election_id=election_id).order_by("id").values_list("id", flat=True))
    with transaction.atomic():
        run = RecomputeRun.objects.create(election_id=election_id, now=now or timezone.now())
        steps = RecomputeStep.objects.bulk_create(
            [
                RecomputeStep(run=run, stage=RecomputeStage.PART, first=chunk[0], last=chunk[-1])
                for chunk in (ids[i : i + part_size] for i in range(0, len(ids), part_size))
            ]
        )
        if steps:
            transaction.on_commit(partial(_steps_queue, [step.id for step in steps]))
        else:
            transaction.on_commit(partial(stage_next, run_id=run.id, after=RecomputeStage.PART))
    logger.info("recompute run %s of election %s: %d parts", run.id, election_id, len(steps))
    return run


def _steps_queue(step_ids: list[int]) -> None:
    # By name from the app's registry: metrics.tasks imports this module (its thin door).
    recompute_step = current_app.tasks["metrics.recompute_step"]
    for step_id in step_ids:
        recompute_step.delay(step_id)


def step_run(*, step_id: int) -> None:
    """Run one step; the one that completes its stage starts the next (after commit)."""
    with transaction.atomic():
        step = RecomputeStep.objects.select_related("run").filter(pk=step_id, done_at__isnull=True).first()
        if step is None:
            return  # done already (a redelivery), or its run was deleted
        run = step.run
        if step.stage == RecomputeStage.PART:
            recompute(election_id=run.election_id, scope=Scope.constituency_span(step.first, step.last), now=run.now)
        else:
            hour_spikes_judge(election_id=run.election_id, hour=step.hour, now=run.now)
        # The steps of a stage end one at a time on the run row: exactly one sees none left.
        RecomputeRun.objects.select_for_update().filter(pk=run.id).exists()
        if not RecomputeStep.objects.filter(pk=step.id, done_at__isnull=True).update(done_at=timezone.now()):
            return  # a concurrent delivery of this step finished first
        if not RecomputeStep.objects.filter(run_id=run.id, stage=step.stage, done_at__isnull=True).exists():
            transaction.on_commit(partial(stage_next, run_id=run.id, after=step.stage))


def stage_next(*, run_id: int, after: str) -> None:
    """After the parts, one spikes step per hour with rows or stored spikes; after those
    (or with no hour at all), the finish."""
    if after == RecomputeStage.PART:
        with transaction.atomic():
            run = RecomputeRun.objects.select_for_update().get(pk=run_id)
            if run.steps.filter(stage=RecomputeStage.SPIKES).exists():
                return  # started already
            rows = HourlyStats.objects.filter(election_id=run.election_id)
            spikes = Anomaly.objects.filter(election_id=run.election_id, kind=AnomalyKind.VELOCITY_SPIKE)
            hours = {*rows.values_list("hour", flat=True).distinct().order_by()}
            hours |= {*spikes.values_list("hour", flat=True).distinct().order_by()}
            steps = RecomputeStep.objects.bulk_create(
                [RecomputeStep(run=run, stage=RecomputeStage.SPIKES, hour=hour) for hour in sorted(hours)]
            )
            if steps:
                transaction.on_commit(partial(_steps_queue, [step.id for step in steps]))
                return
    run_finish(run_id=run_id)


def run_finish(*, run_id: int) -> bool:
    """Every constituency's figures from the stored rows, under the election's own lock."""
    election_id, now = RecomputeRun.objects.values_list("election_id", "now").get(pk=run_id)
    with transaction.atomic():
        Election.objects.select_for_update(no_key=True).filter(pk=election_id).exists()
        if not RecomputeRun.objects.filter(pk=run_id, finished_at__isnull=True).update(finished_at=timezone.now()):
            return False
        # The spike steps wrote velocity spikes without their episodes: re-derive every
        # constituency's, as the single-process recompute of a whole election does.
        episodes_refresh(election_id=election_id, constituency_ids=None, now=now)
        constituency_metrics_refresh(election_id=election_id, constituency_ids=None, now=now)
    logger.info("recompute run %s of election %s finished", run_id, election_id)
    return True


def hour_spikes_judge(*, election_id: int, hour: datetime, now: datetime) -> int:
    """Judge one hour's velocity spikes across every constituency with a row in it, and move
    those rows' anomaly counts by the spikes that came or went; returns how many rows moved.
    Call inside a transaction."""
    bulk_sql.row_lock_shared(Election, election_id)
    # The hour's rows with their constituencies' registered voters, as arrays, from the two
    # covering indexes the flush reads its peers from: a national hour has 96,325 rows.
    desired = anomalies.hour_spikes(*hour_peers_load(election_id=election_id, touched=set(), hours={hour})[hour])
    existing = {
        c: (pk, weight, details)
        for pk, c, weight, details in Anomaly.objects.filter(
            election_id=election_id, hour=hour, kind=AnomalyKind.VELOCITY_SPIKE
        ).values_list("id", "constituency_id", "weight", "details")
    }
    weight = anomalies.weight(AnomalyKind.VELOCITY_SPIKE)
    stale = [pk for c, (pk, _, _) in existing.items() if c not in desired]
    upserts = [
        (election_id, c, hour, AnomalyKind.VELOCITY_SPIKE, weight, details, now)
        for c, details in desired.items()
        if c not in existing or existing[c][1:] != (weight, details)
    ]
    # Only the rows whose spike came or went change their anomaly count: read those by key,
    # in batches (an hour with a zero MAD can flag thousands).
    deltas = {c: (c in desired) - (c in existing) for c in desired.keys() ^ existing.keys()}
    changed = sorted(deltas)
    moved = [
        (pk, count + deltas[c], now)
        for start in range(0, len(changed), DELETE_BATCH)
        for pk, c, count in HourlyStats.objects.filter(
            election_id=election_id, hour=hour, constituency_id__in=changed[start : start + DELETE_BATCH]
        ).values_list("id", "constituency_id", "anomaly_count")
    ]
    for start in range(0, len(stale), DELETE_BATCH):
        Anomaly.objects.filter(id__in=stale[start : start + DELETE_BATCH]).delete()
    bulk_sql.rows_upsert(Anomaly, ANOMALY_UPSERT_FIELDS, upserts, unique=["constituency", "hour", "kind"],
                         update=["weight", "details"])  # fmt: skip
    bulk_sql.rows_update(HourlyStats, ["anomaly_count", "timestamp"], moved)
    return len(moved)
