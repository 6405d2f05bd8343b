"""The anomaly rules of docs/METRICS.md#anomaly-rules: one small function per rule.

Each rule returns ``details`` (a JSON-able dict) when it fires and None when it does not.
Weights and thresholds are settings, read at call time so tests can override them.
"""

import math

import numpy as np
from django.conf import settings

from metrics.models import AnomalyKind

# 1.4826 × MAD estimates the standard deviation of normally distributed data.
MAD_TO_SIGMA = 1.4826


def weight(kind: str) -> float:
    return float(settings.ANOMALY_WEIGHTS[kind])


# A stream and its protocol disagree when their votes differ by more than this many, and by
# more than this share of the protocol's ballots (docs/METRICS.md#stream_protocol_mismatch).
MISMATCH_MIN_VOTES = 5
MISMATCH_SHARE = 0.005


def stream_protocol_mismatch(*, votes_cast: int, ballots_cast: int) -> dict | None:
    """The stream's votes against the protocol's ballots (valid + invalid)."""
    difference = abs(votes_cast - ballots_cast)
    if difference > max(MISMATCH_MIN_VOTES, MISMATCH_SHARE * ballots_cast):
        return {"votes_cast": votes_cast, "protocol_ballots": ballots_cast, "difference": difference}
    return None


def turnout_over_100(*, cumulative_votes: int, registered_voters: int) -> dict | None:
    if cumulative_votes > registered_voters:
        return {"cumulative_votes": cumulative_votes, "registered_voters": registered_voters}
    return None


def votes_exceed_bulletins(*, cumulative_votes: int, cumulative_bulletins: int) -> dict | None:
    if cumulative_votes > cumulative_bulletins:
        return {"cumulative_votes": cumulative_votes, "cumulative_bulletins": cumulative_bulletins}
    return None


def outside_voting_window(*, transactions_outside: int) -> dict | None:
    if transactions_outside > 0:
        return {"transactions_outside": transactions_outside}
    return None


def velocity_spikes(peers: dict[int, tuple[int, int]]) -> dict[int, dict]:
    """Judge one hour across an election: ``peers`` maps constituency id to (votes in the
    hour, registered voters) for every constituency with data that hour. Returns the
    spiking constituencies with their details."""
    count = len(peers)
    return hour_spikes(
        np.fromiter(peers.keys(), dtype=np.int64, count=count),
        np.fromiter((votes for votes, _ in peers.values()), dtype=np.int64, count=count),
        np.fromiter((voters for _, voters in peers.values()), dtype=np.int64, count=count),
    )


def hour_spikes(ids: np.ndarray, votes: np.ndarray, voters: np.ndarray) -> dict[int, dict]:
    """The velocity_spike rule on one hour's peers as parallel integer arrays (constituency
    ids, votes in the hour, registered voters): the one implementation of the rule.

    Subtle: vectorised because a national hour has 96,325 peers and every flush judges its
    hour again (docs/PERFORMANCE.md, "National scale"). The figures are those of the plain
    rule bit for bit: float64 shares and differences round as Python floats do, and the
    medians take the middle value or the halved sum of the middle two, as statistics.median."""
    count = len(ids)
    if count < settings.ANOMALY_SPIKE_MIN_PEERS:
        return {}
    shares = votes / voters
    m = _median(shares)
    mad = _median(np.abs(shares - m))
    threshold = settings.ANOMALY_SPIKE_K * MAD_TO_SIGMA * mad
    fires = np.flatnonzero((shares - m > threshold) & (votes >= settings.ANOMALY_SPIKE_MIN_VOTES))
    return {
        int(ids[i]): {"votes": int(votes[i]), "share": float(shares[i]), "median": m, "mad": mad, "peers": count}
        for i in fires
    }


def _median(values: np.ndarray) -> float:
    """statistics.median of a non-empty float array, in O(n) by partial sorting."""
    half = len(values) // 2
    if len(values) % 2:
        return float(np.partition(values, half)[half])
    low, high = np.partition(values, (half - 1, half))[half - 1 : half + 1]
    return (float(low) + float(high)) / 2


def magnitude(kind: str, details: dict) -> float | None:
    """How far one flagged hour is past its rule, per kind (docs/METRICS.md#anomaly-rules): an
    episode's ``peak`` is the largest of its hours'."""
    if kind == AnomalyKind.TURNOUT_OVER_100:
        return 100.0 * details["cumulative_votes"] / details["registered_voters"]
    if kind == AnomalyKind.VOTES_EXCEED_BULLETINS:
        return float(details["cumulative_votes"] - details["cumulative_bulletins"])
    if kind == AnomalyKind.VELOCITY_SPIKE:
        if not details["mad"]:
            return None
        return (details["share"] - details["median"]) / (MAD_TO_SIGMA * details["mad"])
    if kind == AnomalyKind.OUTSIDE_VOTING_WINDOW:
        return float(details["transactions_outside"])
    if kind == AnomalyKind.STREAM_PROTOCOL_MISMATCH and details.get("difference") is not None:
        return float(abs(details["difference"]))
    return None


def anomaly_score(weight_sum: float) -> float:
    """100 × (1 − e^(−S/10)), rounded to 2 decimals, S the sum of the weights of a
    constituency's episodes; 0 for a constituency with none."""
    if weight_sum <= 0:
        return 0.0
    return round(100 * (1 - math.exp(-weight_sum / 10)), 2)


CUMULATIVE_KINDS = (AnomalyKind.TURNOUT_OVER_100, AnomalyKind.VOTES_EXCEED_BULLETINS)
