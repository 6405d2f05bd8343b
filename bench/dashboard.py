"""Dashboard pages, their live polling and CSV exports, measured (SPEC section 13).

1. Server time per page on the 2,000-constituency bench election (item 1 of bench/run.py, which
   this module reuses when it is there): uncached (every read's cache version bumped just
   before the request) and cached, against a static DRF view in the same process; and page
   weight (HTML plus every static file the page loads, uncompressed).
2. Live polling: one conditional poll of the cached election metrics answered 304, the request
   an open page makes every 2 s; its server time, and what one open page costs a core.
3. Peak RSS of a process streaming the hourly stats of a whole election as CSV, 100,000 rows
   against 1,000,000 (synthetic elections whose rows are inserted by SQL), against a Django
   process that serves one static request.

Requests go through Django's full handler in-process (middleware, sessions, templates, the
product settings with DEBUG off, PostgreSQL and Redis), so the figures are server time
without the network. Results go to docs/PERFORMANCE.md between the dashboard-bench markers
and to bench/results/dashboard.json.

    .venv/bin/python bench/dashboard.py --election bench-2000c-10000000tx
"""

import argparse
import datetime as dt
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import env

env.prepare()

BEGIN, END = "<!-- dashboard-bench:begin -->", "<!-- dashboard-bench:end -->"
PAGE_TARGET_UNCACHED, PAGE_TARGET_CACHED, WEIGHT_TARGET = 0.300, 0.050, 500_000


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--election", default="bench-2000c-10000000tx", help="code of a generated bench election")
    p.add_argument("--repeats", type=int, default=15, help="requests per figure (median)")
    p.add_argument("--export-rows", default="100000,1000000", help="hourly rows of the two export elections")
    p.add_argument("--output", default=str(env.ROOT / "docs" / "PERFORMANCE.md"))
    p.add_argument("--json", default=str(env.ROOT / "bench" / "results" / "dashboard.json"))
    p.add_argument(
        "--reuse-exports",
        metavar="JSON",
        default=None,
        help="take the export figures (item 3, minutes long) from an earlier run's JSON, named as such",
    )
    return p.parse_args(argv)


def client():
    from django.test import Client

    return Client(HTTP_HOST="127.0.0.1")


def timed_get(c, path: str, **headers) -> tuple[float, float, object]:
    """(wall seconds, CPU seconds, response) of one request, the body fully produced."""
    wall, cpu = time.perf_counter(), time.process_time()
    response = c.get(path, **headers)
    body = b"".join(response.streaming_content) if response.streaming else response.content
    response.body = body
    return time.perf_counter() - wall, time.process_time() - cpu, response


def page_weight(c, html: bytes) -> int:
    """The HTML and every script and stylesheet it loads (uncompressed bytes)."""
    total = len(html)
    for asset in re.findall(rb'(?:src|href)="(/static/[^"]+)"', html):
        _, _, response = timed_get(c, asset.decode())
        if response.status_code != 200:
            raise RuntimeError(f"{asset.decode()} answered {response.status_code}")
        total += len(response.body)
    return total


def pages_measure(election, repeats: int) -> list[dict]:
    from django.db import transaction

    from elections.models import Constituency
    from metrics.cache import metrics_cache

    busiest = Constituency.objects.filter(election=election).order_by("-total_transactions", "id").first()
    pages = [
        ("elections list", "/"),
        ("election", f"/elections/{election.code}/"),
        ("election, table sorted, page 3", f"/elections/{election.code}/?sort=-anomaly_score&page=3"),
        ("election, table searched", f"/elections/{election.code}/?q=7"),
        ("constituency", f"/elections/{election.code}/constituencies/{busiest.code}/"),
    ]
    c = client()
    static = [timed_get(c, "/bench/static/")[0] for _ in range(repeats)]
    floor = statistics.median(static)
    results = []
    for name, path in pages:
        uncached, cached, uncached_cpu, cached_cpu = [], [], [], []
        for _ in range(repeats):
            with transaction.atomic():  # what a recompute does: every read of the election is recomputed
                metrics_cache.election_version_bump(election.id)
            seconds, cpu, response = timed_get(c, path)
            if response.status_code != 200:
                raise RuntimeError(f"{path} answered {response.status_code}")
            uncached.append(seconds)
            uncached_cpu.append(cpu)
        for _ in range(repeats):
            seconds, cpu, _ = timed_get(c, path)
            cached.append(seconds)
            cached_cpu.append(cpu)
        weight = page_weight(c, response.body)
        row = {
            "page": name,
            "path": path,
            "uncached_ms": round(statistics.median(uncached) * 1000, 1),
            "cached_ms": round(statistics.median(cached) * 1000, 1),
            "uncached_cpu_ms": round(statistics.median(uncached_cpu) * 1000, 1),
            "cached_cpu_ms": round(statistics.median(cached_cpu) * 1000, 1),
            "floor_ms": round(floor * 1000, 2),
            "html_bytes": len(response.body),
            "weight_bytes": weight,
        }
        row["met"] = (
            row["uncached_ms"] < PAGE_TARGET_UNCACHED * 1000
            and row["cached_ms"] < PAGE_TARGET_CACHED * 1000
            and weight < WEIGHT_TARGET
        )
        print(f"  {name}: {row}", flush=True)
        results.append(row)
    return results


def polling_measure(election, repeats: int) -> dict:
    c = client()
    path = f"/api/metrics/election/{election.id}/"
    first = c.get(path, HTTP_ACCEPT="application/json")
    etag = first["ETag"]
    walls, cpus = [], []
    for _ in range(repeats * 10):
        wall, cpu, response = timed_get(c, path, HTTP_IF_NONE_MATCH=etag, HTTP_ACCEPT="application/json")
        if response.status_code != 304:
            raise RuntimeError(f"poll answered {response.status_code}, not 304")
        walls.append(wall)
        cpus.append(cpu)
    static = [timed_get(c, "/bench/static/")[0] for _ in range(repeats * 10)]
    wall, cpu = statistics.median(walls), statistics.median(cpus)
    return {
        "poll_ms": round(wall * 1000, 2),
        "poll_cpu_ms": round(cpu * 1000, 2),
        "floor_ms": round(statistics.median(static) * 1000, 2),
        "core_share_per_page": cpu / 2.0,
        "pages_per_core": int(2.0 / cpu) if cpu else None,
        "full_response_ms": round(timed_get(c, path, HTTP_ACCEPT="application/json")[0] * 1000, 2),
    }


def export_election(rows: int):
    """A synthetic election holding ``rows`` hourly rows (1,000 hours per constituency)."""
    from django.db import connection

    from bench.generate import election_purge
    from elections.models import Constituency, Election

    code = f"bench-export-{rows}"
    existing = Election.objects.filter(code=code).first()
    if existing and existing.hourly_stats.count() == rows:
        return existing
    election_purge(codes=[code])
    hours_each = 1000
    count = max(1, rows // hours_each)
    starts = dt.datetime(2026, 9, 1, 5, tzinfo=dt.UTC)
    election = Election.objects.create(
        code=code,
        name=code,
        timezone="Europe/Moscow",
        starts_at=starts,
        ends_at=starts + dt.timedelta(hours=hours_each),
    )
    Constituency.objects.bulk_create(
        Constituency(election=election, code=f"x{i:05d}", name=f"X {i}", registered_voters=5000) for i in range(count)
    )
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO metrics_hourlystats (election_id, constituency_id, hour, bulletins_issued, votes_cast,
                transaction_count, bulletin_velocity, vote_velocity, participation_rate, anomaly_count, timestamp)
            SELECT %s, c.id, %s + make_interval(hours => h), 7, 6, 13, 7 / 60.0, 6 / 60.0, h * 0.12, 0, now()
            FROM elections_constituency c CROSS JOIN generate_series(0, %s - 1) AS h
            WHERE c.election_id = %s
            """,
            [election.id, starts, rows // count, election.id],
        )
        cursor.execute("ANALYZE metrics_hourlystats")
    return election


EXPORT_SCRIPT = """
import time
from django.test import Client
started = time.perf_counter()
response = Client(HTTP_HOST="127.0.0.1").get("{path}")
assert response.status_code == 200 and response.streaming, response.status_code
lines = size = 0
for chunk in response.streaming_content:
    size += len(chunk)
    lines += chunk.count(b"\\n")
print(lines - 1, size, round(time.perf_counter() - started, 3))  # the last line of stdout
"""


FLOOR_SCRIPT = """
from django.test import Client
assert Client(HTTP_HOST="127.0.0.1").get("/bench/static/").status_code == 200
"""


def exports_measure(rows_list: list[int]) -> dict:
    from bench.ingest import command_peak_rss

    floor = command_peak_rss(["shell", "-c", FLOOR_SCRIPT], timeout=300)
    results = {"floor_mb": floor["peak_rss_mb"], "exports": []}
    for rows in rows_list:
        election = export_election(rows)
        measured = command_peak_rss(
            ["shell", "-c", EXPORT_SCRIPT.format(path=f"/api/hourly-stats/election/{election.id}/?format=csv")],
            timeout=1800,
        )
        written, size, seconds = measured["stdout"].strip().splitlines()[-1].split()
        if int(written) != rows:
            raise RuntimeError(f"export wrote {written} rows of {rows}: {measured}")
        entry = {"rows": rows, "peak_rss_mb": measured["peak_rss_mb"], "bytes": int(size), "seconds": float(seconds)}
        print(f"  export {entry}", flush=True)
        results["exports"].append(entry)
    from bench.generate import election_purge

    # The elections list sums every election's turnout curve: leave only the bench's own.
    election_purge(codes=[f"bench-export-{rows}" for rows in rows_list])
    return results


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def collectstatic() -> None:
    """DEBUG off serves hashed static files from the manifest, as production does."""
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"], cwd=env.ROOT, check=True, timeout=300
    )


def report(meta: dict, pages: list[dict], polling: dict, exports: dict) -> str:
    lines = [
        BEGIN,
        "",
        f"Run: `{meta['command']}` at git {meta['git']}, {meta['started_at']} UTC; "
        f"election `{meta['election']}` ({meta['scale']}). Each figure is the median of {meta['repeats']} requests "
        "through Django's full handler in-process (DEBUG off, PostgreSQL, Redis); the raw limit is a static "
        "DRF view in the same process.",
        "",
        f"Load average of the machine (2 cores, shared) at the start and end: {meta['load_start']} and "
        f"{meta['load_end']}. CPU is the Django process's own CPU time per request (what the request costs the "
        "server, the part of wall time that does not depend on what else the machine runs); the database's "
        "and Redis's work is in wall time only.",
        "",
        "| Page | Uncached (CPU) | Cached (CPU) | Static view | Cached / static | HTML | Page weight | Met |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in pages:
        lines.append(
            f"| {row['page']} (`{row['path']}`) | {row['uncached_ms']} ms ({row['uncached_cpu_ms']} ms) | "
            f"{row['cached_ms']} ms ({row['cached_cpu_ms']} ms) | "
            f"{row['floor_ms']} ms | {row['cached_ms'] / row['floor_ms']:.1f} | {row['html_bytes'] / 1000:.0f} KB | "
            f"{row['weight_bytes'] / 1000:.0f} KB | {'yes' if row['met'] else '**no**'} |"
        )
    lines += [
        "",
        "Targets: under 300 ms uncached, under 50 ms cached, under 500 KB per page (HTML plus scripts and "
        "stylesheets, uncompressed).",
        "",
        f"Live polling: a conditional poll of `metrics/election/{{id}}/` answered 304 takes {polling['poll_ms']} ms "
        f"({polling['poll_cpu_ms']} ms CPU; the static view {polling['floor_ms']} ms; a full 200 answer "
        f"{polling['full_response_ms']} ms). At one poll per 2 s an open page costs "
        f"{polling['core_share_per_page'] * 100:.2f} % of a core: one core serves about "
        f"{polling['pages_per_core']:,} open pages.",
        "",
        "| CSV export of a whole election's hourly stats | Peak RSS | Size | Time |",
        "| --- | --- | --- | --- |",
    ]
    if exports.get("from"):
        lines[-2:-2] = [f"Exports: {exports['from']}", ""]
    for entry in exports["exports"]:
        lines.append(
            f"| {entry['rows']:,} rows | {entry['peak_rss_mb']:.0f} MB | {entry['bytes'] / 1e6:.0f} MB | "
            f"{entry['seconds']:.1f} s |"
        )
    small, big = exports["exports"][0], exports["exports"][-1]
    lines += [
        f"| Django process serving one static request (floor) | {exports['floor_mb']:.0f} MB | | |",
        "",
        f"Ratio of peak RSS, {big['rows']:,} against {small['rows']:,} rows: "
        f"{big['peak_rss_mb'] / small['peak_rss_mb']:.2f}.",
        "",
        END,
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    env.django_start()
    from elections.models import Election

    election = Election.objects.filter(code=args.election).first()
    if election is None:
        raise SystemExit(
            f"no election {args.election}; generate it: .venv/bin/python bench/generate.py --constituencies 2000"
        )
    collectstatic()
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=env.ROOT).stdout
    meta = {
        "command": f"BENCH_DATABASE_URL=... .venv/bin/python bench/dashboard.py {' '.join(sys.argv[1:])}".strip(),
        "git": git.strip(),
        "started_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "election": election.code,
        "scale": f"{election.constituencies.count():,} constituencies, {election.hourly_stats.count():,} hourly rows",
        "repeats": args.repeats,
        "load_start": load_average(),
    }
    print("pages", flush=True)
    pages = pages_measure(election, args.repeats)
    print("polling", flush=True)
    polling = polling_measure(election, args.repeats)
    if args.reuse_exports:
        earlier = json.loads(Path(args.reuse_exports).read_text())
        exports = {
            "floor_mb": earlier["floor_mb"],
            "exports": earlier["exports"],
            "from": earlier.get("from")
            or f"measured by `{earlier['meta']['command']}` at git {earlier['meta']['git']}, "
            f"{earlier['meta']['started_at']} UTC (reused by --reuse-exports)",
        }
    else:
        print("exports", flush=True)
        exports = exports_measure([int(n) for n in args.export_rows.split(",")])
    meta["load_end"] = load_average()
    Path(args.json).write_text(json.dumps({"meta": meta, "pages": pages, "polling": polling, **exports}, indent=1))
    section = report(meta, pages, polling, exports)
    doc = Path(args.output)
    text = doc.read_text() if doc.exists() else ""
    if BEGIN in text:
        text = text[: text.index(BEGIN)] + section + text[text.index(END) + len(END) :]
    else:
        text += "\n## Dashboard pages, live polling and CSV exports\n\n" + section + "\n"
    doc.write_text(text)
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
