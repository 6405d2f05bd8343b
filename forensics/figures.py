"""The forensic figures of SPEC section 11, as pure functions of station arrays (numpy).

Definitions follow Kobak, Shpilkin & Pshenichnikov, Annals of Applied Statistics 10(1), 2016
(docs/FORENSICS.md): turnout = ballots issued ÷ registered voters; the leader is the option with
the most votes in the election; the leader's result = leader's votes ÷ (valid + invalid).

Percentages are compared with exact integer arithmetic wherever a boundary matters (a value on
a bin edge, a value exactly 0.05 pp from an integer), so a figure never depends on how a float
rounds; the tests compare every figure with a plain-Python reference that uses fractions.
"""

from dataclasses import dataclass, field

import numpy as np

HISTOGRAM_OF = ("turnout", "leader_result")
INTEGER_MIN_REGISTERED = 100
INTEGER_MAX_PERCENT = 99
# A redrawn station can land near 100 % even though observed ones above 99 % are excluded; the
# authors' baseline counts it there too (docs/FORENSICS.md).
INTEGERS = np.arange(0, 101)
# Binomial mass further than this many standard deviations from the mean (about 1e-12 of a
# station's) is left out of the window sums.
TAIL_SD = 7
REPS_PER_CHUNK = 16

# Why a station is left out of a figure (the keys of every figure's ``excluded``).
NO_BALLOTS = "no valid or invalid ballot"
ISSUED_NOT_BELOW_REGISTERED = "ballots issued not below registered voters"
FEW_REGISTERED = f"fewer than {INTEGER_MIN_REGISTERED} registered voters"
TURNOUT_ABOVE = f"turnout above {INTEGER_MAX_PERCENT} %"
RESULT_ABOVE = f"leader's result above {INTEGER_MAX_PERCENT} %"


@dataclass(frozen=True)
class Stations:
    """An election's protocols as columns: one entry per station."""

    registered: np.ndarray  # int64
    issued: np.ndarray  # early + on the day + outside
    cast: np.ndarray  # valid + invalid
    votes: np.ndarray  # int64, stations × options
    options: tuple[str, ...] = ()

    @classmethod
    def from_columns(cls, counts: np.ndarray, votes: np.ndarray, options) -> "Stations":
        """``counts``: stations × (registered, early, on_day, outside, valid, invalid);
        ``votes``: stations × options."""
        counts = np.asarray(counts, dtype=np.int64).reshape(-1, 6)
        votes = np.asarray(votes, dtype=np.int64).reshape(len(counts), len(options))
        return cls(
            registered=counts[:, 0],
            issued=counts[:, 1] + counts[:, 2] + counts[:, 3],
            cast=counts[:, 4] + counts[:, 5],
            votes=votes,
            options=tuple(options),
        )

    @classmethod
    def from_rows(cls, rows, options) -> "Stations":
        """``rows``: (registered, early, on_day, outside, valid, invalid, votes list) per station."""
        rows = list(rows)
        return cls.from_columns([row[:6] for row in rows], [row[6] for row in rows], options)

    def __len__(self) -> int:
        return len(self.registered)

    @property
    def leader(self) -> int | None:
        """Position of the option with the most votes in the election (ties: the first listed)."""
        if self.votes.shape[1] == 0 or len(self) == 0:
            return None
        return int(np.argmax(self.votes.sum(axis=0)))

    @property
    def leader_votes(self) -> np.ndarray:
        leader = self.leader
        return self.votes[:, leader] if leader is not None else np.zeros(len(self), dtype=np.int64)


def _percent(numerator: int, denominator: int) -> float:
    return 100.0 * numerator / denominator if denominator else 0.0


def summary(stations: Stations) -> dict:
    registered, issued, cast = (int(a.sum()) for a in (stations.registered, stations.issued, stations.cast))
    leader = stations.leader
    return {
        "stations": len(stations),
        "registered_voters": registered,
        "ballots_issued": issued,
        "ballots_cast": cast,
        "turnout": _percent(issued, registered),
        "leader": stations.options[leader] if leader is not None else None,
        "leader_result": _percent(int(stations.leader_votes.sum()), cast),
    }


def _excluded(masks: list[tuple[str, np.ndarray]]) -> tuple[np.ndarray, dict[str, int]]:
    """Apply exclusion masks in order; each excluded station is counted under its first reason."""
    n = len(masks[0][1]) if masks else 0
    kept = np.ones(n, dtype=bool)
    reasons = {}
    for reason, mask in masks:
        hit = kept & mask
        reasons[reason] = int(hit.sum())
        kept &= ~mask
    return kept, reasons


def histogram_included(stations: Stations) -> tuple[np.ndarray, dict[str, int]]:
    """Histograms and the fingerprint count stations with at least one valid or invalid ballot
    and fewer ballots issued than registered voters."""
    return _excluded(
        [
            (NO_BALLOTS, stations.cast < 1),
            (ISSUED_NOT_BELOW_REGISTERED, stations.issued >= stations.registered),
        ]
    )


def bin_steps(bin_width: float) -> int:
    """How many bins of ``bin_width`` pp span 0..100; the width must divide 100."""
    steps = round(100 / bin_width) if bin_width > 0 else 0
    if steps < 1 or abs(steps * bin_width - 100) > 1e-9 * 100:
        raise ValueError(f"{bin_width} does not divide 100 into whole bins.")
    return steps


def bin_index(numerator: np.ndarray, denominator: np.ndarray, steps: int) -> np.ndarray:
    """Index of the bin centred on a multiple of 100/steps pp holding 100·numerator/denominator
    pp; a value half-way between two centres goes to the upper one. Exact integers:
    floor(steps·num/den + 1/2) = (2·steps·num + den) // (2·den)."""
    numerator = numerator.astype(np.int64)
    denominator = denominator.astype(np.int64)
    return (2 * steps * numerator + denominator) // (2 * denominator)


def histogram(stations: Stations, *, of: str, bin_width: float) -> dict:
    steps = bin_steps(bin_width)
    kept, excluded = histogram_included(stations)
    if of == "turnout":
        numerator, denominator = stations.issued[kept], stations.registered[kept]
    elif of == "leader_result":
        numerator, denominator = stations.leader_votes[kept], stations.cast[kept]
    else:
        raise ValueError(f"unknown histogram '{of}'")
    index = bin_index(numerator, denominator, steps)
    station_counts = np.bincount(index, minlength=steps + 1)
    voter_counts = np.bincount(index, weights=stations.registered[kept], minlength=steps + 1)
    return {
        "of": of,
        "bin": bin_width,
        "bins": [
            {"center": _center(i, steps), "stations": int(s), "voters": int(v)}
            for i, (s, v) in enumerate(zip(station_counts, voter_counts, strict=True))
        ],
        "stations": int(kept.sum()),
        "excluded": excluded,
    }


def _center(index: int, steps: int) -> float:
    return round(100 * index / steps, 10)


def fingerprint(stations: Stations, *, bin_width: float) -> dict:
    steps = bin_steps(bin_width)
    kept, excluded = histogram_included(stations)
    turnout = bin_index(stations.issued[kept], stations.registered[kept], steps)
    result = bin_index(stations.leader_votes[kept], stations.cast[kept], steps)
    voters = np.bincount(
        turnout * (steps + 1) + result, weights=stations.registered[kept], minlength=(steps + 1) ** 2
    ).reshape(steps + 1, steps + 1)
    cells = [
        {"turnout": _center(int(t), steps), "leader_result": _center(int(r), steps), "voters": int(voters[t, r])}
        for t, r in zip(*np.nonzero(voters), strict=True)
    ]
    return {"bin": bin_width, "cells": cells, "stations": int(kept.sum()), "excluded": excluded}


# --- integer percentages -------------------------------------------------------------------------


def nearest_integer_percent(successes: np.ndarray, trials: np.ndarray) -> np.ndarray:
    """The integer percentage within ±0.05 pp of 100·successes/trials, or -1 when there is none.

    Exact: with j = round(100·k/n), |100·k/n − j| ≤ 1/20 ⇔ |2000·k − 20·j·n| ≤ n."""
    k = successes.astype(np.int64)
    n = trials.astype(np.int64)
    j = (200 * k + n) // (2 * n)
    near = np.abs(2000 * k - 20 * j * n) <= n
    return np.where(near, j, -1)


@dataclass
class IntegerExcess:
    """Observed and expected stations near integer percentages, per kind and per integer."""

    reps: int
    seed: int
    stations: int
    excluded: dict[str, int]
    observed: dict[str, np.ndarray] = field(default_factory=dict)  # kind -> per integer 0..100
    observed_total: dict[str, int] = field(default_factory=dict)
    expected: dict[str, np.ndarray] = field(default_factory=dict)  # kind -> mean per integer
    expected_total: dict[str, float] = field(default_factory=dict)  # kind -> mean stations per repetition
    expected_sd: dict[str, float] = field(default_factory=dict)  # kind -> sd of stations per repetition

    def as_dict(self) -> dict:
        kinds = {}
        for kind in ("turnout", "leader_result", "either"):
            kinds[kind] = {
                "observed": self.observed_total[kind],
                "expected": self.expected_total[kind],
                "excess": self.observed_total[kind] - self.expected_total[kind],
                "per_integer": [
                    {"percent": int(j), "observed": int(o), "expected": float(e)}
                    for j, o, e in zip(INTEGERS, self.observed[kind], self.expected[kind], strict=True)
                ],
            }
        return {"reps": self.reps, "seed": self.seed, "stations": self.stations, "excluded": self.excluded, **kinds}


def integer_included(stations: Stations) -> tuple[np.ndarray, dict[str, int]]:
    """Stations with at least 100 registered voters, a valid or invalid ballot, and turnout and
    leader's result both at most 99 %."""
    registered = np.maximum(stations.registered, 1)
    cast = np.maximum(stations.cast, 1)
    return _excluded(
        [
            (FEW_REGISTERED, stations.registered < INTEGER_MIN_REGISTERED),
            (NO_BALLOTS, stations.cast < 1),
            (TURNOUT_ABOVE, 100 * stations.issued > INTEGER_MAX_PERCENT * registered),
            (RESULT_ABOVE, 100 * stations.leader_votes > INTEGER_MAX_PERCENT * cast),
        ]
    )


def integer_excess(stations: Stations, *, reps: int, seed: int) -> IntegerExcess:
    """Stations whose turnout, leader's result, or either lies within ±0.05 pp of an integer
    percentage, against the expectation under binomial resampling of each station.

    The baseline redraws each station's ballots issued as Binomial(registered, turnout) and its
    leader's votes as Binomial(valid + invalid, result), independently, ``reps`` times, and counts
    the redrawn stations near an integer. Only the event "the draw lands near integer j" matters,
    so the draws are made in two exact steps instead of 10^8 binomial draws: whether a station
    lands near any integer in a repetition (a uniform against the exact binomial probability of
    all its windows), then, for the repetitions where it did, which integer (a multinomial split
    by each window's share). Same distribution, a fraction of the cost (docs/FORENSICS.md).
    """
    kept, excluded = integer_included(stations)
    turnout_pair = (stations.issued[kept], stations.registered[kept])
    result_pair = (stations.leader_votes[kept], stations.cast[kept])
    n = int(kept.sum())
    result = IntegerExcess(reps=reps, seed=seed, stations=n, excluded=excluded)

    observed_t = nearest_integer_percent(*turnout_pair)
    observed_r = nearest_integer_percent(*result_pair)
    result.observed["turnout"] = _per_integer([observed_t])
    result.observed["leader_result"] = _per_integer([observed_r])
    result.observed["either"] = _per_integer([observed_t, observed_r])
    result.observed_total["turnout"] = int((observed_t >= 0).sum())
    result.observed_total["leader_result"] = int((observed_r >= 0).sum())
    result.observed_total["either"] = int(((observed_t >= 0) | (observed_r >= 0)).sum())

    windows_t = _integer_windows(*turnout_pair)
    windows_r = _integer_windows(*result_pair)
    rng = np.random.default_rng(seed)
    totals = {kind: np.zeros(reps) for kind in ("turnout", "leader_result", "either")}
    hits_t = np.zeros(n, dtype=np.int64)
    hits_r = np.zeros(n, dtype=np.int64)
    hits_both = np.zeros(n, dtype=np.int64)
    for start in range(0, reps, REPS_PER_CHUNK):
        chunk = min(REPS_PER_CHUNK, reps - start)
        hit_t = rng.random((chunk, n)) < windows_t.total
        hit_r = rng.random((chunk, n)) < windows_r.total
        both = hit_t & hit_r
        totals["turnout"][start : start + chunk] = hit_t.sum(axis=1)
        totals["leader_result"][start : start + chunk] = hit_r.sum(axis=1)
        totals["either"][start : start + chunk] = (hit_t | hit_r).sum(axis=1)
        hits_t += hit_t.sum(axis=0)
        hits_r += hit_r.sum(axis=0)
        hits_both += both.sum(axis=0)
    per_t = windows_t.split(rng, hits_t)
    per_r = windows_r.split(rng, hits_r)
    same = _same_integer_split(rng, windows_t, windows_r, hits_both)
    for kind, counts in (("turnout", per_t), ("leader_result", per_r), ("either", per_t + per_r - same)):
        result.expected[kind] = counts / reps if reps else counts
        result.expected_total[kind] = float(totals[kind].mean()) if reps else 0.0
        result.expected_sd[kind] = float(totals[kind].std(ddof=1)) if reps > 1 else 0.0
    return result


def _per_integer(values: list[np.ndarray]) -> np.ndarray:
    """Stations at each integer 0..100 (-1: none); a station near the same integer in several
    arrays counts once there."""
    counts = np.zeros(len(INTEGERS))
    for i, current in enumerate(values):
        keep = current >= 0
        for earlier in values[:i]:
            keep &= current != earlier
        counts += np.bincount(current[keep], minlength=len(INTEGERS))[: len(INTEGERS)]
    return counts


class _Windows:
    """Per station (entries sorted by station), the integers it can land near under
    resampling and the exact probability of each; ``total`` is a station's probability of
    landing near any integer."""

    def __init__(self, station: np.ndarray, integer: np.ndarray, probability: np.ndarray, stations: int):
        self.station, self.integer, self.probability, self.stations = station, integer, probability, stations
        self.total = np.bincount(station, weights=probability, minlength=stations)

    def split(self, rng: np.random.Generator, hits: np.ndarray) -> np.ndarray:
        """Stations per integer, summed over repetitions, when station i landed near some
        integer in ``hits[i]`` repetitions: each landing picks a window by its share."""
        share = self.probability / np.maximum(self.total[self.station], 1e-300)
        counts = _multinomial_split(rng, self.station, share, hits, self.stations)
        return np.bincount(self.integer, weights=counts, minlength=len(INTEGERS))[: len(INTEGERS)]


def _same_integer_split(rng: np.random.Generator, turnout: _Windows, result: _Windows, both: np.ndarray) -> np.ndarray:
    """Per integer, repetitions in which a station landed near that same integer in turnout
    and in result (it then counts once for "either"), given ``both[i]`` repetitions in which
    station i landed near some integer in each."""
    width = len(INTEGERS)
    _, at_t, at_r = np.intersect1d(
        turnout.station * width + turnout.integer, result.station * width + result.integer, return_indices=True
    )
    station = turnout.station[at_t]
    share = (turnout.probability[at_t] / np.maximum(turnout.total[station], 1e-300)) * (
        result.probability[at_r] / np.maximum(result.total[station], 1e-300)
    )
    counts = _multinomial_split(rng, station, share, both, turnout.stations)
    return np.bincount(turnout.integer[at_t], weights=counts, minlength=width)[:width]


def _multinomial_split(
    rng: np.random.Generator, station: np.ndarray, share: np.ndarray, trials: np.ndarray, stations: int
) -> np.ndarray:
    """Per entry, a Multinomial(trials[station], shares of the station's entries) draw (shares
    of a station sum to at most 1; the rest is "none of them"), by conditional binomials over
    the entries' positions within their station."""
    per_station = np.bincount(station, minlength=stations)
    starts = np.concatenate(([0], np.cumsum(per_station)[:-1]))
    remaining = trials.astype(np.int64).copy()
    mass = np.ones(stations)
    counts = np.zeros(len(station), dtype=np.int64)
    for position in range(int(per_station.max()) if stations else 0):
        who = np.nonzero((per_station > position) & (remaining > 0))[0]
        if not who.size:
            break
        entry = starts[who] + position
        q = np.clip(share[entry] / np.maximum(mass[who], 1e-300), 0.0, 1.0)
        drawn = rng.binomial(remaining[who], q)
        counts[entry] = drawn
        remaining[who] -= drawn
        mass[who] -= share[entry]
    return counts


def _integer_windows(successes: np.ndarray, trials: np.ndarray) -> _Windows:
    """Exact binomial probability that Binomial(n, k/n) lands within ±0.05 pp of each integer
    percentage 0..100 it can reach (windows further than TAIL_SD standard deviations from the
    mean hold a negligible mass and are left out)."""
    k = successes.astype(np.int64)
    n = trials.astype(np.int64)
    stations = len(n)
    safe_n = np.maximum(n, 1)
    p = k / safe_n
    reach = TAIL_SD * np.sqrt(n * p * (1 - p)) + 1
    low_pp = np.clip(np.floor(100 * (n * p - reach) / safe_n), 0, INTEGERS[-1]).astype(np.int64)
    high_pp = np.clip(np.ceil(100 * (n * p + reach) / safe_n), 0, INTEGERS[-1]).astype(np.int64)
    per_station = high_pp - low_pp + 1
    station = np.repeat(np.arange(stations), per_station)
    integer = low_pp[station] + _ranks(per_station)
    # Counts k' near integer j: |2000·k' − 20·j·n| ≤ n, i.e. ceil((20jn − n)/2000) ≤ k' ≤ floor((20jn + n)/2000).
    nj = n[station]
    k_low = np.maximum(-((nj - 20 * integer * nj) // 2000), 0)
    k_high = np.minimum((20 * integer * nj + nj) // 2000, nj)
    per_window = np.maximum(k_high - k_low + 1, 0)
    window = np.repeat(np.arange(len(station)), per_window)
    k_values = k_low[window] + _ranks(per_window)
    mass = _binomial_pmf(k_values, nj[window], p[station[window]])
    probability = np.bincount(window, weights=mass, minlength=len(station))
    keep = probability > 0
    return _Windows(station[keep], integer[keep], probability[keep], stations)


def _ranks(sizes: np.ndarray) -> np.ndarray:
    """0, 1, ..., size-1 for each size in turn, concatenated."""
    total = int(sizes.sum())
    return np.arange(total) - np.repeat(np.cumsum(sizes) - sizes, sizes)


_LOG_FACTORIAL = np.zeros(1)


def _log_factorial(upto: int) -> np.ndarray:
    global _LOG_FACTORIAL
    if len(_LOG_FACTORIAL) <= upto:
        size = max(upto + 1, 2 * len(_LOG_FACTORIAL))
        _LOG_FACTORIAL = np.concatenate(([0.0], np.cumsum(np.log(np.arange(1, size, dtype=np.float64)))))
    return _LOG_FACTORIAL


def _binomial_pmf(k: np.ndarray, n: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Binomial(n, p) probability of k, from log-factorials; p < 1 for every included station
    (results and turnouts above 99 % are excluded), and p = 0 puts all mass on k = 0."""
    if k.size == 0:
        return np.zeros(0)
    log_factorial = _log_factorial(int(n.max()))
    log_p = np.log(np.maximum(p, 1e-300))
    log_q = np.log1p(-p)
    return np.exp(log_factorial[n] - log_factorial[k] - log_factorial[n - k] + k * log_p + (n - k) * log_q)
