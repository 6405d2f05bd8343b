"""Writers of small protocol files for tests, in the layouts import_protocols reads."""

import csv
import gzip
from dataclasses import dataclass, field
from pathlib import Path

# Protocol-line wordings of different years (docs/FORENSICS.md, "Importing protocols").
WORDINGS = {
    2011: {
        "registered_voters": "Число избирателей, внесенных в список избирателей",
        "ballots_early": "Число избирательных бюллетеней, выданных избирателям, проголосовавшим досрочно",
        "ballots_on_day": "Число избирательных бюллетеней, выданных избирателям в помещении для голосования",
        "ballots_outside": "Число избирательных бюллетеней, выданных избирателям вне помещения для голосования",
        "invalid": "Число недействительных избирательных бюллетеней",
        "valid": "Число действительных избирательных бюллетеней",
    },
    2021: {
        "registered_voters": ("Число избирателей, внесенных в список избирателей на момент окончания голосования"),
        "ballots_early": "Число избирательных бюллетеней, выданных избирателям, проголосовавшим досрочно",
        "ballots_on_day": ("Число избирательных бюллетеней, выданных в помещении для голосования в день голосования"),
        "ballots_outside": (
            "Число избирательных бюллетеней, выданных вне помещения для голосования в день голосования"
        ),
        "invalid": "Число недействительных избирательных бюллетеней",
        "valid": "Число действительных избирательных бюллетеней",
    },
}
RECEIVED = "Число избирательных бюллетеней, полученных участковой избирательной комиссией"
ORDER = (
    "registered_voters",
    "ballots_received",
    "ballots_early",
    "ballots_on_day",
    "ballots_outside",
    "invalid",
    "valid",
)


@dataclass
class Row:
    region: str
    tik: str
    uik: str
    registered: int
    early: int
    on_day: int
    outside: int
    valid: int
    invalid: int
    votes: list[int] = field(default_factory=list)
    oik: str = ""


def commission_csv(path: Path, rows: list, options: list[str], *, year: int = 2021, oik: bool = False) -> Path:
    """A commission file; a row may also be a list of raw strings (written as is)."""
    words = WORDINGS[year]
    header = ["level", "region", "oik", "tik", "uik"] if oik else ["region", "tik", "uik"]
    header += [words["registered_voters"], RECEIVED, words["ballots_early"], words["ballots_on_day"]]
    header += [words["ballots_outside"], words["invalid"], words["valid"], *options]
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in rows:
            if not isinstance(row, Row):
                writer.writerow(row)
                continue
            identity = ["ЦИК России", row.region, row.oik, row.tik, row.uik] if oik else [row.region, row.tik, row.uik]
            numbers = [row.registered, row.registered, row.early, row.on_day, row.outside, row.invalid, row.valid]
            writer.writerow([*identity, *numbers, *row.votes])
    return path


def plain_csv(path: Path, rows: list, options: list[str]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["code", "name", "registered_voters", "ballots_early", "ballots_on_day", "ballots_outside", "valid"]
            + ["invalid", *options]
        )
        for row in rows:
            if not isinstance(row, Row):
                writer.writerow(row)
                continue
            writer.writerow(
                [row.uik, f"{row.region} {row.uik}", row.registered, row.early, row.on_day, row.outside, row.valid]
                + [row.invalid, *row.votes]
            )
    return path


def station(uik: str, registered: int = 1000, issued: int = 600, votes=(300, 200, 50), invalid: int = 10, **kw) -> Row:
    """A consistent station: ``issued`` split over early / on the day / outside, ballots cast = issued."""
    early, outside = issued // 10, issued // 20
    valid = sum(votes)
    return Row(
        region=kw.pop("region", "Область"),
        tik=kw.pop("tik", "Первая"),
        uik=uik,
        registered=registered,
        early=early,
        on_day=issued - early - outside,
        outside=outside,
        valid=valid,
        invalid=invalid,
        votes=list(votes),
        **kw,
    )
