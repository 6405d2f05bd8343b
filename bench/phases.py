"""Where a full recompute's time goes, timed in-process (docs/PERFORMANCE.md, item 3 and
"Spread over workers"). Not a benchmark item: wall times of the product's own functions,
wrapped while they run, on an election a benchmark already generated.

    bench/phases.py recompute --election CODE [--runs N]
        backfill_metrics from empty, as item 3 runs it, with its recount, writes and commit
        timed apart, next to the raw GROUP BY of the same run.
    bench/phases.py finish --election CODE
        the two calls of a parallel recompute's finish (metrics/parallel.py), rolled back.

Uses BENCH_DATABASE_URL, BENCH_REDIS_URL and BENCH_BROKER_URL as bench/run.py does.
"""

import argparse
import functools
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import env


def wrapped(timings: Counter, owner, name: str, label: str) -> None:
    """Replace ``owner.name`` by a copy that adds its wall time to ``timings[label]``."""
    original = getattr(owner, name)

    @functools.wraps(original)
    def timed(*args, **kwargs):
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            timings[label] += time.perf_counter() - started

    setattr(owner, name, timed)


def recompute(election, runs: int) -> None:
    from django.db.backends.base.base import BaseDatabaseWrapper

    from bench import recompute as rc
    from metrics import aggregation

    timings: Counter = Counter()
    wrapped(timings, aggregation, "_recount", "recount")
    wrapped(timings, aggregation, "_write", "write (COPY)")
    wrapped(timings, BaseDatabaseWrapper, "commit", "commit")
    for run in range(1, runs + 1):
        rc.metrics_reset(election.id)
        raw, _ = rc.raw_group_by(election)
        timings.clear()
        seconds = rc.backfill(election.code)
        core = sum(timings.values())
        print(
            f"run {run}: backfill {seconds:.2f} s, raw GROUP BY {raw:.2f} s; "
            + ", ".join(f"{label} {value:.2f} s" for label, value in timings.items())
            + f"; those three {core:.2f} s = {core / raw:.2f}x the GROUP BY",
            flush=True,
        )


def finish(election) -> None:
    from django.db import transaction
    from django.utils import timezone

    from metrics.aggregation import constituency_metrics_refresh
    from metrics.episodes import episodes_refresh

    now = timezone.now()
    with transaction.atomic():
        for label, call in (
            ("episodes_refresh", lambda: episodes_refresh(election_id=election.id, constituency_ids=None, now=now)),
            (
                "constituency_metrics_refresh",
                lambda: constituency_metrics_refresh(election_id=election.id, constituency_ids=None, now=now),
            ),
        ):
            started = time.perf_counter()
            call()
            print(f"{label}: {time.perf_counter() - started:.2f} s", flush=True)
        transaction.set_rollback(True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["recompute", "finish"])
    parser.add_argument("--election", required=True, help="the code of an election already in the database")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    env.django_start()
    from elections.models import Election

    election = Election.objects.filter(code=args.election).first()
    if election is None:
        parser.error(f"no election '{args.election}' in BENCH_DATABASE_URL's database")
    if args.what == "recompute":
        recompute(election, args.runs)
    else:
        finish(election)
    return 0


if __name__ == "__main__":
    sys.exit(main())
