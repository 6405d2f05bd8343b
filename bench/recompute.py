"""Items 3 and 4: full recompute (backfill_metrics) against the raw GROUP BY of the same
aggregation, and the incremental recompute after one new transaction."""

import contextlib
import io
import random
import time
from datetime import timedelta
from unittest import mock

from django.core.management import call_command
from django.db import connection, transaction

# The aggregation of metrics.aggregation._recount, written out: per (constituency, hour) the
# bulletins, votes, all transactions and those outside the voting window.
RAW_GROUP_BY = """
SELECT constituency_id, hour,
       COUNT(*) FILTER (WHERE kind = 'bulletin_issued'),
       COUNT(*) FILTER (WHERE kind = 'vote_cast'),
       COUNT(*),
       COUNT(*) FILTER (WHERE "timestamp" < %(starts)s OR "timestamp" >= %(ends)s)
FROM elections_transaction
WHERE election_id = %(election)s
GROUP BY constituency_id, hour
"""
RAW_ONE_BUCKET = RAW_GROUP_BY.replace(
    "WHERE election_id = %(election)s", "WHERE election_id = %(election)s AND constituency_id = %(c)s AND hour = %(h)s"
)


def raw_group_by(election) -> tuple[float, int]:
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(RAW_GROUP_BY, {"starts": election.starts_at, "ends": election.ends_at, "election": election.id})
        rows = cursor.fetchall()
    return time.perf_counter() - started, len(rows)


def raw_group_by_binary(election) -> float:
    """The same GROUP BY fetched in binary, as the recount fetches it (bulk_sql.rows_fetch):
    the floor without Django's per-value timestamptz loader, reported next to the ratio so
    that the recount's cheaper fetch is not mistaken for a cheaper aggregation."""
    from psycopg import Cursor, pq

    connection.ensure_connection()
    cursor = Cursor(connection.connection)
    cursor.format = pq.Format.BINARY
    started = time.perf_counter()
    cursor.execute(RAW_GROUP_BY, {"starts": election.starts_at, "ends": election.ends_at, "election": election.id})
    cursor.fetchall()
    seconds = time.perf_counter() - started
    cursor.close()
    return seconds


def raw_group_by_written(election) -> float:
    """The same GROUP BY stored by plain SQL into a table shaped, indexed, logged and keyed
    like metrics_hourlystats, its constituency key checked as a commit would check it: the
    floor of any recompute that must store what it counts (rolled back, nothing kept).

    Subtle: PostgreSQL runs the SELECT of an INSERT without parallel workers, so this floor
    reads serially where the recount's GROUP BY reads in parallel."""
    sql = (
        "INSERT INTO bench_hourly (election_id, constituency_id, hour, bulletins_issued, votes_cast, "
        "transaction_count, bulletin_velocity, vote_velocity, participation_rate, anomaly_count, timestamp) "
        "SELECT %(election)s, g.constituency_id, g.hour, g.b, g.v, g.t, g.b / 60.0, g.v / 60.0, 0, g.o, now() FROM ("
        + RAW_GROUP_BY
        + ") AS g(constituency_id, hour, b, v, t, o)"
    )
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("CREATE TABLE bench_hourly (LIKE metrics_hourlystats INCLUDING ALL)")
        cursor.execute(
            "ALTER TABLE bench_hourly ADD FOREIGN KEY (constituency_id) REFERENCES elections_constituency (id) "
            "DEFERRABLE INITIALLY DEFERRED"
        )
        started = time.perf_counter()
        cursor.execute(sql, {"starts": election.starts_at, "ends": election.ends_at, "election": election.id})
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # the checks a commit would run
        seconds = time.perf_counter() - started
        transaction.set_rollback(True)
    return seconds


def explain(sql: str, params: dict) -> str:
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
        return "\n".join(r[0] for r in cursor.fetchall())


def metrics_reset(election_id: int) -> None:
    """Back to 'never computed' (untimed): no hourly rows, anomalies, episodes, marks or totals."""
    # Episode events through the ORM: the alert records that reference them (alerts app) go
    # with them; they are few, one per episode change.
    from metrics.models import EpisodeEvent

    EpisodeEvent.objects.filter(election_id=election_id).delete()
    with connection.cursor() as cursor:
        for table in (
            "metrics_dirtybucket",
            "metrics_episode",
            "metrics_anomaly",
            "metrics_hourlystats",
        ):
            cursor.execute(f"DELETE FROM {table} WHERE election_id = %s", [election_id])
        cursor.execute(
            "UPDATE elections_constituency SET total_bulletins_issued = 0, total_votes_cast = 0, "
            "total_transactions = 0, total_anomalies = 0, participation_rate = 0, anomaly_score = 0, "
            "metrics_updated_at = NULL WHERE election_id = %s",
            [election_id],
        )
        cursor.execute("VACUUM ANALYZE metrics_hourlystats")
        cursor.execute("VACUUM ANALYZE metrics_anomaly")


def backfill(code: str) -> float:
    started = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):  # its progress bar
        call_command("backfill_metrics", "--election", code, stdout=io.StringIO(), stderr=io.StringIO())
    return time.perf_counter() - started


def hourly_rows(election_id: int) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM metrics_hourlystats WHERE election_id = %s", [election_id])
        return cursor.fetchone()[0]


def state_settle(election_id: int) -> None:
    """The dirty-free state: computed once, no marks left (untimed)."""
    from metrics.pipeline import dirty_buckets_flush_all, election_recompute

    if not hourly_rows(election_id):
        election_recompute(election_id=election_id)
    dirty_buckets_flush_all(election_id=election_id, time_budget=600)
    # What autovacuum does within a minute of a big write (done here because a machine may
    # run with it off): without it the planner still believes the metrics tables are as
    # small as before the backfill, and dead rows of the rewrite linger (see PERFORMANCE.md).
    with connection.cursor() as cursor:
        cursor.execute("VACUUM (ANALYZE) metrics_hourlystats")
        cursor.execute("VACUUM (ANALYZE) metrics_anomaly")
        cursor.execute("VACUUM (ANALYZE) elections_constituency")


def incremental(election, *, repeats: int, warmup: int = 3, seed: int = 7) -> dict:
    """Store one new transaction through the ingest service (its marks commit with it, the
    flush deferred as a worker would find it), then time the flush a worker runs for it."""
    from elections import services
    from elections.models import Constituency
    from metrics import tasks
    from metrics.pipeline import dirty_buckets_flush_all

    rng = random.Random(f"{seed}:{election.code}")
    constituency_ids = list(Constituency.objects.filter(election_id=election.id).values_list("id", flat=True))
    state_settle(election.id)
    flush, raw = [], []
    for i in range(warmup + repeats):
        c = rng.choice(constituency_ids)
        # The hour a live election is in: its last hour.
        ts = election.ends_at - timedelta(seconds=rng.randrange(60, 3600))
        row = services.TransactionRow(
            f"inc{time.time_ns():x}{i:06d}", election.id, c, rng.choice(["bulletin_issued", "vote_cast"]), ts, None
        )
        # The harness drives the flush itself, so the ingest's own flush request is withheld.
        with mock.patch.object(tasks, "flush_request", return_value=None):
            result = services.transactions_ingest(rows=[row])
        assert result.created == 1
        started = time.perf_counter()
        consumed = dirty_buckets_flush_all(election_id=election.id).consumed
        seconds = time.perf_counter() - started
        assert consumed >= 1, "the new transaction left no dirty mark"
        hour = next(iter(result.buckets))[1]
        started = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute(
                RAW_ONE_BUCKET,
                {"starts": election.starts_at, "ends": election.ends_at, "election": election.id, "c": c, "h": hour},
            )
            cursor.fetchall()
        raw_seconds = time.perf_counter() - started
        if i >= warmup:
            flush.append(seconds)
            raw.append(raw_seconds)
    return {"flush_seconds": flush, "raw_seconds": raw}


def parallel_recompute(election, *, workers: int, work, queue: str, runs: int = 1) -> dict:
    """``backfill_metrics --parallel`` (metrics/parallel.py) with ``workers`` worker
    processes on the bench queue, from empty; the result must have the single-process
    recompute's bucket count."""
    from bench.ingest import command_peak_rss
    from bench.servers import Worker

    pool = Worker(work, queue, concurrency=workers)
    seconds, raw = [], []
    try:
        for _ in range(runs):
            metrics_reset(election.id)
            raw_seconds, groups = raw_group_by(election)
            measured = command_peak_rss(
                ["backfill_metrics", "--election", election.code, "--parallel", "--verbosity", "0"], timeout=3600
            )
            if hourly_rows(election.id) != groups:
                raise RuntimeError(f"parallel backfill left {hourly_rows(election.id):,} rows, not {groups:,}")
            seconds.append(measured["seconds"])
            raw.append(raw_seconds)
    finally:
        pool.stop()
    return {
        "workers": workers,
        "backfill_seconds": sorted(seconds)[len(seconds) // 2],
        "raw_seconds": sorted(raw)[len(raw) // 2],
        "runs": seconds,
    }
