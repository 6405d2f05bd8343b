"""National replay: the 2021 State Duma election, every polling station a constituency.

Each station of the CEC protocols (kobak_2021.csv, described in the shared data README)
becomes a constituency with its registered voters, and gets a transaction stream whose totals
equal its protocol: the ballots issued (early, in the premises and outside them) as
``bulletin_issued`` and the ballots cast (valid plus invalid) as ``vote_cast``. Voting runs
three days, 17-19 September 2021, 08:00-20:00 Moscow time, with the daily curve of
bench/generate.py's day hours and the three days' shares of the CEC's daily turnout reports
(about 34/35/31 %). Every voter is a bulletin and, minutes later, a vote; a station whose
protocol has more bulletins than ballots cast (or fewer) gets the difference as lone rows.
``--fraction`` scales the stream: every station's issued, cast and registered figures are
multiplied by it (registered rounded up, so rounding never pushes a station past 100 %
turnout; the stream rounded to nearest, so fraction 1 is the protocol exactly).

The rows are drawn with numpy and written hour by hour, in time order within each hour and
kind, by binary COPY with the table's indexes rebuilt after (bench/generate.py's
IndexesSuspended): no Python loop per row.

Every size runs in its own database (``<BENCH_DATABASE_URL name>_f<fraction>``), dropped at
the end unless ``--keep``; results go to bench/results/national.json, keyed by fraction, and
``report`` renders them into docs/PERFORMANCE.md and docs/national.png.

    .venv/bin/python bench/national.py run --fraction 0.0887
    .venv/bin/python bench/national.py report
"""

import argparse
import datetime as dt
import json
import math
import os
import statistics
import sys
import time
import traceback
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import env
from bench.national_protocols import DATA, Station, election_code, scaled, stations_read

env.prepare()

RESULTS = env.ROOT / "bench" / "results" / "national.json"
TIMEZONE = "Europe/Moscow"
DAYS = (dt.date(2021, 9, 17), dt.date(2021, 9, 18), dt.date(2021, 9, 19))
OPENS, CLOSES = 8, 20  # local hours
DAY_SHARE = (0.34, 0.35, 0.31)
VOTE_DELAY = (20, 900)  # seconds from a bulletin to its vote
COPY_COLUMNS = ("tx_hash", "election_id", "constituency_id", "kind", "timestamp", "hour", "block_number", "received_at")
PG_EPOCH = 946_684_800  # 2000-01-01 UTC, the zero of PostgreSQL's binary timestamps
ITEMS = ("load", "recompute", "parallel", "incremental", "freshness", "api", "disk")


def open_hours() -> list[tuple[int, int, float]]:
    """(start, close of that day, weight) of every open hour, UTC epoch seconds."""
    from bench.generate import HOUR_CURVE

    tz = ZoneInfo(TIMEZONE)
    hours = []
    for day, share in zip(DAYS, DAY_SHARE, strict=True):
        close = int(dt.datetime(day.year, day.month, day.day, CLOSES, tzinfo=tz).timestamp())
        day_curve = HOUR_CURVE[OPENS:CLOSES]
        for local_hour, weight in zip(range(OPENS, CLOSES), day_curve, strict=True):
            start = int(dt.datetime(day.year, day.month, day.day, local_hour, tzinfo=tz).timestamp())
            hours.append((start, close, share * weight / sum(day_curve)))
    return hours


def window() -> tuple[dt.datetime, dt.datetime]:
    tz = ZoneInfo(TIMEZONE)
    first, last = DAYS[0], DAYS[-1]
    return (
        dt.datetime(first.year, first.month, first.day, OPENS, tzinfo=tz).astimezone(dt.UTC),
        dt.datetime(last.year, last.month, last.day, CLOSES, tzinfo=tz).astimezone(dt.UTC),
    )


def _record_dtype(kind: str):
    import numpy as np

    fields = [("n", ">i2"), ("lh", ">i4"), ("hash", "S64"), ("le", ">i4"), ("e", ">i8"), ("lc", ">i4"), ("c", ">i8")]
    fields += [("lk", ">i4"), ("kind", f"S{len(kind)}")]
    for name in ("ts", "hour", "block", "received"):
        fields += [(f"l{name}", ">i4"), (name, ">i8")]
    return np.dtype(fields)


def copy_records(*, kind: str, election_id: int, constituency_ids, ts, offsets, t0: int, received: int, rng) -> bytes:
    """Rows of one kind in PostgreSQL's binary COPY layout, built as one numpy record array."""
    import numpy as np

    order = np.argsort(ts, kind="stable")
    ts, constituency_ids, offsets = ts[order], constituency_ids[order], offsets[order]
    records = np.empty(len(ts), dtype=_record_dtype(kind))
    records["n"] = len(COPY_COLUMNS)
    records["lh"], records["le"], records["lc"], records["lk"] = 64, 8, 8, len(kind)
    for name in ("ts", "hour", "block", "received"):
        records[f"l{name}"] = 8
    hex_pairs = np.array([f"{i:02x}".encode() for i in range(256)], dtype="S2")
    raw = np.frombuffer(rng.bytes(32 * len(ts)), dtype=np.uint8).reshape(-1, 32)
    records["hash"] = np.ascontiguousarray(hex_pairs[raw]).view("S64").reshape(-1)
    records["e"] = election_id
    records["c"] = constituency_ids
    records["kind"] = kind.encode()
    records["ts"] = (ts - PG_EPOCH) * 1_000_000
    # elections.timebuckets.hour_bucket: the instant minus the local minutes and seconds.
    records["hour"] = (ts - (ts + offsets) % 3600 - PG_EPOCH) * 1_000_000
    records["block"] = (ts - t0) // 2
    records["received"] = (received - PG_EPOCH) * 1_000_000
    return records.tobytes()


def stream_write(copy, *, election_id: int, ids, bulletins, votes, seed: int, progress=None) -> dict:
    """Draw every station's rows hour by hour and write them to ``copy`` (binary COPY)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    hours = open_hours()
    weights = np.array([w for _, _, w in hours])
    weights /= weights.sum()
    pairs = np.minimum(bulletins, votes)
    # Per station, how many voters (and lone bulletins or votes) fall in each open hour.
    per_hour = {
        "pairs": rng.multinomial(pairs, weights),
        "bulletins": rng.multinomial(bulletins - pairs, weights),
        "votes": rng.multinomial(votes - pairs, weights),
    }
    tz = ZoneInfo(TIMEZONE)

    def offset_at(instant: int) -> int:
        return int(dt.datetime.fromtimestamp(instant, tz).utcoffset().total_seconds())

    t0, received = hours[0][0], int(time.time())
    written = {"bulletin_issued": 0, "vote_cast": 0}
    copy.write(b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big"))
    for k, (start, close, _) in enumerate(hours):
        voter_ids = np.repeat(ids, per_hour["pairs"][:, k])
        issued_at = start + rng.integers(0, 3600, len(voter_ids))
        voted_at = np.minimum(issued_at + rng.integers(*VOTE_DELAY, len(voter_ids)), close - 1)
        lone_b = np.repeat(ids, per_hour["bulletins"][:, k])
        lone_v = np.repeat(ids, per_hour["votes"][:, k])
        rows = {
            "bulletin_issued": (
                np.concatenate([voter_ids, lone_b]),
                np.concatenate([issued_at, start + rng.integers(0, 3600, len(lone_b))]),
            ),
            "vote_cast": (
                np.concatenate([voter_ids, lone_v]),
                np.concatenate([voted_at, start + rng.integers(0, 3600, len(lone_v))]),
            ),
        }
        # Votes a few minutes after a bulletin can fall into the next hour (the zone's offset
        # is taken at each row's own hour, so a DST change would come out right too).
        here, after = offset_at(start), offset_at(start + 3600)
        for kind, (constituency_ids, ts) in rows.items():
            if not len(ts):
                continue
            offsets = np.where(ts >= start + 3600, after, here)
            copy.write(
                copy_records(
                    kind=kind,
                    election_id=election_id,
                    constituency_ids=constituency_ids,
                    ts=ts,
                    offsets=offsets,
                    t0=t0,
                    received=received,
                    rng=rng,
                )
            )
            written[kind] += len(ts)
        if progress:
            progress(sum(written.values()))
    copy.write((-1).to_bytes(2, "big", signed=True))
    return written


def election_load(*, fraction: float, stations: list[Station], seed: int = 2021, progress=None) -> dict:
    """Create the national election at ``fraction`` and load its stream; returns timings."""
    from django.db import connection, transaction

    from bench.generate import IndexesSuspended, election_purge
    from elections.models import Constituency, Election

    voters, bulletins, votes = scaled(stations, fraction)
    code = election_code(fraction)
    election_purge(codes=[code])
    starts, ends = window()
    election = Election.objects.create(
        code=code, name=f"State Duma 2021 (replay at {fraction:g})", timezone=TIMEZONE, starts_at=starts, ends_at=ends
    )
    Constituency.objects.bulk_create(
        [
            Constituency(election=election, code=s.code, name=s.name, registered_voters=int(v))
            for s, v in zip(stations, voters, strict=True)
        ],
        batch_size=5000,
    )
    by_code = dict(Constituency.objects.filter(election=election).values_list("code", "id"))
    import numpy as np

    ids = np.array([by_code[s.code] for s in stations], dtype=np.int64)
    expected = int(bulletins.sum() + votes.sum())
    suspend = IndexesSuspended() if expected >= 500_000 else None
    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        if suspend:
            suspend.__enter__()
        # The rows reference the ids created just above: the foreign-key triggers can only cost.
        cursor.execute("SET LOCAL session_replication_role = replica")
        with cursor.copy(f"COPY elections_transaction ({', '.join(COPY_COLUMNS)}) FROM STDIN (FORMAT BINARY)") as copy:
            written = stream_write(
                copy, election_id=election.id, ids=ids, bulletins=bulletins, votes=votes, seed=seed, progress=progress
            )
        if suspend:
            suspend.__exit__(None, None, None)
    load_seconds = time.perf_counter() - started
    started = time.perf_counter()
    with connection.cursor() as cursor:
        # What autovacuum does after a bulk load (bench/generate.py says why it is done here).
        cursor.execute("VACUUM (ANALYZE) elections_transaction")
        cursor.execute("VACUUM (ANALYZE) elections_constituency")
    total = sum(written.values())
    if total != expected:
        raise RuntimeError(f"wrote {total:,} rows, the scaled protocols add up to {expected:,}")
    return {
        "election_id": election.id,
        "code": code,
        "constituencies": len(stations),
        "transactions": total,
        "bulletins": written["bulletin_issued"],
        "votes": written["vote_cast"],
        "registered": int(voters.sum()),
        "load_seconds": load_seconds,
        "rows_per_second": total / load_seconds,
        "index_rebuild_seconds": suspend.rebuild_seconds if suspend else 0.0,
        "vacuum_seconds": time.perf_counter() - started,
    }


# --- measurements ---------------------------------------------------------------------------------


def disk_usage() -> dict:
    """Bytes per table: heap (with TOAST) and indexes, from pg_total_relation_size."""
    from django.db import connection

    tables = ("elections_transaction", "metrics_hourlystats", "metrics_anomaly", "elections_constituency")
    usage = {}
    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(
                "SELECT pg_total_relation_size(%s::regclass), pg_indexes_size(%s::regclass), "
                "(SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass)",
                [table, table, table],
            )
            total, indexes, rows = cursor.fetchone()
            usage[table] = {"total": total, "indexes": indexes, "heap": total - indexes, "rows": rows}
        cursor.execute("SELECT pg_database_size(current_database())")
        usage["database"] = cursor.fetchone()[0]
    return usage


def constituency_page_latencies(port: int, election_id: int, *, repeats: int) -> dict:
    """GET /api/constituencies/?election= first and last page (100 per page), each median of
    ``repeats``; the last page is where offset pagination costs most."""
    from bench.servers import http_get_json

    path = f"/api/constituencies/?election={election_id}"
    count = http_get_json(port, path)["count"]
    pages = {"first": path, "last": f"{path}&page={max(1, math.ceil(count / 100))}"}
    out = {}
    for name, url in pages.items():
        latencies = []
        for _ in range(repeats):
            started = time.perf_counter()
            http_get_json(port, url)
            latencies.append(time.perf_counter() - started)
        out[name] = statistics.median(latencies)
    return out


def queue_purge() -> None:
    """Drop flush tasks queued while no worker ran (their marks are flushed by state_settle)."""
    import redis

    redis.Redis.from_url(os.environ["BENCH_BROKER_URL"]).delete(os.environ["BENCH_QUEUE"])


def ingest_token() -> str:
    from django.contrib.auth.models import Permission, User
    from rest_framework.authtoken.models import Token

    user, _ = User.objects.get_or_create(username="bench-ingest")
    user.user_permissions.add(Permission.objects.get(codename="ingest_data"))
    return Token.objects.get_or_create(user=user)[0].key


class Run:
    def __init__(self, args):
        self.args = args
        self.work = Path(args.work_dir or f"/tmp/em-national-{os.getpid()}")
        self.work.mkdir(parents=True, exist_ok=True)
        self.key = f"{args.fraction:g}"
        self.json = Path(args.json)
        self.results = json.loads(self.json.read_text()) if self.json.exists() else {}
        self.entry = self.results.setdefault(self.key, {}) if args.reuse_data else {}
        self.results[self.key] = self.entry
        self.gunicorn = None

    def save(self):
        self.json.parent.mkdir(parents=True, exist_ok=True)
        self.json.write_text(json.dumps(self.results, indent=1, sort_keys=True, default=str) + "\n")

    def server(self):
        from bench.servers import Gunicorn

        if self.gunicorn is None or not self.gunicorn.alive():
            self.gunicorn = Gunicorn(self.work, self.args.gunicorn_workers)
        return self.gunicorn

    def election(self):
        from elections.models import Election

        return Election.objects.get(code=election_code(self.args.fraction))

    def item(self, name, function):
        if name not in self.args.only:
            return
        print(f"[{dt.datetime.now(dt.UTC):%H:%M:%S}] {self.key}: {name}", flush=True)
        started = time.perf_counter()
        try:
            self.entry[name] = function()
        except Exception as error:
            print(traceback.format_exc(), file=sys.stderr, flush=True)
            self.entry[name] = {"error": f"{type(error).__name__}: {error}"}
        self.entry.setdefault("item_seconds", {})[name] = round(time.perf_counter() - started, 1)
        self.save()
        print(f"  {json.dumps(self.entry[name], default=str)[:600]}", flush=True)

    def load(self):
        def progress(n):
            print(f"\r  {n:,} rows", end="", file=sys.stderr, flush=True)

        stations = stations_read(Path(self.args.data))
        if self.args.stations:
            stations = stations[: self.args.stations]
        result = election_load(fraction=self.args.fraction, stations=stations, progress=progress)
        print(file=sys.stderr)
        return result

    def recompute(self):
        from bench import ingest as ing
        from bench import recompute as rc

        election = self.election()
        runs = []
        for _ in range(self.args.runs):
            rc.metrics_reset(election.id)
            raw_seconds, groups = rc.raw_group_by(election)
            measured = ing.command_peak_rss(
                ["backfill_metrics", "--election", election.code, "--verbosity", "0"], timeout=self.args.step_timeout
            )
            rows = rc.hourly_rows(election.id)
            if rows != groups:
                raise RuntimeError(f"backfill left {rows:,} hourly rows; the raw GROUP BY has {groups:,} buckets")
            runs.append(
                {
                    "backfill_seconds": measured["seconds"],
                    "peak_rss_mb": measured["peak_rss_mb"],
                    "raw_seconds": raw_seconds,
                    "buckets": groups,
                }
            )
        rc.state_settle(election.id)
        return {
            "backfill_seconds": statistics.median(r["backfill_seconds"] for r in runs),
            "raw_seconds": statistics.median(r["raw_seconds"] for r in runs),
            "ratio": statistics.median(r["backfill_seconds"] / r["raw_seconds"] for r in runs),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
            "buckets": runs[0]["buckets"],
            "runs": runs,
        }

    def parallel(self):
        from bench import recompute as rc

        election = self.election()
        out = {}
        for workers in (1, 2):
            out[str(workers)] = rc.parallel_recompute(
                election, workers=workers, work=self.work, queue=os.environ["BENCH_QUEUE"], runs=self.args.runs
            )
        rc.state_settle(election.id)
        return out

    def incremental(self):
        from bench import recompute as rc

        measured = rc.incremental(self.election(), repeats=self.args.incremental_repeats)
        return {
            "flush_seconds": statistics.median(measured["flush_seconds"]),
            "raw_seconds": statistics.median(measured["raw_seconds"]),
            "runs": measured,
        }

    def freshness(self):
        from bench import recompute as rc
        from bench.freshness import freshness_measure
        from bench.servers import Worker
        from elections.models import Constituency
        from metrics.cache import metrics_cache

        election = self.election()
        rc.state_settle(election.id)
        queue_purge()
        metrics_cache.flush_pending_clear(election.id)
        port = self.server().port
        token = ingest_token()
        ids = list(Constituency.objects.filter(election_id=election.id).values_list("id", flat=True))
        worker = Worker(self.work, os.environ["BENCH_QUEUE"])
        try:
            measured = freshness_measure(
                port=port,
                token=token,
                election=election,
                constituency_ids=ids,
                rate=1000.0,
                seconds=self.args.freshness_seconds,
                batch=200,
            )
        finally:
            worker.stop()
        rc.state_settle(election.id)
        return {k: v for k, v in measured.items() if k != "lags"}

    def api(self):
        from bench import api as bapi

        election = self.election()
        port = self.server().port
        out = {
            "uncached_seconds": statistics.median(
                bapi.uncached_latencies(
                    port, f"/api/metrics/election/{election.id}/", election_id=election.id, repeats=5
                )
            ),
            "pages": constituency_page_latencies(port, election.id, repeats=5),
        }
        if bapi.wrk_available():
            for name, path in (("static", "/bench/static/"), ("cached", f"/api/metrics/election/{election.id}/")):
                out[name] = bapi.wrk(port, path, connections=32, seconds=self.args.wrk_seconds)
        return out

    def disk(self):
        return disk_usage()


def code_version() -> str:
    """The commit measured, marked when the code differs from it (results and docs aside,
    which the runs themselves write)."""
    commit = os.popen(f"git -C {env.ROOT} rev-parse --short HEAD").read().strip()
    changed = os.popen(
        f"git -C {env.ROOT} status --porcelain --untracked-files=no -- . ':(exclude)bench/results' ':(exclude)docs'"
    ).read()
    return f"{commit}+uncommitted" if changed.strip() else commit


def size_database(fraction: float) -> str:
    parts = urlsplit(os.environ["BENCH_DATABASE_URL"])
    name = f"{parts.path.lstrip('/')}_f{fraction:g}".replace(".", "_")[:63]
    return urlunsplit(parts._replace(path=f"/{name}"))


def run(args) -> int:
    url = size_database(args.fraction)
    os.environ["BENCH_DATABASE_URL"] = url
    env.prepare()
    if not args.reuse_data:
        env.database_ensure(url, drop=True)
    env.django_start()
    measure = Run(args)
    earlier = measure.entry.get("meta")
    measure.entry["meta"] = {
        "command": "bench/national.py " + " ".join(sys.argv[1:]),
        "started_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "git": code_version(),
        "database": urlsplit(url).path.lstrip("/"),
    }
    if earlier:  # --reuse-data: the size's other items are from these runs (a load item reloads)
        measure.entry["meta"]["earlier"] = [*earlier.pop("earlier", []), earlier]
    try:
        for name in ITEMS:
            measure.item(name, getattr(measure, name))
    finally:
        if measure.gunicorn:
            measure.gunicorn.stop()
        measure.entry["meta"]["finished_at"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        measure.save()
        if not args.keep:
            from django.db import connections

            connections.close_all()
            env.database_drop(url)
    errors = {k: v["error"] for k, v in measure.entry.items() if isinstance(v, dict) and "error" in v}
    if errors:
        print(json.dumps(errors, indent=1), file=sys.stderr)
    return 1 if errors else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="load one size and measure it")
    p.add_argument("--fraction", type=float, required=True, help="of the 112.8 million protocol transactions")
    p.add_argument("--only", default=",".join(ITEMS), help=f"comma-separated items of {','.join(ITEMS)}")
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--incremental-repeats", type=int, default=10)
    p.add_argument("--freshness-seconds", type=float, default=20.0)
    p.add_argument("--wrk-seconds", type=float, default=10.0)
    p.add_argument("--gunicorn-workers", type=int, default=3)
    p.add_argument("--step-timeout", type=float, default=3600.0)
    p.add_argument("--reuse-data", action="store_true", help="the size's database is kept from an earlier --keep")
    p.add_argument("--keep", action="store_true", help="keep the size's database (default: dropped at the end)")
    p.add_argument("--work-dir", default=None)
    p.add_argument("--stations", type=int, default=None, help="only the first N stations (smoke runs)")
    p.add_argument("--data", default=str(DATA), help="the protocols CSV (default: NATIONAL_DATA or %(default)s)")
    p.add_argument("--json", default=str(RESULTS), help="results file, one entry per fraction")
    r = sub.add_parser("report", help="render bench/results/national.json into docs/PERFORMANCE.md")
    r.add_argument("--output", default=str(env.ROOT / "docs" / "PERFORMANCE.md"))
    r.add_argument("--plot", default=str(env.ROOT / "docs" / "national.png"))
    r.add_argument("--json", default=str(RESULTS))
    args = parser.parse_args(argv)
    if args.command == "report":
        from bench.national_report import report_write

        report_write(json.loads(Path(args.json).read_text()), md_path=Path(args.output), png_path=Path(args.plot))
        return 0
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(args.only) - set(ITEMS)
    if unknown:
        parser.error(f"unknown items {sorted(unknown)}; choose from {','.join(ITEMS)}")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
