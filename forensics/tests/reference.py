"""An independent plain-Python computation of the forensic figures (fractions, no numpy), which
the tests compare with forensics.figures."""

import math
from fractions import Fraction

HALF_WINDOW = Fraction(1, 20)  # ±0.05 percentage points


def leader(stations: list[dict]) -> int | None:
    if not stations or not stations[0]["votes"]:
        return None
    totals = [sum(s["votes"][i] for s in stations) for i in range(len(stations[0]["votes"]))]
    return totals.index(max(totals))


def issued(s: dict) -> int:
    return s["early"] + s["on_day"] + s["outside"]


def cast(s: dict) -> int:
    return s["valid"] + s["invalid"]


def summary(stations: list[dict], options: list[str]) -> dict:
    registered = sum(s["registered"] for s in stations)
    ballots_issued = sum(issued(s) for s in stations)
    ballots_cast = sum(cast(s) for s in stations)
    top = leader(stations)
    leader_votes = sum(s["votes"][top] for s in stations) if top is not None else 0
    return {
        "stations": len(stations),
        "registered_voters": registered,
        "ballots_issued": ballots_issued,
        "ballots_cast": ballots_cast,
        "turnout": 100 * ballots_issued / registered if registered else 0.0,
        "leader": options[top] if top is not None else None,
        "leader_result": 100 * leader_votes / ballots_cast if ballots_cast else 0.0,
    }


def histogram_stations(stations: list[dict]) -> list[dict]:
    return [s for s in stations if cast(s) >= 1 and issued(s) < s["registered"]]


def bin_of(numerator: int, denominator: int, width: Fraction) -> int:
    """The bin centred on a multiple of ``width`` holding 100·numerator/denominator (half up)."""
    return math.floor(Fraction(100 * numerator, denominator) / width + Fraction(1, 2))


def histogram(stations: list[dict], of: str, width: Fraction) -> tuple[list[int], list[int]]:
    top = leader(stations)
    steps = int(100 / width)
    counts, voters = [0] * (steps + 1), [0] * (steps + 1)
    for s in histogram_stations(stations):
        if of == "turnout":
            index = bin_of(issued(s), s["registered"], width)
        else:
            index = bin_of(s["votes"][top], cast(s), width)
        counts[index] += 1
        voters[index] += s["registered"]
    return counts, voters


def fingerprint(stations: list[dict], width: Fraction) -> dict[tuple[int, int], int]:
    top = leader(stations)
    cells: dict[tuple[int, int], int] = {}
    for s in histogram_stations(stations):
        key = (bin_of(issued(s), s["registered"], width), bin_of(s["votes"][top], cast(s), width))
        cells[key] = cells.get(key, 0) + s["registered"]
    return cells


def near_integer(k: int, n: int) -> int | None:
    value = Fraction(100 * k, n)
    nearest = math.floor(value + Fraction(1, 2))
    return nearest if abs(value - nearest) <= HALF_WINDOW else None


def integer_stations(stations: list[dict]) -> list[dict]:
    top = leader(stations)
    return [
        s
        for s in stations
        if s["registered"] >= 100
        and cast(s) >= 1
        and Fraction(100 * issued(s), s["registered"]) <= 99
        and Fraction(100 * s["votes"][top], cast(s)) <= 99
    ]


def integer_observed(stations: list[dict]) -> dict[str, int]:
    top = leader(stations)
    counts = {"turnout": 0, "leader_result": 0, "either": 0}
    for s in integer_stations(stations):
        t = near_integer(issued(s), s["registered"]) is not None
        r = near_integer(s["votes"][top], cast(s)) is not None
        counts["turnout"] += t
        counts["leader_result"] += r
        counts["either"] += t or r
    return counts


def window_probability(k: int, n: int) -> float:
    """Exact probability that Binomial(n, k/n) lands within ±0.05 pp of an integer percentage."""
    p = k / n
    total = 0.0
    for x in range(n + 1):
        j = near_integer(x, n)
        if j is not None:
            total += _binomial_pmf(x, n, p)
    return total


def integer_expected(stations: list[dict]) -> dict[str, float]:
    """The exact mean of the binomial resampling baseline (what the Monte Carlo estimates)."""
    top = leader(stations)
    expected = {"turnout": 0.0, "leader_result": 0.0, "either": 0.0}
    for s in integer_stations(stations):
        pt = window_probability(issued(s), s["registered"])
        pr = window_probability(s["votes"][top], cast(s))
        expected["turnout"] += pt
        expected["leader_result"] += pr
        expected["either"] += 1 - (1 - pt) * (1 - pr)
    return expected


def _binomial_pmf(x: int, n: int, p: float) -> float:
    if p == 0:
        return 1.0 if x == 0 else 0.0
    if p == 1:
        return 1.0 if x == n else 0.0
    log = math.lgamma(n + 1) - math.lgamma(x + 1) - math.lgamma(n - x + 1)
    return math.exp(log + x * math.log(p) + (n - x) * math.log1p(-p))
