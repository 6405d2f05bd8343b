"""forensics.figures against the plain-Python reference (forensics/tests/reference.py)."""

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forensics import figures
from forensics.tests import reference

OPTIONS = ["A", "B", "C"]


@st.composite
def station_dicts(draw, max_registered=3000):
    registered = draw(st.integers(1, max_registered))
    issued = draw(st.integers(0, registered + 20))
    cast = draw(st.integers(0, issued))
    invalid = draw(st.integers(0, cast))
    valid = cast - invalid
    a = draw(st.integers(0, valid))
    b = draw(st.integers(0, valid - a))
    c = draw(st.integers(0, valid - a - b))
    early = draw(st.integers(0, issued))
    outside = draw(st.integers(0, issued - early))
    return {
        "registered": registered,
        "early": early,
        "on_day": issued - early - outside,
        "outside": outside,
        "valid": valid,
        "invalid": invalid,
        "votes": [a, b, c],
    }


def as_stations(dicts: list[dict]) -> figures.Stations:
    rows = [
        (s["registered"], s["early"], s["on_day"], s["outside"], s["valid"], s["invalid"], s["votes"]) for s in dicts
    ]
    return figures.Stations.from_rows(rows, OPTIONS)


elections = st.lists(station_dicts(), min_size=1, max_size=40)


@given(elections)
def test_summary_matches_reference(dicts):
    assert figures.summary(as_stations(dicts)) == pytest.approx(reference.summary(dicts, OPTIONS))


@settings(max_examples=60)
@given(elections, st.sampled_from(["turnout", "leader_result"]), st.sampled_from([0.1, 0.2, 0.5, 1.0, 2.5, 10.0]))
def test_histograms_match_reference(dicts, of, width):
    result = figures.histogram(as_stations(dicts), of=of, bin_width=width)
    counts, voters = reference.histogram(dicts, of, Fraction(str(width)))
    assert [b["stations"] for b in result["bins"]] == counts
    assert [b["voters"] for b in result["bins"]] == voters
    assert [b["center"] for b in result["bins"]] == [round(i * width, 10) for i in range(len(counts))]
    assert result["bins"][-1]["center"] == 100
    assert result["stations"] == len(reference.histogram_stations(dicts))
    assert result["stations"] + sum(result["excluded"].values()) == len(dicts)


@settings(max_examples=60)
@given(elections, st.sampled_from([0.5, 1.0, 2.0, 5.0]))
def test_fingerprint_matches_reference(dicts, width):
    result = figures.fingerprint(as_stations(dicts), bin_width=width)
    expected = {
        (round(t * width, 10), round(r * width, 10)): v
        for (t, r), v in reference.fingerprint(dicts, Fraction(str(width))).items()
    }
    assert {(c["turnout"], c["leader_result"]): c["voters"] for c in result["cells"]} == expected


def test_bin_edges_go_to_the_upper_bin_exactly():
    # 1/2000 = 0.05 %: exactly half-way between the 0.0 and 0.1 bins.
    stations = figures.Stations.from_rows([(2000, 0, 1, 0, 1, 0, [1, 0, 0])], OPTIONS)
    bins = figures.histogram(stations, of="turnout", bin_width=0.1)["bins"]
    assert bins[1]["stations"] == 1


@given(st.integers(1, 10**6).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_nearest_integer_percent_matches_fractions(pair):
    k, n = pair
    found = int(figures.nearest_integer_percent(np.array([k]), np.array([n]))[0])
    assert found == (reference.near_integer(k, n) if reference.near_integer(k, n) is not None else -1)


def test_window_edges_are_inclusive():
    # 1001/2000 = 50.05 % is within 0.05 pp of 50; 1002/2000 = 50.1 % is not.
    found = figures.nearest_integer_percent(np.array([1001, 1002, 999, 1000]), np.array([2000] * 4))
    assert found.tolist() == [50, -1, 50, 50]


@settings(max_examples=40)
@given(st.lists(station_dicts(max_registered=1500), min_size=1, max_size=40))
def test_integer_observed_counts_match_reference(dicts):
    result = figures.integer_excess(as_stations(dicts), reps=2, seed=1)
    assert result.observed_total == reference.integer_observed(dicts)
    assert result.stations == len(reference.integer_stations(dicts))
    assert result.stations + sum(result.excluded.values()) == len(dicts)
    for kind in ("turnout", "leader_result"):
        assert result.observed[kind].sum() == result.observed_total[kind]


def realistic(count: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    dicts = []
    for _ in range(count):
        registered = int(rng.integers(100, 1200))
        issued = int(rng.binomial(registered, rng.uniform(0.3, 0.8)))
        invalid = int(rng.integers(0, 5))
        valid = max(issued - invalid, 1)
        a = int(rng.binomial(valid, rng.uniform(0.35, 0.7)))
        b = int(rng.binomial(valid - a, 0.6))
        dicts.append(
            {"registered": registered, "early": 0, "on_day": valid + invalid, "outside": 0, "valid": valid}
            | {"invalid": invalid, "votes": [a, b, valid - a - b]}
        )
    return dicts


def test_monte_carlo_expectation_agrees_with_the_exact_mean_within_noise():
    dicts = realistic(60, seed=7)
    reps = 3000
    result = figures.integer_excess(as_stations(dicts), reps=reps, seed=42)
    exact = reference.integer_expected(dicts)
    for kind in ("turnout", "leader_result", "either"):
        noise = result.expected_sd[kind] / math.sqrt(reps)
        assert abs(result.expected_total[kind] - exact[kind]) < 4.5 * noise + 1e-9, kind
    # Every landing is at one integer: per-integer means add up to the mean total; for "either"
    # a station near two different integers counts at both but once in the total.
    for kind in ("turnout", "leader_result"):
        assert result.expected[kind].sum() == pytest.approx(result.expected_total[kind], abs=1e-9)
    either = result.expected["either"].sum()
    assert either >= result.expected_total["either"] - 1e-9
    assert either <= result.expected_total["turnout"] + result.expected_total["leader_result"] + 1e-9


def test_monte_carlo_matches_drawing_the_binomials_directly():
    """The spec's procedure, literally: redraw each station's counts and test them."""
    dicts = realistic(200, seed=11)
    stations = as_stations(dicts)
    reps = 400
    result = figures.integer_excess(stations, reps=reps, seed=3)
    kept, _ = figures.integer_included(stations)
    n_t, k_t = stations.registered[kept], stations.issued[kept]
    n_r, k_r = stations.cast[kept], stations.leader_votes[kept]
    rng = np.random.default_rng(99)
    direct = {"turnout": [], "leader_result": [], "either": []}
    for _ in range(reps):
        t = figures.nearest_integer_percent(rng.binomial(n_t, k_t / n_t), n_t)
        r = figures.nearest_integer_percent(rng.binomial(n_r, k_r / n_r), n_r)
        t_hit, r_hit = t >= 0, r >= 0
        direct["turnout"].append(t_hit.sum())
        direct["leader_result"].append(r_hit.sum())
        direct["either"].append((t_hit | r_hit).sum())
    for kind, counts in direct.items():
        noise = math.hypot(np.std(counts), result.expected_sd[kind]) / math.sqrt(reps)
        assert abs(np.mean(counts) - result.expected_total[kind]) < 4.5 * noise, kind


def test_injected_integer_stations_show_up_as_the_excess():
    dicts = realistic(3000, seed=5)
    injected = 150
    for i, s in enumerate(dicts[:injected]):
        # Ballots issued to exactly 60 % of the registered voters.
        s["registered"] = 500 + 100 * (i % 7)
        issued = s["registered"] * 60 // 100
        valid = issued - s["invalid"]
        s.update(early=0, on_day=issued, outside=0, valid=valid, votes=[valid // 2, valid - valid // 2 - 1, 1])
    result = figures.integer_excess(as_stations(dicts), reps=1000, seed=42)
    excess = result.observed_total["turnout"] - result.expected_total["turnout"]
    noise = math.sqrt(result.expected_total["turnout"]) + result.expected_sd["turnout"]
    assert abs(excess - injected) < 4 * noise
    per_60 = result.observed["turnout"][60] - result.expected["turnout"][60]
    assert per_60 > injected - 4 * math.sqrt(result.expected["turnout"][60] + 1)
    # Elsewhere nothing stands out.
    others = np.delete(result.observed["turnout"] - result.expected["turnout"], 60)
    assert np.abs(others).max() < 4 * math.sqrt(result.expected["turnout"].max()) + 3


def test_same_seed_same_baseline_and_reps_and_seed_reported():
    stations = as_stations(realistic(300, seed=2))
    first = figures.integer_excess(stations, reps=50, seed=9).as_dict()
    again = figures.integer_excess(stations, reps=50, seed=9).as_dict()
    other = figures.integer_excess(stations, reps=50, seed=10).as_dict()
    assert first == again
    assert first["either"]["expected"] != other["either"]["expected"]
    assert (first["reps"], first["seed"]) == (50, 9)
    assert [p["percent"] for p in first["turnout"]["per_integer"]] == list(range(101))


def test_exclusions_are_counted_under_their_first_reason():
    rows = [
        (99, 0, 50, 0, 50, 0, [30, 20, 0]),  # too few registered
        (1000, 0, 0, 0, 0, 0, [0, 0, 0]),  # nothing cast
        (1000, 0, 995, 0, 995, 0, [500, 495, 0]),  # turnout 99.5 %
        (1000, 0, 500, 0, 500, 0, [499, 1, 0]),  # result 99.8 %
        (1000, 0, 500, 0, 500, 0, [300, 200, 0]),
    ]
    stations = figures.Stations.from_rows(rows, OPTIONS)
    result = figures.integer_excess(stations, reps=5, seed=1)
    assert result.stations == 1
    assert result.excluded == {
        figures.FEW_REGISTERED: 1,
        figures.NO_BALLOTS: 1,
        figures.TURNOUT_ABOVE: 1,
        figures.RESULT_ABOVE: 1,
    }


def test_empty_election():
    stations = figures.Stations.from_rows([], OPTIONS)
    assert figures.summary(stations)["stations"] == 0
    assert figures.histogram(stations, of="turnout", bin_width=1)["stations"] == 0
    assert figures.integer_excess(stations, reps=10, seed=1).as_dict()["either"]["expected"] == 0


@pytest.mark.parametrize("width", [0.3, 7, 0, 101])
def test_bins_that_do_not_divide_100_are_refused(width):
    with pytest.raises(ValueError, match="does not divide 100"):
        figures.bin_steps(width)
