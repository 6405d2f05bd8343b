"""metrics.anomalies: each rule of docs/METRICS.md firing and not firing, alone and through a
real ingest and recompute; and the anomaly score."""

import statistics
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from elections.models import Constituency
from elections.services import election_save
from elections.tests.factories import ConstituencyFactory, ElectionFactory
from metrics import anomalies
from metrics.models import Anomaly, AnomalyKind, HourlyStats
from metrics.tests import checks

HOUR = timedelta(hours=1)
T0 = datetime(2024, 9, 6, 5, 0, tzinfo=UTC)
NOW = T0 + 20 * HOUR
VOTE, BULLETIN = "vote_cast", "bulletin_issued"


def tracked(voters=(1000,), **window) -> checks.Tracked:
    window = {"starts_at": T0, "ends_at": T0 + 12 * HOUR, **window}
    election = ElectionFactory(timezone="Europe/Moscow", **window)
    return checks.Tracked(election, [ConstituencyFactory(election=election, registered_voters=v) for v in voters])


def flagged(t: checks.Tracked, index: int = 0) -> set[tuple[datetime, str]]:
    return set(Anomaly.objects.filter(constituency_id=t.ids[index]).values_list("hour", "kind"))


# --- the rules alone ----------------------------------------------------------------------


def test_turnout_over_100_fires_only_above_the_register():
    assert anomalies.turnout_over_100(cumulative_votes=100, registered_voters=100) is None
    assert anomalies.turnout_over_100(cumulative_votes=101, registered_voters=100) == {
        "cumulative_votes": 101,
        "registered_voters": 100,
    }


def test_votes_exceed_bulletins_fires_only_above_the_bulletins():
    assert anomalies.votes_exceed_bulletins(cumulative_votes=7, cumulative_bulletins=7) is None
    assert anomalies.votes_exceed_bulletins(cumulative_votes=8, cumulative_bulletins=7) == {
        "cumulative_votes": 8,
        "cumulative_bulletins": 7,
    }


def test_outside_voting_window_fires_on_any_transaction_outside():
    assert anomalies.outside_voting_window(transactions_outside=0) is None
    assert anomalies.outside_voting_window(transactions_outside=1) == {"transactions_outside": 1}


def _peers(*votes: int, voters: int = 1000) -> dict[int, tuple[int, int]]:
    return {cid: (v, voters) for cid, v in enumerate(votes)}


def test_velocity_spike_needs_five_places_with_data():
    assert anomalies.velocity_spikes(_peers(1, 1, 1, 40)) == {}
    assert set(anomalies.velocity_spikes(_peers(1, 1, 1, 1, 40))) == {4}


def test_velocity_spike_needs_twenty_votes():
    assert anomalies.velocity_spikes(_peers(1, 1, 1, 1, 1, 19, voters=100)) == {}
    assert set(anomalies.velocity_spikes(_peers(1, 1, 1, 1, 1, 20, voters=100))) == {5}


def test_velocity_spike_threshold_is_k_robust_sigmas_above_the_median():
    # Shares 20..22 per mille: median 21, MAD 1, so the threshold is 5 x 1.4826 = 7.413 above.
    assert anomalies.velocity_spikes(_peers(20, 20, 21, 21, 22, 28)) == {}
    spikes = anomalies.velocity_spikes(_peers(20, 20, 21, 21, 22, 29))
    assert set(spikes) == {5}
    assert spikes[5] == pytest.approx({"votes": 29, "share": 0.029, "median": 0.021, "mad": 0.001, "peers": 6})


def test_velocity_spike_with_zero_mad_fires_on_any_share_above_the_median():
    """Most places alike (MAD = 0): the threshold is 0, so any place above the median with
    at least 20 votes stands out; places equal to the median never do."""
    assert set(anomalies.velocity_spikes(_peers(0, 0, 0, 20, 25))) == {3, 4}
    assert anomalies.velocity_spikes(_peers(30, 30, 30, 30, 30)) == {}


def test_velocity_spike_compares_shares_of_the_register_not_raw_votes():
    # 40 votes of a 10,000-voter place is a smaller share than 1 vote of a 100-voter one.
    peers = {0: (1, 100), 1: (1, 100), 2: (1, 100), 3: (1, 100), 4: (40, 10_000)}
    assert anomalies.velocity_spikes(peers) == {}


@given(
    st.lists(
        st.tuples(st.integers(0, 400), st.integers(1, 5000)) | st.tuples(st.integers(0, 40), st.just(1000)),
        min_size=5,
        max_size=60,
    )
)
def test_velocity_spikes_match_the_plain_rule_to_the_last_bit(rows):
    # The vectorised rule against docs/METRICS.md#velocity_spike written with
    # statistics.median: the same spikes, and details equal as floats, not approximately.
    peers = dict(enumerate(rows))
    shares = {c: votes / voters for c, (votes, voters) in peers.items()}
    m = statistics.median(shares.values())
    mad = statistics.median([abs(x - m) for x in shares.values()])
    expected = {
        c: {"votes": peers[c][0], "share": x, "median": m, "mad": mad, "peers": len(peers)}
        for c, x in shares.items()
        if x - m > 5 * 1.4826 * mad and peers[c][0] >= 20
    }
    found = anomalies.velocity_spikes(peers)
    assert found == expected
    assert all(type(value) is type(expected[c][name]) for c in found for name, value in found[c].items())


def test_thresholds_and_weights_are_settings(settings):
    settings.ANOMALY_SPIKE_MIN_PEERS = 3
    settings.ANOMALY_SPIKE_MIN_VOTES = 5
    settings.ANOMALY_WEIGHTS = {**settings.ANOMALY_WEIGHTS, "velocity_spike": 4}
    assert set(anomalies.velocity_spikes(_peers(0, 0, 6))) == {2}
    assert anomalies.weight(AnomalyKind.VELOCITY_SPIKE) == 4.0


@pytest.mark.parametrize(
    ("weight_sum", "score"),
    [(0, 0.0), (1, 9.52), (2, 18.13), (3, 25.92), (8, 55.07), (11, 66.71), (100, 100.0)],
)
def test_anomaly_score_is_100_times_one_minus_e_to_the_minus_s_over_10_rounded(weight_sum, score):
    assert anomalies.anomaly_score(weight_sum) == score


# --- the rules through ingest and recompute -------------------------------------------------


@pytest.mark.django_db
def test_turnout_over_100_fires_from_the_hour_the_register_is_passed():
    t = tracked(voters=(10,))
    t.add(0, BULLETIN, T0 + timedelta(minutes=1), n=20)
    t.add(0, VOTE, T0 + timedelta(minutes=2), n=10)  # exactly 100%: not an anomaly
    t.add(0, VOTE, T0 + 2 * HOUR, n=1)  # 110%
    t.add(0, BULLETIN, T0 + 3 * HOUR)  # still 110% at the end of this hour
    t.flush(NOW)
    assert flagged(t) == {
        (T0 + 2 * HOUR, AnomalyKind.TURNOUT_OVER_100),
        (T0 + 3 * HOUR, AnomalyKind.TURNOUT_OVER_100),
    }
    anomaly = Anomaly.objects.get(hour=T0 + 2 * HOUR)
    assert (anomaly.weight, anomaly.details) == (5.0, {"cumulative_votes": 11, "registered_voters": 10})
    t.check(NOW)


@pytest.mark.django_db
def test_votes_exceed_bulletins_is_judged_on_cumulative_counts():
    t = tracked()
    t.add(0, BULLETIN, T0 + timedelta(minutes=5), n=3)
    t.add(0, VOTE, T0 + HOUR + timedelta(minutes=5), n=3)  # votes in a later hour: fine
    t.add(0, VOTE, T0 + 2 * HOUR + timedelta(minutes=5))  # a fourth vote for three bulletins
    t.flush(NOW)
    assert flagged(t) == {(T0 + 2 * HOUR, AnomalyKind.VOTES_EXCEED_BULLETINS)}

    t.add(0, BULLETIN, T0 + 2 * HOUR + timedelta(minutes=59))  # its bulletin arrives late
    t.flush(NOW)
    assert flagged(t) == set()
    t.check(NOW)


@pytest.mark.django_db
def test_outside_voting_window_is_inclusive_at_the_start_and_exclusive_at_the_end():
    ends_at = T0 + 3 * HOUR + timedelta(minutes=30)
    t = tracked(voters=(1000, 1000, 1000, 1000), ends_at=ends_at)
    t.add(0, BULLETIN, T0)  # at starts_at: inside
    t.add(1, BULLETIN, ends_at - timedelta(microseconds=1))  # the last instant inside
    t.add(2, BULLETIN, ends_at)  # at ends_at: outside
    t.add(3, BULLETIN, T0 - timedelta(microseconds=1))  # before starts_at: outside
    t.flush(NOW)
    assert flagged(t, 0) == flagged(t, 1) == set()
    assert flagged(t, 2) == {(T0 + 3 * HOUR, AnomalyKind.OUTSIDE_VOTING_WINDOW)}
    assert flagged(t, 3) == {(T0 - HOUR, AnomalyKind.OUTSIDE_VOTING_WINDOW)}
    assert Anomaly.objects.get(constituency_id=t.ids[2]).details == {"transactions_outside": 1}
    # Counted all the same: being outside is an anomaly, not a reason to drop data.
    assert Constituency.objects.get(pk=t.ids[2]).total_transactions == 1
    t.check(NOW)


@pytest.mark.django_db
def test_outside_voting_window_follows_a_moved_window():
    t = tracked()
    t.add(0, BULLETIN, T0 - timedelta(minutes=10))
    t.flush(NOW)
    assert flagged(t) == {(T0 - HOUR, AnomalyKind.OUTSIDE_VOTING_WINDOW)}

    election = t.election
    election.starts_at = T0 - HOUR
    election_save(election=election)
    t.ref.starts_at = election.starts_at
    t.flush(NOW)
    assert flagged(t) == set()
    t.check(NOW)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("places", "burst", "spikes"),
    [
        (4, 40, False),  # four places: not judged
        (5, 40, True),
        (5, 19, False),  # too few votes, however far above its peers
        (6, 20, True),
    ],
)
def test_velocity_spike_through_recompute(places, burst, spikes):
    t = tracked(voters=(1000,) * places)
    hour = T0 + HOUR
    for i in range(places - 1):
        t.add(i, BULLETIN, hour + timedelta(minutes=i))
        t.add(i, VOTE, hour + timedelta(minutes=i))
    t.add(places - 1, BULLETIN, hour, n=burst)
    t.add(places - 1, VOTE, hour + timedelta(minutes=30), n=burst)
    t.flush(NOW)
    expected = {(hour, AnomalyKind.VELOCITY_SPIKE)} if spikes else set()
    assert flagged(t, places - 1) == expected
    assert HourlyStats.objects.get(constituency_id=t.ids[-1]).anomaly_count == len(expected)
    t.check(NOW)


@pytest.mark.django_db
def test_anomaly_count_and_score_sum_every_rule():
    t = tracked(voters=(2,))
    t.add(0, VOTE, T0 - timedelta(minutes=5), n=3)  # turnout 150%, no bulletins, before the window
    t.flush(NOW)
    row = HourlyStats.objects.get(constituency_id=t.ids[0])
    assert row.anomaly_count == 3
    c = Constituency.objects.get(pk=t.ids[0])
    assert (c.total_anomalies, c.anomaly_score) == (3, 59.34)  # S = 5 + 3 + 1 = 9
    t.check(NOW)


@pytest.mark.django_db
def test_a_constituency_without_anomalies_scores_zero():
    t = tracked()
    t.add(0, BULLETIN, T0 + timedelta(minutes=1))
    t.add(0, VOTE, T0 + timedelta(minutes=2))
    t.flush(NOW)
    c = Constituency.objects.get(pk=t.ids[0])
    assert (c.total_anomalies, c.anomaly_score) == (0, 0.0)
