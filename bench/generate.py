"""Load a realistic election straight into PostgreSQL with COPY (docs/PERFORMANCE.md, item 1).

The election runs 3 days (Moscow's remote-voting shape: a continuous window from 08:00 on
day 1 to 20:00 on day 3, local time) with a daily curve: quiet nights, a late-morning peak and
an evening peak, day 1 busier than day 2. Each voter is a ``bulletin_issued`` followed minutes
later by a ``vote_cast``; a few bulletins are never used, a few transactions are ``other``.
Constituency sizes are skewed (log-normal); turnout is 35-75 %. A few constituencies carry
the anomalies the product must flag: a vote burst in one hour, votes without bulletins,
turnout over 100 % and late transactions after the window.

``Transaction.hour`` is computed here exactly as elections.timebuckets.hour_bucket does: the
instant minus the local minutes and seconds (``ts - (ts + utc_offset) mod 3600``), with the
offset taken from the election's zone at each minute, so DST and half-hour zones come out
right. The smoke test checks that equality on the loaded rows.

The load bypasses the ingest path on purpose (it is the fixture, not the measurement) and so
leaves no dirty marks; ``compute_metrics`` then recounts the election with the product's own
recompute, which leaves the dirty-free state a live election settles into.

Usage: .venv/bin/python bench/generate.py --constituencies 2000 --transactions 10000000
"""

import argparse
import io
import math
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import env

env.prepare()

env.django_start()

from django.db import connection, transaction  # noqa: E402

from elections.models import Constituency, Election  # noqa: E402
from elections.timebuckets import zone  # noqa: E402
from metrics.models import EpisodeEvent  # noqa: E402

# Relative activity by local hour of day (0-23) in a 24-hour remote-voting window.
HOUR_CURVE = [0.3, 0.15, 0.1, 0.1, 0.1, 0.2, 0.6, 1.5, 4, 7, 9, 9.5, 9, 8, 7, 6.5, 6.5, 7.5, 8.5, 8, 5, 2.5, 1.2, 0.6]
DAY_WEIGHT = [1.25, 0.85, 1.0, 1.0, 1.0]
COPY_COLUMNS = ("tx_hash", "election_id", "constituency_id", "kind", "timestamp", "hour", "block_number", "received_at")
CSV_HEADER = "tx_hash,constituency,kind,timestamp,block_number\n"
CHUNK = 1 << 20  # bytes per COPY write


@dataclass(frozen=True)
class ElectionShape:
    code: str
    constituencies: int
    transactions: int
    seed: int = 1
    timezone: str = "Europe/Moscow"
    first_day: date = date(2026, 9, 18)
    days: int = 3

    @property
    def window(self) -> tuple[datetime, datetime]:
        tz = zone(self.timezone)
        starts = datetime(self.first_day.year, self.first_day.month, self.first_day.day, 8, tzinfo=tz)
        ends = datetime.combine(self.first_day + timedelta(days=self.days - 1), datetime.min.time(), tz).replace(
            hour=20
        )
        return starts.astimezone(UTC), ends.astimezone(UTC)


@dataclass
class Plan:
    """What the synthesizer decided before drawing transactions: sizes, anomalies."""

    sizes: list[int]
    registered: list[int]
    burst: set[int] = field(default_factory=set)
    unpaired_votes: set[int] = field(default_factory=set)
    late: set[int] = field(default_factory=set)


class Clock:
    """Per-minute cache of text renderings and the zone's UTC offset: 10M rows, a few
    thousand distinct minutes."""

    def __init__(self, tz_name: str):
        self.tz = zone(tz_name)
        self._minutes: dict[int, tuple[str, str, int]] = {}
        self._hours: dict[int, str] = {}

    def minute(self, minute: int) -> tuple[str, str, int]:
        cached = self._minutes.get(minute)
        if cached is None:
            instant = datetime.fromtimestamp(minute * 60, UTC)
            offset = int(instant.astimezone(self.tz).utcoffset().total_seconds())
            cached = (instant.strftime("%Y-%m-%d %H:%M:"), instant.strftime("%Y-%m-%dT%H:%M:"), offset)
            self._minutes[minute] = cached
        return cached

    def hour_text(self, bucket: int) -> str:
        text = self._hours.get(bucket)
        if text is None:
            text = datetime.fromtimestamp(bucket, UTC).strftime("%Y-%m-%d %H:%M:%S+00")
            self._hours[bucket] = text
        return text

    def bucket(self, ts: int) -> int:
        """hour_bucket(ts, tz) as epoch seconds: the instant minus the local minutes/seconds."""
        return ts - (ts + self.minute(ts // 60)[2]) % 3600


def plan_make(shape: ElectionShape, rng: random.Random) -> Plan:
    weights = [rng.lognormvariate(0, 0.6) for _ in range(shape.constituencies)]
    scale = shape.transactions / sum(weights)
    sizes = [int(w * scale) for w in weights]
    for i in range(shape.transactions - sum(sizes)):
        sizes[i % shape.constituencies] += 1
    registered = []
    for n in sizes:
        turnout = rng.uniform(0.35, 0.75) if rng.random() > 0.003 else rng.uniform(1.02, 1.1)
        registered.append(max(1, math.ceil(n / 2 / turnout)))
    picks = list(range(shape.constituencies))
    rng.shuffle(picks)
    few = max(1, shape.constituencies // 100)
    return Plan(sizes, registered, set(picks[:few]), set(picks[few : few + few // 3 + 1]), set(picks[-few:]))


def _minute_weights(shape: ElectionShape, clock: Clock) -> tuple[int, list[int], list[float]]:
    starts, ends = shape.window
    first = int(starts.timestamp()) // 60
    minutes = list(range(first, int(ends.timestamp()) // 60))
    cum, total = [], 0.0
    day0 = starts.astimezone(clock.tz).date()
    for m in minutes:
        local = datetime.fromtimestamp(m * 60, UTC).astimezone(clock.tz)
        total += HOUR_CURVE[local.hour] * DAY_WEIGHT[min((local.date() - day0).days, len(DAY_WEIGHT) - 1)]
        cum.append(total)
    return first, minutes, cum


def transactions_synthesize(shape: ElectionShape, plan: Plan, clock: Clock, rng: random.Random) -> Iterator[tuple]:
    """Yield (constituency_index, [(hash, kind, ts, block)]) per constituency, in a stable order."""
    first, minutes, cum = _minute_weights(shape, clock)
    starts, ends = shape.window
    t0, end_ts = first * 60, int(ends.timestamp())
    getrandbits, randrange, choices = rng.getrandbits, rng.randrange, rng.choices
    for ci, n in enumerate(plan.sizes):
        rows = []
        voters = n // 2
        picked = choices(minutes, cum_weights=cum, k=voters)
        if ci in plan.burst and voters >= 100:
            # A fifth of the voters inside one hour: the velocity spike the peers must flag.
            burst_start = rng.choice(picked) * 60
            for k in range(voters // 5):
                picked[k] = burst_start // 60 + randrange(60)
        unpaired = ci in plan.unpaired_votes
        for minute in picked:
            ts = minute * 60 + randrange(60)
            vote_ts = min(ts + randrange(20, 900), end_ts - 1)
            if not unpaired:
                rows.append((f"{getrandbits(256):064x}", "bulletin_issued", ts, (ts - t0) // 2))
            rows.append((f"{getrandbits(256):064x}", "vote_cast", vote_ts, (vote_ts - t0) // 2))
        while len(rows) < n:
            late = ci in plan.late and len(rows) >= n - 3
            ts = end_ts + randrange(60, 1800) if late else rng.choice(minutes) * 60 + randrange(60)
            rows.append((f"{getrandbits(256):064x}", "other", ts, (ts - t0) // 2))
        yield ci, rows


def copy_lines(rows, *, election_id: int, constituency_id: int, clock: Clock, received: str) -> str:
    out = []
    prefix = f"\t{election_id}\t{constituency_id}\t"
    for tx_hash, kind, ts, block in rows:
        copy_minute = clock.minute(ts // 60)[0]
        out.append(
            f"{tx_hash}{prefix}{kind}\t{copy_minute}{ts % 60:02d}+00\t{clock.hour_text(clock.bucket(ts))}\t{block}\t{received}\n"
        )
    return "".join(out)


def csv_lines(rows, *, constituency_code: str, clock: Clock) -> str:
    return "".join(
        f"{tx_hash},{constituency_code},{kind},{clock.minute(ts // 60)[1]}{ts % 60:02d}Z,{block}\n"
        for tx_hash, kind, ts, block in rows
    )


def election_purge(*, codes=None, ids=None) -> None:
    """Delete elections and everything under them: the big tables with set-based SQL (the ORM
    cascade would load every transaction into memory), then the rest through the ORM cascade,
    so tables that other apps add (ingest batches, certifications, ...) go too."""
    with connection.cursor() as cursor:
        if codes is not None:
            cursor.execute("SELECT id FROM elections_election WHERE code = ANY(%s)", [list(codes)])
            ids = [r[0] for r in cursor.fetchall()]
        ids = list(ids or [])
        if not ids:
            return
        with transaction.atomic():
            # Episode events through the ORM: the alert records that reference them (alerts
            # app) go with them; they are few, one per episode change.
            EpisodeEvent.objects.filter(election_id__in=ids).delete()
            for table in (
                "metrics_dirtybucket",
                "metrics_episode",
                "metrics_anomaly",
                "metrics_hourlystats",
                "elections_transaction",
            ):
                cursor.execute(f"DELETE FROM {table} WHERE election_id = ANY(%s)", [ids])
            Election.objects.filter(id__in=ids).delete()


class IndexesSuspended:
    """Drop the transaction table's secondary indexes and unique constraints for a big load and
    rebuild them after it, each in one sorted pass: PostgreSQL's advice for populating a
    table ("Populating a Database"), and far faster than 10M random inserts into the tx_hash
    B-trees. The definitions are read from the catalog, so the rebuilt table is the
    product's table exactly."""

    def __init__(self, table: str = "elections_transaction"):
        self.table = table
        self.constraints: list[tuple[str, str]] = []
        self.indexes: list[str] = []
        self.rebuild_seconds = 0.0

    def __enter__(self):
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = %s::regclass AND contype = 'u'",
                [self.table],
            )
            self.constraints = cursor.fetchall()
            cursor.execute(
                "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.tablename = %s AND NOT EXISTS "
                "(SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)",
                [self.table],
            )
            rows = cursor.fetchall()
            self.indexes = [definition for _, definition in rows]
            for name, _ in self.constraints:
                cursor.execute(f'ALTER TABLE {self.table} DROP CONSTRAINT "{name}"')
            for name, _ in rows:
                cursor.execute(f'DROP INDEX "{name}"')
        return self

    def __exit__(self, *exc):
        started = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute("SET maintenance_work_mem = '1GB'")
            for name, definition in self.constraints:
                cursor.execute(f'ALTER TABLE {self.table} ADD CONSTRAINT "{name}" {definition}')
            for definition in self.indexes:
                cursor.execute(definition)
            cursor.execute("RESET maintenance_work_mem")
        self.rebuild_seconds = time.perf_counter() - started
        return False


def election_create(shape: ElectionShape, plan: Plan) -> tuple[Election, list[int], list[str]]:
    starts, ends = shape.window
    election = Election.objects.create(
        code=shape.code,
        name=f"Benchmark election {shape.code}",
        timezone=shape.timezone,
        starts_at=starts,
        ends_at=ends,
    )
    codes = [f"{i + 1:05d}" for i in range(shape.constituencies)]
    Constituency.objects.bulk_create(
        [
            Constituency(election=election, code=code, name=f"Constituency {code}", registered_voters=voters)
            for code, voters in zip(codes, plan.registered, strict=False)
        ],
        batch_size=2000,
    )
    ids = dict(Constituency.objects.filter(election=election).values_list("code", "id"))
    return election, [ids[c] for c in codes], codes


SUSPEND_INDEXES_FROM = 500_000  # rows; below this, inserting into the indexes is cheaper


def election_generate(shape: ElectionShape, *, compute_metrics: bool = True, progress=None) -> dict:
    """Replace the election ``shape.code`` with a freshly generated one; returns timings."""
    suspend = IndexesSuspended() if shape.transactions >= SUSPEND_INDEXES_FROM else None
    rng = random.Random(f"{shape.seed}:{shape.code}")
    clock = Clock(shape.timezone)
    plan = plan_make(shape, rng)
    election_purge(codes=[shape.code])
    election, ids, _ = election_create(shape, plan)
    received = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S+00")
    started = time.perf_counter()
    written = 0
    with transaction.atomic(), connection.cursor() as cursor:
        if suspend:
            suspend.__enter__()
        # Subtle: the rows reference ids created just above, so the per-row foreign-key
        # triggers (deferred to commit by Django, queued in memory) can only cost time here.
        cursor.execute("SET LOCAL session_replication_role = replica")
        with cursor.copy(f"COPY elections_transaction ({', '.join(COPY_COLUMNS)}) FROM STDIN") as copy:
            buffer = io.StringIO()
            for ci, rows in transactions_synthesize(shape, plan, clock, rng):
                buffer.write(
                    copy_lines(rows, election_id=election.id, constituency_id=ids[ci], clock=clock, received=received)
                )
                written += len(rows)
                if buffer.tell() >= CHUNK:
                    copy.write(buffer.getvalue())
                    buffer = io.StringIO()
                    if progress:
                        progress(written)
            copy.write(buffer.getvalue())
        if suspend:
            suspend.__exit__(None, None, None)
    load_seconds = time.perf_counter() - started
    started = time.perf_counter()
    with connection.cursor() as cursor:
        # What autovacuum does after a bulk load (PostgreSQL 13+ vacuums on inserts too): the
        # statistics, and the visibility map that lets a recount read only the covering index.
        # Done here because a machine may run with autovacuum off (this one does).
        cursor.execute("VACUUM (ANALYZE) elections_transaction")
    analyze_seconds = time.perf_counter() - started
    result = {
        "election_id": election.id,
        "code": shape.code,
        "constituencies": shape.constituencies,
        "transactions": written,
        "load_seconds": load_seconds,
        "rows_per_second": written / load_seconds if load_seconds else 0.0,
        "analyze_seconds": analyze_seconds,
        "index_rebuild_seconds": suspend.rebuild_seconds if suspend else 0.0,
    }
    if compute_metrics:
        from metrics.pipeline import election_recompute

        started = time.perf_counter()
        election_recompute(election_id=election.id)
        result["metrics_seconds"] = time.perf_counter() - started
        with connection.cursor() as cursor:  # as autovacuum would, soon after
            cursor.execute("VACUUM (ANALYZE) metrics_hourlystats")
            cursor.execute("VACUUM (ANALYZE) metrics_anomaly")
    return result


def ingest_files_write(shape: ElectionShape, *, csv_path: str, copy_path: str, election_id: int, ids: list[int]) -> int:
    """Write the same synthesized rows twice: as the import CSV (constituency codes, ISO
    timestamps) and as COPY text for the transaction table (ids, derived hour). Hashes start
    with a 4-character tag (``0000``) that ingest.variant_path replaces per measurement."""
    rng = random.Random(f"{shape.seed}:{shape.code}")
    clock = Clock(shape.timezone)
    plan = plan_make(shape, rng)
    received = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S+00")
    codes = [f"{i + 1:05d}" for i in range(shape.constituencies)]
    written = 0
    with open(csv_path, "w") as csv_file, open(copy_path, "w") as copy_file:
        csv_file.write(CSV_HEADER)
        for ci, rows in transactions_synthesize(shape, plan, clock, rng):
            rows = [("0000" + h[4:], kind, ts, block) for h, kind, ts, block in rows]
            csv_file.write(csv_lines(rows, constituency_code=codes[ci], clock=clock))
            copy_file.write(
                copy_lines(rows, election_id=election_id, constituency_id=ids[ci], clock=clock, received=received)
            )
            written += len(rows)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--code", default=None, help="election code (default bench-<C>c-<T>tx)")
    parser.add_argument("--constituencies", type=int, default=2000)
    parser.add_argument("--transactions", type=int, default=10_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timezone", default="Europe/Moscow")
    parser.add_argument(
        "--first-day", type=date.fromisoformat, default=date(2026, 9, 18), help="local date voting opens"
    )
    parser.add_argument("--no-metrics", action="store_true", help="load only; leave metrics uncomputed")
    args = parser.parse_args(argv)
    code = args.code or f"bench-{args.constituencies}c-{args.transactions}tx"
    shape = ElectionShape(code, args.constituencies, args.transactions, args.seed, args.timezone, args.first_day)

    def progress(n):
        print(f"\r{n:,} / {args.transactions:,} rows", end="", file=sys.stderr, flush=True)

    result = election_generate(shape, compute_metrics=not args.no_metrics, progress=progress)
    print(file=sys.stderr)
    for key, value in result.items():
        print(f"{key}: {value:.2f}" if isinstance(value, float) else f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
