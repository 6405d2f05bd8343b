"""``backfill_metrics``: recompute an election's metrics from its transactions, now.

Synchronous and idempotent: by default the whole election is recounted in one pass (one
transaction); with --chunk N every N constituencies are recounted and committed on their
own, so an interrupted run is finished by running it again. With --parallel the whole
election is split into Celery tasks (metrics/parallel.py) and the command waits for them.
"""

import sys
import time

from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from tqdm import tqdm

from elections.models import Constituency, Election
from elections.services import RowError, parse_aware_datetime
from metrics.aggregation import RecomputeResult
from metrics.models import Anomaly, HourlyStats, RecomputeRun, RecomputeStage
from metrics.parallel import election_recompute_start
from metrics.pipeline import election_recompute


class Command(BaseCommand):
    help = (
        "Recompute hourly stats, anomalies and constituency metrics of an election from its "
        "transactions (synchronous, idempotent, safe to re-run)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--election", required=True, metavar="CODE", help="The election's code.")
        parser.add_argument("--constituency", metavar="CODE", help="Only this constituency (its code).")
        parser.add_argument("--since", metavar="T", help="From this instant (ISO 8601 with a UTC offset).")
        parser.add_argument("--until", metavar="T", help="Before this instant (ISO 8601 with a UTC offset).")
        parser.add_argument(
            "--chunk",
            type=int,
            default=None,
            help="Constituencies per committed step, to make a long run resumable (default: the whole election in "
            "one pass, the fastest: each step re-judges every peer of its hours, so steps cost more in total).",
        )
        parser.add_argument(
            "--parallel",
            action="store_true",
            help="Spread the whole election's recompute over the Celery workers (parts of --part-size "
            "constituencies, then one task per hour for the velocity spikes) and wait for it to finish.",
        )
        parser.add_argument(
            "--part-size",
            type=int,
            default=None,
            help="Constituencies per task with --parallel (default: METRICS_RECOMPUTE_PART_SIZE).",
        )
        parser.add_argument(
            "--wait", type=float, default=3600.0, help="Seconds to wait for a --parallel run (default 3600)."
        )

    def handle(self, *args, **options):
        election = Election.objects.filter(code=options["election"]).first()
        if election is None:
            raise CommandError(f"Unknown election '{options['election']}'.")
        since = _instant(options["since"], "--since")
        until = _instant(options["until"], "--until")
        if since and until and since >= until:
            raise CommandError("--since must be before --until.")
        if options["chunk"] is not None and options["chunk"] < 1:
            raise CommandError("--chunk must be at least 1.")

        if options["parallel"]:
            if options["constituency"] or since or until or options["chunk"]:
                raise CommandError(
                    "--parallel recomputes the whole election: no --constituency, --since, --until or --chunk."
                )
            if options["part_size"] is not None and options["part_size"] < 1:
                raise CommandError("--part-size must be at least 1.")
            self._parallel(election, part_size=options["part_size"], wait=options["wait"])
            return

        constituencies = Constituency.objects.filter(election=election).order_by("id")
        if options["constituency"]:
            constituencies = constituencies.filter(code=options["constituency"])
            if not constituencies.exists():
                raise CommandError(f"Unknown constituency '{options['constituency']}' in election '{election.code}'.")
        ids = list(constituencies.values_list("id", flat=True))

        started = time.monotonic()
        total = RecomputeResult()
        if not options["constituency"] and (options["chunk"] is None or len(ids) <= options["chunk"]):
            # One pass over the whole election: one aggregate, and every hour's spikes and
            # every constituency's totals judged once. Steps of N constituencies each reload
            # and re-judge all peers of their hours, so their total cost grows with the
            # square of the election (docs/PERFORMANCE.md, full recompute).
            chunks = [None]
        else:
            size = options["chunk"] or max(1, len(ids))
            chunks = [ids[i : i + size] for i in range(0, len(ids), size)]
        with tqdm(
            total=len(ids), unit="constituency", desc=election.code, file=sys.stderr, disable=options["verbosity"] == 0
        ) as progress:
            for chunk in chunks:
                total += election_recompute(election_id=election.id, constituency_ids=chunk, since=since, until=until)
                progress.update(len(ids) if chunk is None else len(chunk))

        _analyze()

        anomalies = Anomaly.objects.filter(election=election, constituency_id__in=ids).count()
        window = f" from {since.isoformat() if since else 'the start'} to {until.isoformat() if until else 'the end'}"
        self.stdout.write(
            f"Election {election.code}: {len(ids)} constituencies{window if since or until else ''}; "
            f"{total.buckets_recounted} buckets recounted, {total.rows_written} hourly rows written, "
            f"{total.rows_deleted} deleted, {total.anomalies_written} anomalies written, "
            f"{total.anomalies_deleted} cleared, {anomalies} anomalies now; "
            f"{total.constituencies_refreshed} constituency totals refreshed in {time.monotonic() - started:.1f}s."
        )

    def _parallel(self, election, *, part_size: int | None, wait: float) -> None:
        started = time.monotonic()
        run = election_recompute_start(election_id=election.id, part_size=part_size)
        while not RecomputeRun.objects.filter(pk=run.pk, finished_at__isnull=False).exists():
            if time.monotonic() - started > wait:
                done = run.steps.filter(done_at__isnull=False).count()
                raise CommandError(
                    f"Recompute run {run.pk} of '{election.code}' not finished after {wait:g}s ({done} steps done); "
                    "are workers running? It goes on in the workers."
                )
            time.sleep(0.2)
        _analyze()
        parts = run.steps.filter(stage=RecomputeStage.PART).count()
        self.stdout.write(
            f"Election {election.code}: recomputed by {parts} parts and {run.steps.count() - parts} hourly spike "
            f"steps (run {run.pk}) in {time.monotonic() - started:.1f}s."
        )


def _analyze() -> None:
    if connection.vendor == "postgresql":
        # A backfill rewrites many rows at once; until autovacuum gets to them the planner's
        # statistics are stale and it picks a bad index for the next flush, hundreds of
        # times slower for one lookup (docs/PERFORMANCE.md).
        with connection.cursor() as cursor:
            for model in (HourlyStats, Anomaly, Constituency):
                cursor.execute(f"ANALYZE {connection.ops.quote_name(model._meta.db_table)}")


def _instant(value: str | None, option: str):
    if value is None:
        return None
    try:
        return parse_aware_datetime(value, field=option)
    except RowError as error:
        raise CommandError(f"{option}: {error.message}") from None
