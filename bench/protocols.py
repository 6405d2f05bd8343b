"""Benchmark of protocol imports and forensic figures (docs/PERFORMANCE.md, "Protocols and
forensics").

Measures on PostgreSQL, in one run, against the raw limit of the same file:

- the raw COPY of the protocol file into a scratch table of text columns (PostgreSQL reading
  the same bytes, no parsing, no checks, no constituencies): the floor of any import;
- ``import_protocols`` into a new election (every constituency created) and again into the same
  election (a re-import: constituencies exist, protocols replaced);
- each figure computed uncached (right after an import, whose new id no cache entry has), then
  cached, through the HTTP API in-process; the integer-percentage excess with 1,000 repetitions.

The files: a generated commission file of ``--stations`` stations (the layout of kobak_2021.csv,
14 options, binomial turnouts and results), and the real kobak_2021.csv when the shared data
folder is there. Run:

    BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/em_forensics \\
    BENCH_REDIS_URL=redis://127.0.0.1:6379/3 BENCH_BROKER_URL=redis://127.0.0.1:6379/4 \\
    .venv/bin/python bench/protocols.py --stations 100000 --runs 3
"""

import argparse
import csv
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import env

REAL_FILE = env.ROOT.parent / "shared" / "data" / "kobak_2021.csv"
OPTIONS = 14


def generate(path: Path, stations: int, seed: int = 1) -> Path:
    """A commission file like the published ones: region, tik, uik, the protocol lines, options."""
    import numpy as np

    from protocols.tests.files import RECEIVED, WORDINGS

    words = WORDINGS[2021]
    rng = np.random.default_rng(seed)
    registered = rng.integers(100, 3000, stations)
    issued = rng.binomial(registered, rng.uniform(0.3, 0.9, stations))
    invalid = rng.binomial(issued, 0.015)
    valid = issued - invalid
    shares = rng.dirichlet(np.ones(OPTIONS) * 2, stations)
    votes = np.array([rng.multinomial(v, s) for v, s in zip(valid, shares, strict=True)])
    early = issued // 20
    outside = issued // 12
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["region", "tik", "uik", words["registered_voters"], RECEIVED, words["ballots_early"]]
            + [words["ballots_on_day"], words["ballots_outside"], words["invalid"], words["valid"]]
            + [f"{i + 1}. Партия {i + 1}" for i in range(OPTIONS)]
        )
        for i in range(stations):
            writer.writerow(
                [f"Регион {i // 1100}", f"ТИК {i // 90}", f"УИК №{i}", registered[i], registered[i], early[i]]
                + [issued[i] - early[i] - outside[i], outside[i], invalid[i], valid[i], *votes[i]]
            )
    return path


def raw_copy_seconds(path: Path) -> float:
    """PostgreSQL reading the same file into a scratch table of text columns."""
    from django.db import connection

    with open(path, encoding="utf-8", newline="") as handle:
        width = len(next(csv.reader(handle)))
    with connection.cursor() as cursor:
        columns = ", ".join(f"c{i} text" for i in range(width))
        cursor.execute("DROP TABLE IF EXISTS bench_protocol_copy")
        cursor.execute(f"CREATE TABLE bench_protocol_copy ({columns})")
        started = time.perf_counter()
        with (
            open(path, "rb") as source,
            cursor.cursor.copy("COPY bench_protocol_copy FROM STDIN WITH (FORMAT csv, HEADER true)") as copy,
        ):
            while chunk := source.read(1 << 20):
                copy.write(chunk)
        elapsed = time.perf_counter() - started
        cursor.execute("DROP TABLE bench_protocol_copy")
    return elapsed


class Timing:
    """Wall time, and this process's CPU time: on a machine shared with other work the wall
    time waits for a core, the CPU time is the work itself (PostgreSQL's is not in it)."""

    def __init__(self, wall: float, cpu: float):
        self.wall, self.cpu = wall, cpu

    @classmethod
    def median(cls, timings: list["Timing"]) -> "Timing":
        return cls(statistics.median(t.wall for t in timings), statistics.median(t.cpu for t in timings))

    def __str__(self) -> str:
        return f"{self.wall:.2f} s (CPU {self.cpu:.2f} s)"


def timed(work) -> tuple[Timing, object]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = work()
    return Timing(time.perf_counter() - wall, time.process_time() - cpu), result


def import_seconds(path: Path, election) -> tuple[Timing, object]:
    from protocols.services import protocols_import

    return timed(lambda: protocols_import(path=path, election=election, on_rejected=lambda *a: None))


def get_seconds(client, url: str) -> Timing:
    timing, response = timed(lambda: client.get(url))
    assert response.status_code == 200, (url, response.status_code, response.content[:300])
    return timing


FIGURES = (
    ("summary", "summary/"),
    ("histogram (turnout, 0.1 pp)", "histogram/?of=turnout"),
    ("fingerprint (1 pp)", "fingerprint/"),
    ("integer excess (1,000 reps)", "integer-excess/?reps=1000&seed=42"),
    ("histogram PNG", "histogram/?of=leader_result&format=png"),
    ("fingerprint PNG", "fingerprint/?format=png"),
)


def measure(path: Path, label: str, runs: int) -> list[tuple[str, str, str]]:
    from rest_framework.test import APIClient

    from elections.models import Election

    code = f"bench-protocols-{int(time.time())}"
    election = Election.objects.create(
        code=code,
        name=f"bench {label}",
        timezone="Europe/Moscow",
        starts_at=datetime(2021, 9, 17, 5, tzinfo=UTC),
        ends_at=datetime(2021, 9, 19, 17, tzinfo=UTC),
    )
    rows = []
    try:
        copies = [raw_copy_seconds(path) for _ in range(runs)]
        first, report = import_seconds(path, election)
        again = Timing.median([import_seconds(path, election)[0] for _ in range(runs)])
        copy = statistics.median(copies)
        rows.append((f"{label}: raw COPY of the file", f"{copy:.2f} s", "1.0 (the floor)"))
        rows.append(
            (
                f"{label}: import_protocols, new election ({report.stored:,} stations, constituencies created)",
                str(first),
                f"{first.wall / copy:.1f}x COPY",
            )
        )
        rows.append((f"{label}: re-import (protocols replaced)", str(again), f"{again.wall / copy:.1f}x COPY"))
        client = APIClient(SERVER_NAME="localhost")
        base = f"/api/forensics/election/{election.id}/"
        client.get("/api/")  # the process's first request loads the URL map and DRF: not a figure's cost
        for name, url in FIGURES:
            uncached = []
            for _ in range(runs):
                import_seconds(path, election)  # a new import id: no cache entry exists for it
                uncached.append(get_seconds(client, base + url))
            cached = statistics.median(get_seconds(client, base + url).wall for _ in range(5))
            rows.append(
                (f"{label}: {name}, uncached / cached", f"{Timing.median(uncached)} / {cached * 1000:.0f} ms", "")
            )
    finally:
        from elections.services import elections_delete

        elections_delete(queryset=Election.objects.filter(pk=election.pk))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stations", type=int, default=100_000, help="Stations of the generated file.")
    parser.add_argument("--runs", type=int, default=3, help="Repetitions of each timing (median reported).")
    parser.add_argument("--no-real", action="store_true", help="Skip kobak_2021.csv even if it is there.")
    args = parser.parse_args()
    env.prepare()
    env.django_start()
    print(f"load average at the start: {' '.join(f'{x:.1f}' for x in os.getloadavg())} ({os.cpu_count()} cores)")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        generated = generate(Path(folder) / "generated.csv", args.stations)
        rows += measure(generated, f"generated, {args.stations:,} stations", args.runs)
    if REAL_FILE.exists() and not args.no_real:
        rows += measure(REAL_FILE, "kobak_2021.csv", args.runs)
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())} ({os.cpu_count()} cores)")
    print("| what | median | against the floor |\n| --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
