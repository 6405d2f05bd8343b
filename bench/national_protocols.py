"""The 2021 State Duma protocols as the national replay reads them (bench/national.py).

Plain functions without side effects: tests import them to check a replay against the
protocols without preparing a benchmark environment.
"""

import csv
import os
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("NATIONAL_DATA", ROOT.parent / "shared" / "data" / "kobak_2021.csv"))
CODE = "duma-2021"
HEADERS = {
    "registered": "Число избирателей, внесенных в список избирателей на момент окончания голосования",
    "issued": (
        "Число избирательных бюллетеней, выданных избирателям, проголосовавшим досрочно",
        "Число избирательных бюллетеней, выданных в помещении для голосования в день голосования",
        "Число избирательных бюллетеней, выданных вне помещения для голосования в день голосования",
    ),
    "cast": ("Число недействительных избирательных бюллетеней", "Число действительных избирательных бюллетеней"),
}


@dataclass(frozen=True)
class Station:
    code: str
    name: str
    registered: int
    issued: int
    cast: int


def stations_read(path: Path = DATA) -> list[Station]:
    """One Station per protocol row, in file order (codes are the 1-based row numbers: a few
    stations share a region and number)."""
    with open(path, newline="", encoding="utf-8") as source:
        rows = csv.reader(source)
        header = next(rows)
        at = {name: i for i, name in enumerate(header)}

        def number(row, name):
            value = row[at[name]]
            return int(value) if value else 0

        stations = []
        for n, row in enumerate(rows, start=1):
            stations.append(
                Station(
                    code=f"{n:05d}",
                    name=f"{row[at['region']]}, {row[at['tik']]}, {row[at['uik']]}"[:255],
                    registered=number(row, HEADERS["registered"]),
                    issued=sum(number(row, h) for h in HEADERS["issued"]),
                    cast=sum(number(row, h) for h in HEADERS["cast"]),
                )
            )
    return stations


def scaled(stations: list[Station], fraction: float):
    """(registered, bulletins, votes) per station at ``fraction``, as numpy arrays."""
    import numpy as np

    registered = np.array([s.registered for s in stations], dtype=np.int64)
    issued = np.array([s.issued for s in stations], dtype=np.int64)
    cast = np.array([s.cast for s in stations], dtype=np.int64)
    # The check constraint wants at least one voter; 17 protocols list none.
    voters = np.maximum(1, np.ceil(registered * fraction - 1e-9)).astype(np.int64)
    return voters, np.rint(issued * fraction).astype(np.int64), np.rint(cast * fraction).astype(np.int64)


def election_code(fraction: float) -> str:
    return f"{CODE}-f{fraction:g}".replace(".", "_")
