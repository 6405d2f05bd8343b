"""Generated elections: the stored metrics equal the independent reference, exactly.

Each example builds an election in a random timezone (half-hour and 45-minute offsets, DST
in both directions, windows across fall-back nights and spring-forward gaps), ingests its
transactions through elections.services in two batches (the second one late, into old
hours, with repeated tx_hashes), recomputes incrementally from the dirty marks, changes a
constituency's registered voters, deletes some transactions, recomputes the whole election
(twice: idempotent), and rebuilds a wiped region with a partial scope (one constituency, an
hour range, some hours). After every step HourlyStats, Anomaly, the episodes and the
constituency figures must equal metrics/tests/reference.py with no tolerance, and the
episode events the step recorded must be exactly those between the reference's episodes
before and after it (late data merges, splits and moves episodes, deletions withdraw them): the product and the reference use
the same float formulas (100.0 * votes / voters, count / minutes, statistics.median), so
equality is exact and no tolerance is needed.

Out of scope: zones whose DST shift is 30 minutes (Australia/Lord_Howe), where a local hour
lasts 30 or 90 minutes, and transitions off the local hour (St John's before 2011 switched
at 00:01); ``_clean_transitions`` leaves those out.
"""

import os
import random
from datetime import UTC, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo

import pytest
from django.db import transaction
from django.db.models import Q
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from elections.models import Constituency, Election
from elections.services import constituency_save
from metrics.aggregation import Scope, metrics_recompute
from metrics.models import Anomaly, HourlyStats
from metrics.tests import checks, reference

HOUR = timedelta(hours=1)
ZONES = (
    "UTC",
    "Asia/Kolkata",  # +05:30: buckets start at :30 UTC
    "Asia/Kathmandu",  # +05:45
    "America/St_Johns",  # -03:30 / -02:30 with DST
    "Australia/Adelaide",  # +09:30 / +10:30, southern-hemisphere DST
    "Europe/London",
    "America/New_York",
    "Europe/Moscow",  # DST until 2011, then +04, back to +03 on 2014-10-26 (a fall-back night)
)
KIND_MIXES = {
    "votes": ("vote_cast",) * 4 + ("bulletin_issued",),
    "bulletins": ("bulletin_issued",) * 4 + ("vote_cast",),
    "mixed": ("vote_cast", "bulletin_issued", "other"),
    "only_votes": ("vote_cast",),
}
FIRST, LAST = datetime(2009, 1, 1, tzinfo=UTC), datetime(2031, 1, 1, tzinfo=UTC)

# 30 examples keep CI fast; METRICS_PROPERTY_EXAMPLES=500 for a deeper hunt by hand.
PROPERTY_SETTINGS = settings(
    max_examples=int(os.environ.get("METRICS_PROPERTY_EXAMPLES", "30")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


@cache
def _clean_transitions(zone_name: str) -> tuple[tuple[datetime, bool], ...]:
    """Offset changes of a zone between 2009 and 2030 that shift a whole hour on a local
    hour boundary (every one in ZONES except St John's before 2011), each with whether
    clocks go back."""
    tz = ZoneInfo(zone_name)
    found = []
    t, previous = FIRST, FIRST.astimezone(tz).utcoffset()
    while t < LAST:
        step = t + timedelta(hours=6)
        offset = step.astimezone(tz).utcoffset()
        if offset != previous:
            instant = t
            while instant.astimezone(tz).utcoffset() == previous:
                instant += timedelta(minutes=15)
            on_hour = instant.astimezone(tz).minute == 0 and (instant - HOUR).astimezone(tz).minute == 0
            if on_hour and abs(offset - previous) == HOUR:
                found.append((instant, offset < previous))
            previous = offset
        t = step
    return tuple(found)


@st.composite
def scenarios(draw):
    zone_name = draw(st.sampled_from(ZONES))
    transitions = _clean_transitions(zone_name)
    if transitions and draw(st.integers(0, 3)):
        # A window across a DST change: a fall-back night has two local 01:00 hours, a
        # spring-forward night none.
        back = draw(st.booleans())
        candidates = [t for t, goes_back in transitions if goes_back == back] or [t for t, _ in transitions]
        anchor = draw(st.sampled_from(candidates))
        starts_at = anchor - timedelta(seconds=draw(st.integers(0, 6 * 3600)))
    else:
        starts_at = datetime(2012, 1, 1, tzinfo=UTC) + timedelta(seconds=draw(st.integers(0, 18 * 365 * 86400)))
        anchor = None
    if draw(st.booleans()):
        starts_at = starts_at.replace(minute=0, second=0)  # on a UTC hour: mid-bucket in Kolkata
    length = timedelta(seconds=draw(st.integers(60, 30 * 3600)))
    ends_at = starts_at + length
    hours = int(length / HOUR) + 1

    n = draw(st.integers(1, 4) | st.integers(5, 8))  # five or more: spikes are judged
    if draw(st.booleans()):
        registered = [draw(st.sampled_from([100, 1000]))] * n  # alike places: spikes stand out
    else:
        registered = draw(st.lists(st.sampled_from([5, 20, 40, 100, 1000]), min_size=n, max_size=n))
    groups = draw(
        st.lists(
            st.tuples(
                st.integers(-1, n - 1),  # -1: a few transactions in every constituency (peers for spikes)
                st.integers(-2, hours + 1),  # hour offset from starts_at: some before, some after
                st.integers(1, 30),
                st.sampled_from(sorted(KIND_MIXES)),
                st.integers(0, 2**31),
                st.booleans(),  # arrives late, in the second batch
            ),
            min_size=1,
            max_size=12,
        )
    )
    # A burst of votes in one place while its peers are quiet: a velocity spike, if the
    # numbers say so. It may arrive late, so the incremental path has to re-judge the hour.
    burst = draw(st.tuples(st.integers(0, n - 1), st.integers(0, hours - 1), st.integers(15, 45), st.booleans()))
    edges = draw(
        st.lists(
            st.tuples(
                st.integers(0, n - 1),
                st.sampled_from(
                    ["starts_at", "ends_at", "before_end", "before_start", "anchor", "before_anchor", "boundary"]
                ),
                st.sampled_from(["vote_cast", "bulletin_issued", "other"]),
                st.booleans(),
            ),
            max_size=5,
        )
    )
    repeats = draw(st.lists(st.tuples(st.integers(0, 10**6), st.booleans(), st.booleans()), max_size=4))
    now = starts_at + timedelta(seconds=draw(st.integers(-3600, int(length.total_seconds()) + 3 * 3600)))
    now += timedelta(microseconds=draw(st.integers(0, 999_999)))
    voter_change = draw(st.none() | st.tuples(st.integers(0, n - 1), st.sampled_from([5, 50, 5000])))
    deletions = draw(st.lists(st.integers(0, 10**6), max_size=3))
    repair = draw(st.tuples(st.sampled_from(["constituency", "range", "hours"]), st.integers(0, 10**6)))
    return {
        "zone": zone_name,
        "starts_at": starts_at,
        "ends_at": ends_at,
        "anchor": anchor,
        "registered": registered,
        "groups": groups,
        "burst": burst,
        "edges": edges,
        "repeats": repeats,
        "now": now,
        "voter_change": voter_change,
        "deletions": deletions,
        "repair": repair,
    }


def _transactions(s: dict, cids: list[int]) -> tuple[list, list]:
    """Expand the drawn groups into (tx_hash, constituency, kind, timestamp) for two batches."""
    first, late = [], []
    serial = iter(range(10**9))
    for target, hour, count, mix, seed, is_late in s["groups"]:
        rng = random.Random(seed)
        batch = late if is_late else first
        base = s["starts_at"] + hour * HOUR
        if target == -1:
            plan = [(c, rng.randint(1, 3)) for c in cids]
        else:
            plan = [(cids[target], count)]
        for cid, k in plan:
            for _ in range(k):
                ts = base + timedelta(microseconds=rng.randrange(3600 * 10**6))
                batch.append((f"tx-{next(serial)}", cid, rng.choice(KIND_MIXES[mix]), ts))
    if s["anchor"]:
        # Both sides of the change: on a fall-back night, the two local 01:00 hours.
        first.extend(
            (f"tx-{next(serial)}", cids[0], "bulletin_issued", s["anchor"] + delta)
            for delta in (timedelta(minutes=-30), timedelta(minutes=30))
        )
    if s["burst"]:
        target, hour, votes, is_late = s["burst"]
        rng = random.Random(votes)
        base = s["starts_at"] + hour * HOUR
        (late if is_late else first).extend(
            (f"tx-{next(serial)}", cid, kind, base + timedelta(microseconds=rng.randrange(3600 * 10**6)))
            for cid in cids
            for kind in (
                ["bulletin_issued", "vote_cast"] * votes
                if cid == cids[target]
                else ["bulletin_issued"] + ["vote_cast"] * rng.randint(0, 3)
            )
        )
    points = {
        "starts_at": s["starts_at"],
        "ends_at": s["ends_at"],
        "before_end": s["ends_at"] - timedelta(microseconds=1),
        "before_start": s["starts_at"] - timedelta(microseconds=1),
        "anchor": s["anchor"] or s["starts_at"],
        "before_anchor": (s["anchor"] or s["starts_at"]) - timedelta(minutes=30),
        "boundary": reference.bucket(s["starts_at"], s["zone"]) + HOUR,
    }
    for index, point, kind, is_late in s["edges"]:
        (late if is_late else first).append((f"tx-{next(serial)}", cids[index], kind, points[point]))
    stored = first + late
    for pick, is_late, alter in s["repeats"]:
        tx_hash, cid, kind, ts = stored[pick % len(stored)]
        if alter:  # the same hash with other content: the first stored copy wins
            kind, ts = "other", ts + timedelta(hours=3)
        (late if is_late else first).append((tx_hash, cid, kind, ts))
    return first, late


@pytest.mark.django_db
@PROPERTY_SETTINGS
@given(s=scenarios())
def test_generated_elections_match_the_reference_incrementally_and_in_full(s):
    with transaction.atomic():
        _check_scenario(s)
        transaction.set_rollback(True)  # each example starts from an empty database


def _check_scenario(s: dict) -> None:
    note(repr(s))
    now = s["now"]
    election = Election.objects.create(
        code="generated", name="Generated", timezone=s["zone"], starts_at=s["starts_at"], ends_at=s["ends_at"]
    )
    constituencies = [
        Constituency.objects.create(election=election, code=f"c{i}", name=f"C{i}", registered_voters=voters)
        for i, voters in enumerate(s["registered"])
    ]
    cids = [c.id for c in constituencies]
    first, late = _transactions(s, cids)
    ref = reference.RefElection(
        tz=s["zone"],
        starts_at=s["starts_at"],
        ends_at=s["ends_at"],
        registered=dict(zip(cids, s["registered"], strict=False)),
    )

    episodes, seen, events = {}, 0, []

    def step_checked() -> None:
        nonlocal episodes, seen
        checks.assert_matches_reference(election.id, ref, now)
        after = reference.compute(ref, now)["episodes"]
        seen, names = checks.assert_events_between(election.id, episodes, after, seen=seen)
        episodes = after
        events.extend(names)

    # 1. The first batch, recomputed from its dirty marks.
    checks.ingest(election.id, first)
    ref.transactions.extend(first)
    checks.flush(election.id, now)
    step_checked()
    events.clear()  # what follows is corrections

    # 2. Late arrivals for old hours, and repeats: an incremental recompute of their marks.
    checks.ingest(election.id, late)
    ref.transactions.extend(late)
    checks.flush(election.id, now)
    step_checked()

    # 3. Registered voters change: every rate, turnout flag and spike share of that place.
    if s["voter_change"]:
        index, voters = s["voter_change"]
        constituencies[index].registered_voters = voters
        constituency_save(constituency=constituencies[index])
        ref.registered[cids[index]] = voters
        checks.flush(election.id, now)
        step_checked()

    # 4. Deletions: their buckets shrink or vanish, and with them their anomalies.
    stored = reference.stored(ref)
    gone = {stored[i % len(stored)][0] for i in s["deletions"]} if stored else set()
    if gone:
        checks.delete(gone)
        ref.transactions = [tx for tx in ref.transactions if tx[0] not in gone]
        checks.flush(election.id, now)
        step_checked()
    incremental = checks.db_snapshot(election.id)

    _label(s, incremental, events)

    # 5. A full recompute agrees with the incremental one, and running it again changes nothing.
    metrics_recompute(election_id=election.id, scope=Scope.election(), now=now)
    assert checks.assert_matches_reference(election.id, ref, now) == incremental
    metrics_recompute(election_id=election.id, scope=Scope.election(), now=now)
    assert checks.db_snapshot(election.id) == incremental

    # 6. Lost rows are rebuilt by a partial recompute (backfill's and the sweep's scopes).
    if incremental["hourly"]:
        q, scope = _region(s, cids, sorted({h for _, h in incremental["hourly"]}))
        HourlyStats.objects.filter(q).delete()
        Anomaly.objects.filter(q).delete()
        metrics_recompute(election_id=election.id, scope=scope, now=now)
        assert checks.assert_matches_reference(election.id, ref, now) == incremental
    # Steps 5 and 6 changed no episode: they recorded nothing.
    assert checks.assert_events_between(election.id, episodes, episodes, seen=seen)[1] == []


def _region(s: dict, cids: list[int], hours: list[datetime]) -> tuple[Q, Scope]:
    """A region of stored rows, and the Scope that must rebuild it."""
    region, pick = s["repair"]
    if region == "constituency":
        cid = cids[pick % len(cids)]
        return Q(constituency_id=cid), Scope.constituencies([cid])
    if region == "range":
        lo = hours[pick % len(hours)]
        hi = lo + 3 * HOUR
        # Mid-bucket limits: the buckets holding ``since`` and starting before ``until``.
        scope = Scope.election(since=lo + timedelta(minutes=10), until=hi - timedelta(minutes=10))
        return Q(hour__gte=lo, hour__lt=hi), scope
    picked = {hours[pick % len(hours)], hours[(pick // 7) % len(hours)]}
    return Q(hour__in=sorted(picked)), Scope.hours(picked)


def _label(s: dict, snapshot: dict, corrections: list[str]) -> None:
    """What the example exercised (pytest --hypothesis-show-statistics)."""
    tz = ZoneInfo(s["zone"])
    for kind in sorted({kind for _, _, kind in snapshot["anomalies"]}):
        event(f"anomaly {kind}")
    for name in sorted(set(corrections)):
        event(f"episode {name} by a correction")
    hours = sorted({h for _, h in snapshot["hourly"]})
    for (_, first_hour, _), episode in snapshot["episodes"].items():
        if episode["hours"] > 1 and episode["last_hour"] - first_hour >= episode["hours"] * HOUR:
            event("an episode across hours without data")
        if episode["hours"] > 1 and any(first_hour < h < episode["last_hour"] and h.minute == 30 for h in hours):
            event("an episode in a half-hour zone")
    labels = [(h.astimezone(tz).replace(tzinfo=None), h) for _, h in snapshot["hourly"]]
    if len({h for _, h in labels}) > len({label for label, _ in labels}):
        event("two buckets with one local label (fall-back night)")
    if s["anchor"] is not None:
        event("transactions around a DST change")
