"""CI smoke run of the benchmark harness: tiny scale, so the harness keeps working.

It asserts that every figure of the table was produced and that the generator derives
``Transaction.hour`` exactly as elections.timebuckets.hour_bucket does, including across a
DST change and in a half-hour zone. It asserts no timing: CI machines are noisy and the
figures at this scale mean nothing.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from bench.report import ROWS

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.worker, pytest.mark.slow]


def smoke_environment() -> dict:
    database = os.environ.get("DATABASE_URL", "")
    if not database.startswith(("postgres://", "postgresql://")):
        pytest.skip("the benchmark harness loads with COPY: it needs DATABASE_URL=postgres://...")
    if not os.environ.get("REDIS_URL") or not os.environ.get("CELERY_BROKER_URL"):
        pytest.skip("the benchmark harness needs REDIS_URL and CELERY_BROKER_URL (its worker and cache)")
    parts = urlsplit(database)
    name = f"{parts.path.lstrip('/')}_bench_smoke"[:63]
    # Its own database, queue and cache prefix: the smoke never meets the suite's data or worker.
    return {
        **os.environ,
        "BENCH_DATABASE_URL": urlunsplit(parts._replace(path=f"/{name}")),
        "BENCH_REDIS_URL": os.environ["REDIS_URL"],
        "BENCH_BROKER_URL": os.environ["CELERY_BROKER_URL"],
        "BENCH_QUEUE": f"bench-smoke-{os.getpid()}",
        "BENCH_CACHE_PREFIX": f"bench-smoke-{os.getpid()}",
    }


def run(argv: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (
        f"{' '.join(argv)} exited {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    )
    return result


def stored_hours_match_hour_bucket(env: dict, code: str) -> int:
    """Compare every stored hour with hour_bucket(timestamp, election tz); returns rows checked."""
    import psycopg

    from elections.timebuckets import hour_bucket, zone

    with psycopg.connect(env["BENCH_DATABASE_URL"]) as conn:
        tz_name, election_id = conn.execute(
            "SELECT timezone, id FROM elections_election WHERE code = %s", [code]
        ).fetchone()
        rows = conn.execute(
            'SELECT "timestamp", hour FROM elections_transaction WHERE election_id = %s', [election_id]
        ).fetchall()
    tz = zone(tz_name)
    wrong = [(ts, hour) for ts, hour in rows if hour_bucket(ts, tz) != hour]
    assert not wrong, f"{len(wrong)} rows of {code} have an hour other than hour_bucket: {wrong[:3]}"
    return len(rows)


def test_smoke_run_produces_every_figure_and_hours_match_hour_bucket(tmp_path):
    env = smoke_environment()
    from bench.env import database_drop

    try:
        output, results = tmp_path / "PERFORMANCE.md", tmp_path / "results.json"
        run(
            [
                "bench/run.py",
                "--constituencies",
                "20",
                "--transactions",
                "3000",
                "--small-transactions",
                "1000",
                "--ingest-rows",
                "3000",
                "--api-rows",
                "2000",
                "--runs",
                "1",
                "--incremental-repeats",
                "3",
                "--freshness-seconds",
                "3",
                "--freshness-rate",
                "200",
                "--freshness-batch",
                "50",
                "--wrk-seconds",
                "1",
                "--uncached-repeats",
                "2",
                "--allow-missing-wrk",
                "--output",
                str(output),
                "--json",
                str(results),
                "--work-dir",
                str(tmp_path / "work"),
            ],
            env,
            timeout=600,
        )
        produced = {row["key"]: row for row in json.loads(results.read_text())["rows"]}
        assert list(produced) == [key for key, _ in ROWS]
        for key, row in produced.items():
            assert row["measured"] not in ("", "not run"), (key, row)
            assert not row["measured"].startswith("ERROR"), (key, row)
        table = output.read_text()
        for key, figure in ROWS:
            assert f"| {key} | {figure} |" in table

        # The generated 3,000 plus what items 4 and 5 ingested through the product.
        assert stored_hours_match_hour_bucket(env, "bench-20c-3000tx") > 3000
        # A half-hour zone, and a window across Europe's fall-back night (two local 02:00 hours).
        for code, tz, first_day in (
            ("smoke-kolkata", "Asia/Kolkata", "2026-09-18"),
            ("smoke-berlin-dst", "Europe/Berlin", "2026-10-23"),
        ):
            run(
                [
                    "bench/generate.py",
                    "--code",
                    code,
                    "--constituencies",
                    "5",
                    "--transactions",
                    "2000",
                    "--timezone",
                    tz,
                    "--first-day",
                    first_day,
                ],
                env,
                timeout=300,
            )
            assert stored_hours_match_hour_bucket(env, code) == 2000

        # Where a full recompute's time goes: its recount, COPY and commit timed apart, and the
        # two calls of a parallel recompute's finish.
        timed = run(["bench/phases.py", "recompute", "--election", "bench-20c-3000tx", "--runs", "1"], env, 300)
        assert re.search(r"run 1: backfill [\d.]+ s, raw GROUP BY [\d.]+ s; recount [\d.]+ s, ", timed.stdout)
        assert re.search(r"write \(COPY\) [\d.]+ s, commit [\d.]+ s; those three [\d.]+ s = ", timed.stdout)
        finish = run(["bench/phases.py", "finish", "--election", "bench-20c-3000tx"], env, 300).stdout
        assert re.search(r"episodes_refresh: [\d.]+ s\nconstituency_metrics_refresh: [\d.]+ s", finish)
    finally:
        database_drop(env["BENCH_DATABASE_URL"])


NATIONAL_DATA = Path(os.environ.get("NATIONAL_DATA", ROOT.parent / "shared" / "data" / "kobak_2021.csv"))


def test_national_replay_smoke_matches_the_protocols(tmp_path):
    """bench/national.py at a tiny size: every item runs, every station's stream adds up to
    its scaled protocol, and every hour is hour_bucket's."""
    env = smoke_environment()
    if not NATIONAL_DATA.exists():
        pytest.skip(f"the national replay reads {NATIONAL_DATA}: the shared data folder is absent here")
    import psycopg

    from bench.env import database_drop
    from bench.national_protocols import election_code, scaled, stations_read
    from bench.national_report import runs_of

    fraction, count = 0.05, 120
    parts = urlsplit(env["BENCH_DATABASE_URL"])
    url = urlunsplit(parts._replace(path=f"{parts.path}_f0_05"))
    results = tmp_path / "national.json"
    # Parts of 40 constituencies: the parallel item runs three parts, then the hourly spike steps.
    env = {**env, "METRICS_RECOMPUTE_PART_SIZE": "40", "NATIONAL_DATA": str(NATIONAL_DATA)}
    try:
        run(
            [
                "bench/national.py", "run", "--fraction", str(fraction), "--stations", str(count),
                "--freshness-seconds", "2", "--incremental-repeats", "2", "--wrk-seconds", "1", "--keep",
                "--json", str(results), "--work-dir", str(tmp_path / "work"),
            ],
            env,
            timeout=600,
        )  # fmt: skip
        entry = json.loads(results.read_text())[f"{fraction:g}"]
        for item in ("load", "recompute", "parallel", "incremental", "freshness", "api", "disk"):
            assert "error" not in entry[item], (item, entry[item])
        assert set(entry["parallel"]) == {"1", "2"}

        stations = stations_read(NATIONAL_DATA)[:count]
        voters, bulletins, votes = scaled(stations, fraction)
        want = {s.code: (int(v), int(b), int(c)) for s, v, b, c in zip(stations, voters, bulletins, votes, strict=True)}
        with psycopg.connect(url) as conn:
            # Only the generated stream: the incremental and freshness items add rows of their own.
            got = {
                code: (registered, b, v)
                for code, registered, b, v in conn.execute(
                    "SELECT c.code, c.registered_voters, "
                    "COUNT(t.id) FILTER (WHERE t.kind = 'bulletin_issued'), "
                    "COUNT(t.id) FILTER (WHERE t.kind = 'vote_cast') "
                    "FROM elections_constituency c LEFT JOIN elections_transaction t "
                    "ON t.constituency_id = c.id AND t.tx_hash ~ '^[0-9a-f]{64}$' GROUP BY c.id"
                )
            }
        assert got == want
        assert sum(b + v for _, b, v in want.values()) == entry["load"]["transactions"] > 1000
        assert stored_hours_match_hour_bucket({"BENCH_DATABASE_URL": url}, election_code(fraction)) > 1000

        # An item measured again on the kept data keeps the others, and the report names both runs.
        run(
            [
                "bench/national.py", "run", "--fraction", str(fraction), "--only", "disk", "--reuse-data", "--keep",
                "--json", str(results), "--work-dir", str(tmp_path / "work"),
            ],
            env,
            timeout=300,
        )  # fmt: skip
        again = json.loads(results.read_text())[f"{fraction:g}"]
        assert again["load"] == entry["load"]
        assert again["recompute"] == entry["recompute"]
        assert [m["command"] for m in again["meta"]["earlier"]] == [entry["meta"]["command"]]
        assert "--only disk" in again["meta"]["command"]
        listed = runs_of(again)
        assert listed.index("--stations") < listed.index("--only disk")
    finally:
        database_drop(url)
