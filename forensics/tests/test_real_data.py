"""The five Russian federal elections of the shared data folder (its README.txt says where the
files come from): totals against an independent simple reader of each file, the integer-
percentage excess against the values the method's authors published (docs/FORENSICS.md,
"Checked against the authors"), and one full import through the command on the database.

Skipped, with the reason, only where the data folder is absent; CI has it.
"""

import csv
import io
import math
import os
from pathlib import Path

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from elections.tests.factories import ElectionFactory
from forensics import figures
from protocols.importers import Station, layout_read, open_protocol_file, stations_read

DATA = Path(os.environ.get("ELECTION_DATA_DIR", Path(__file__).resolve().parents[3] / "shared" / "data"))
YEARS = (2011, 2012, 2018, 2021, 2024)
pytestmark = pytest.mark.skipif(
    not (DATA / "kobak_2021.csv").exists(),
    reason=f"the real election files are not at {DATA} (set ELECTION_DATA_DIR to their folder)",
)

# Excess of stations whose turnout or leader's result is within ±0.05 pp of an integer percentage,
# 1,000 binomial repetitions: dkobak/elections, analysis/2024/2024.ipynb at commit 94582207, the
# cell printing anomalies[:, 0, 0] (years 2000-2024 in order; see docs/FORENSICS.md).
PUBLISHED_EXCESS = {2011: 1003.477, 2012: 1159.585, 2018: 1708.839, 2021: 1309.768, 2024: 2930.984}


def path(year: int) -> Path:
    return DATA / f"kobak_{year}.csv"


def simple_totals(year: int) -> dict:
    """Totals read straight from the file, the way the authors' notebooks select columns:
    registered voters by "Число избирателей, включенных/внесенных", the three "бюллетеней,
    выданных" columns, valid + invalid, the leader as the column with the largest sum after the
    last "Число ..." column. Rows with empty results, and rows where nobody was registered and
    nothing was cast, are not stations."""
    with open(path(year), encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        voters = [
            i
            for i, h in enumerate(header)
            if "Число избирателей, включенных" in h or "Число избирателей, внесенных" in h
        ]
        given = [i for i, h in enumerate(header) if "бюллетеней, выданных" in h]
        received = [i for i, h in enumerate(header) if h.startswith(("Число действительных", "Число недействительных"))]
        first_option = max(i for i, h in enumerate(header) if h.startswith("Число")) + 1
        assert (len(voters), len(given), len(received)) == (1, 3, 2)
        rows = []
        for row in reader:
            if row[voters[0]] == "":
                continue
            numbers = [int(row[i]) for i in (voters[0], *given, *received)] + [int(v) for v in row[first_option:]]
            if not any(numbers):
                continue
            rows.append(numbers)
    options = len(header) - first_option
    sums = [sum(r[6 + j] for r in rows) for j in range(options)]
    leader = sums.index(max(sums))
    registered = sum(r[0] for r in rows)
    issued = sum(r[1] + r[2] + r[3] for r in rows)
    cast = sum(r[4] + r[5] for r in rows)
    return {
        "stations": len(rows),
        "registered_voters": registered,
        "turnout": 100 * issued / registered,
        "leader": header[first_option + leader].strip(),
        "leader_result": 100 * sums[leader] / cast,
    }


def product_stations(year: int) -> figures.Stations:
    """The file as the import reads it, into the arrays the endpoints compute from."""
    with open_protocol_file(path(year)) as (text, _):
        reader = csv.reader(text, strict=True)
        layout = layout_read(reader, None)
        rows = [(*s.counts, list(s.votes)) for s in stations_read(reader, layout) if isinstance(s, Station)]
    return figures.Stations.from_rows(rows, [name for _, name in layout.options])


@pytest.fixture(scope="module")
def stations_by_year():
    return {year: product_stations(year) for year in YEARS}


@pytest.mark.parametrize("year", YEARS)
def test_totals_equal_the_file_read_independently(stations_by_year, year):
    summary = figures.summary(stations_by_year[year])
    expected = simple_totals(year)
    assert summary["stations"] == expected["stations"]
    assert summary["registered_voters"] == expected["registered_voters"]
    assert summary["leader"] == expected["leader"]
    assert summary["turnout"] == pytest.approx(expected["turnout"], rel=1e-12)
    assert summary["leader_result"] == pytest.approx(expected["leader_result"], rel=1e-12)


@pytest.mark.parametrize("year", YEARS)
def test_integer_excess_agrees_with_the_published_value(stations_by_year, year):
    result = figures.integer_excess(stations_by_year[year], reps=1000, seed=42)
    excess = result.observed_total["either"] - result.expected_total["either"]
    # Both baselines are means of 1,000 repetitions: each is off by sd/sqrt(1000).
    noise = math.sqrt(2) * result.expected_sd["either"] / math.sqrt(1000)
    assert abs(excess - PUBLISHED_EXCESS[year]) < 4 * noise + 2, (excess, PUBLISHED_EXCESS[year], noise)


@pytest.mark.django_db(transaction=True)
def test_a_full_import_serves_the_same_summary(stations_by_year):
    year = 2021
    election = ElectionFactory(code=f"ru-duma-{year}")
    out = io.StringIO()
    call_command("import_protocols", str(path(year)), "--election", election.code, "--no-progress", stdout=out)
    assert "rejected 0" in out.getvalue()
    body = APIClient().get(f"/api/forensics/election/{election.id}/summary/").json()
    expected = figures.summary(stations_by_year[year])
    assert {k: body[k] for k in expected} == pytest.approx(expected)
    assert body["excluded"] == {"empty results in the file": 17, "rejected lines of the file": 0}
