"""``backfill_metrics``: recompute an election's metrics from its transactions, now.

Synchronous and idempotent: by default the whole election is recounted in one pass (one
transaction); with --chunk N every N constituencies are recounted and committed on their
own, so an interrupted run is finished by running it again.
"""

import sys
import time

from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from tqdm import tqdm

from elections.models import Constituency, Election
from elections.services import RowError, parse_aware_datetime
from metrics.aggregation import RecomputeResult
from metrics.models import Anomaly, HourlyStats
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

        if connection.vendor == "postgresql":
            # A backfill rewrites many rows at once; until autovacuum gets to them the planner's
            # statistics are stale and it picks a bad index for the next flush, hundreds of
            # times slower for one lookup (docs/PERFORMANCE.md).
            with connection.cursor() as cursor:
                for model in (HourlyStats, Anomaly, Constituency):
                    cursor.execute(f"ANALYZE {connection.ops.quote_name(model._meta.db_table)}")

        anomalies = Anomaly.objects.filter(election=election, constituency_id__in=ids).count()
        window = f" from {since.isoformat() if since else 'the start'} to {until.isoformat() if until else 'the end'}"
        self.stdout.write(
            f"Election {election.code}: {len(ids)} constituencies{window if since or until else ''}; "
            f"{total.buckets_recounted} buckets recounted, {total.rows_written} hourly rows written, "
            f"{total.rows_deleted} deleted, {total.anomalies_written} anomalies written, "
            f"{total.anomalies_deleted} cleared, {anomalies} anomalies now; "
            f"{total.constituencies_refreshed} constituency totals refreshed in {time.monotonic() - started:.1f}s."
        )


def _instant(value: str | None, option: str):
    if value is None:
        return None
    try:
        return parse_aware_datetime(value, field=option)
    except RowError as error:
        raise CommandError(f"{option}: {error.message}") from None
