"""A realistic, deterministic demo election (``seed_demo``), with anomalies the engine must find.

Shape: the 2024 presidential election in Moscow time, three days of voting from 08:00 to
20:00 local (one continuous window, 15 March 08:00 to 17 March 20:00, so the nights are
inside it and simply quiet). Each voter is a ``bulletin_issued`` followed minutes later by a
``vote_cast``; a few bulletins go unused and a few transactions are ``other``. Votes follow a
daily curve (a late-morning and an evening peak) with day 1 the busiest. Turnout is spread
evenly over 30-80 % and constituency sizes over a factor of 7.5 (like 20k-150k voters);
registered voters are scaled to the transaction budget so that turnout stays realistic
whatever ``transactions`` is.

Four constituencies carry one injected anomaly each, built with enough margin that the
rules of docs/METRICS.md#anomaly-rules fire for them and for no other constituency:

- ``velocity_spike``: a burst of ten times its normal votes in one afternoon hour;
- ``turnout_over_100``: 102 % of its registered voters vote (ballot stuffing), spread evenly
  over the curve so that no single hour of it looks like a spike;
- ``votes_exceed_bulletins``: from day 2 noon a quarter of that hour's votes, then every tenth
  vote, have no bulletin;
- ``outside_voting_window``: a few transactions in the hour before the polls open.

Each forms exactly one episode (docs/METRICS.md#episodes): its flagged hours are one run among the
constituency's hours with data. The bulletins missing at noon outnumber the bulletins whose
votes fall into the next hour, so the cumulative rule never lapses once it fires, and the
early transactions are all in one hour.

Everything is stored through the elections service layer (the one write path), then the
election is recomputed once in full and the dirty marks the load made are dropped, all in
one database transaction: an interrupted seed leaves nothing behind. It lives with metrics
because it needs both floors: observed data in, figures out.
"""

import math
import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from django.db import transaction
from django.db.models import Sum

from elections.models import Constituency, Election, TransactionKind
from elections.services import (
    TransactionRow,
    constituencies_upsert,
    election_save,
    elections_delete,
    transactions_ingest,
)
from elections.timebuckets import local_midnight_instant, zone
from metrics.models import Anomaly, AnomalyKind, DirtyBucket
from metrics.pipeline import election_recompute

DEFAULT_CODE = "demo-2024"
DEFAULT_CONSTITUENCIES = 40
DEFAULT_TRANSACTIONS = 300_000
DEFAULT_SEED = 2024
MIN_CONSTITUENCIES = 8  # four injected anomalies, and enough peers to judge spikes against
MIN_TRANSACTIONS = 2_000

TIMEZONE = "Europe/Moscow"
FIRST_DAY = date(2024, 3, 15)
DAYS = 3
OPEN_HOUR, CLOSE_HOUR = 8, 20
# Relative votes by local hour while the polls are open: a late-morning and an evening peak.
HOUR_CURVE = {8: 3.0, 9: 6.0, 10: 9.0, 11: 10.0, 12: 8.5, 13: 7.0, 14: 6.5, 15: 6.5, 16: 7.0, 17: 8.5, 18: 9.5, 19: 7.0}
DAY_WEIGHT = (1.25, 0.85, 1.0)
HOUR_NOISE = 0.15  # each constituency's hour deviates up to ±15 % from the curve
TURNOUT_RANGE = (0.30, 0.80)
SIZE_RANGE = (1.0, 7.5)
UNUSED_BULLETINS = 0.015
OTHER_TRANSACTIONS = 0.01
TX_PER_VOTER = 2 + UNUSED_BULLETINS + OTHER_TRANSACTIONS
VOTE_DELAY = (30, 540)  # seconds from bulletin to vote

STUFFED_TURNOUT = 1.02
SPIKE_FACTOR = 10
SPIKE_MIN_VOTES = 40
SPIKE_AT = (2, 14)  # day 2, 14:00 local
MISSING_BULLETINS_FROM = (2, 12)  # day 2, noon local
MISSING_BULLETIN_EVERY = 10
MISSING_AT_NOON_SHARE = 4  # a quarter of the noon hour's voters get no bulletin
OUTSIDE_PAIRS = 6  # bulletin+vote pairs in the half hour before opening
INGEST_BATCH = 20_000

DISTRICTS = (
    "Arbat",
    "Basmanny",
    "Zamoskvorechye",
    "Krasnoselsky",
    "Meshchansky",
    "Presnensky",
    "Tagansky",
    "Tverskoy",
    "Khamovniki",
    "Yakimanka",
    "Aeroport",
    "Begovoy",
    "Beskudnikovsky",
    "Voykovsky",
    "Golovinsky",
    "Dmitrovsky",
    "Koptevo",
    "Levoberezhny",
    "Savyolovsky",
    "Sokol",
    "Timiryazevsky",
    "Khovrino",
    "Khoroshyovsky",
    "Altufyevsky",
    "Babushkinsky",
    "Bibirevo",
    "Butyrsky",
    "Lianozovo",
    "Losinoostrovsky",
    "Marfino",
    "Maryina Roshcha",
    "Ostankinsky",
    "Otradnoye",
    "Rostokino",
    "Sviblovo",
    "Severnoye Medvedkovo",
    "Yuzhnoye Medvedkovo",
    "Yaroslavsky",
    "Bogorodskoye",
    "Veshnyaki",
    "Golyanovo",
    "Izmaylovo",
    "Kosino-Ukhtomsky",
    "Metrogorodok",
    "Novogireyevo",
    "Perovo",
    "Preobrazhenskoye",
    "Sokolinaya Gora",
    "Sokolniki",
    "Lefortovo",
)


class DemoError(ValueError):
    """The requested demo cannot be built (e.g. too few constituencies)."""


@dataclass
class DemoReport:
    code: str
    created: bool
    election_id: int
    constituencies: int = 0
    registered_voters: int = 0
    transactions: int = 0
    votes: int = 0
    participation_rate: float = 0.0
    injected: dict[str, str] = field(default_factory=dict)  # anomaly kind -> constituency code
    anomalies: dict[str, int] = field(default_factory=dict)  # kind -> anomalies (constituency-hours)
    flagged: dict[str, list[str]] = field(default_factory=dict)  # kind -> constituency codes
    load_seconds: float = 0.0
    recompute_seconds: float = 0.0


@dataclass
class _Plan:
    registered: list[int]
    turnout: list[float]
    injected: dict[str, int]  # kind -> constituency index


def _window() -> tuple[datetime, datetime]:
    tz = zone(TIMEZONE)
    start = datetime.combine(FIRST_DAY, datetime.min.time()).replace(hour=OPEN_HOUR, tzinfo=tz)
    end = datetime.combine(FIRST_DAY + timedelta(days=DAYS - 1), datetime.min.time()).replace(
        hour=CLOSE_HOUR, tzinfo=tz
    )
    return start.astimezone(UTC), end.astimezone(UTC)


def _open_hours() -> list[tuple[int, int, int]]:
    """(day 1-3, local hour, UTC epoch second of the hour's start) for every open hour."""
    tz = zone(TIMEZONE)
    hours = []
    for day in range(1, DAYS + 1):
        midnight = local_midnight_instant(
            datetime.combine(FIRST_DAY + timedelta(days=day - 1), datetime.min.time()), tz
        )
        for hour in HOUR_CURVE:
            hours.append((day, hour, int((midnight + timedelta(hours=hour)).timestamp())))
    return hours


def _plan(rng: random.Random, constituencies: int, transactions: int) -> _Plan:
    low, high = TURNOUT_RANGE
    # Evenly spaced, then shuffled: the spread (and so the spike rule's MAD) does not depend on luck.
    turnout = [low + (high - low) * (i + 0.5) / constituencies for i in range(constituencies)]
    rng.shuffle(turnout)
    sizes = [math.exp(rng.uniform(math.log(SIZE_RANGE[0]), math.log(SIZE_RANGE[1]))) for _ in range(constituencies)]
    kinds = [
        AnomalyKind.VELOCITY_SPIKE,
        AnomalyKind.TURNOUT_OVER_100,
        AnomalyKind.VOTES_EXCEED_BULLETINS,
        AnomalyKind.OUTSIDE_VOTING_WINDOW,
    ]
    injected = dict(zip(kinds, rng.sample(range(constituencies), len(kinds)), strict=True))
    turnout[injected[AnomalyKind.TURNOUT_OVER_100]] = STUFFED_TURNOUT
    voters_wanted = transactions / TX_PER_VOTER
    scale = voters_wanted / sum(s * t for s, t in zip(sizes, turnout, strict=True))
    registered = [max(100, round(scale * s)) for s in sizes]
    return _Plan(registered=registered, turnout=turnout, injected=injected)


def _hour_counts(rng: random.Random, total: int, hours: list[tuple[int, int, int]], noise: float) -> list[int]:
    """Split ``total`` over the open hours by the curve (with noise), exactly, by cumulative rounding."""
    weights = [HOUR_CURVE[h] * DAY_WEIGHT[d - 1] * rng.uniform(1 - noise, 1 + noise) for d, h, _ in hours]
    whole = sum(weights)
    counts, running, placed = [], 0.0, 0
    for w in weights:
        running += w
        upto = round(total * running / whole)
        counts.append(upto - placed)
        placed = upto
    return counts


def _constituency_transactions(
    rng: random.Random, *, index: int, plan: _Plan, hours: list, starts: int, ends: int
) -> Iterator[tuple[str, int]]:
    """(kind, UTC epoch second) of one constituency's transactions, voters in time order."""
    kind_of = {i: kind for kind, i in plan.injected.items()}.get(index)
    voters = round(plan.registered[index] * plan.turnout[index])
    # The stuffed constituency follows the curve exactly: its share of every hour is high
    # (about twice the median), and noise on top could push one hour into a spike.
    counts = _hour_counts(rng, voters, hours, 0.0 if kind_of == AnomalyKind.TURNOUT_OVER_100 else HOUR_NOISE)
    missing_from = next(t for d, h, t in hours if (d, h) == MISSING_BULLETINS_FROM)
    spike_hour = next(t for d, h, t in hours if (d, h) == SPIKE_AT)
    randrange = rng.randrange
    uniform = rng.random  # int(uniform() * n) is randrange(n) at a tenth of the cost
    delay_low, delay_span = VOTE_DELAY[0], VOTE_DELAY[1] - VOTE_DELAY[0]
    voter = 0
    for (_, _, hour_start), count in zip(hours, counts, strict=True):
        missing = kind_of == AnomalyKind.VOTES_EXCEED_BULLETINS and hour_start >= missing_from
        at_noon = max(1, count // MISSING_AT_NOON_SHARE) if missing and hour_start == missing_from else 0
        for i in range(count):
            issued = hour_start + int(uniform() * 3600)
            cast = min(issued + delay_low + int(uniform() * delay_span), ends - 1)
            voter += 1
            skip = missing and (i < at_noon or voter % MISSING_BULLETIN_EVERY == 0)
            if not skip:
                yield TransactionKind.BULLETIN_ISSUED, issued
            yield TransactionKind.VOTE_CAST, cast
        if kind_of == AnomalyKind.VELOCITY_SPIKE and hour_start == spike_hour:
            # A burst inside the hour: bulletins and votes both land in it.
            for _ in range(max(SPIKE_MIN_VOTES, SPIKE_FACTOR * count)):
                issued = hour_start + randrange(3000)
                yield TransactionKind.BULLETIN_ISSUED, issued
                yield TransactionKind.VOTE_CAST, issued + randrange(30, 540)
    weights = counts
    open_starts = [t for _, _, t in hours]
    if kind_of != AnomalyKind.VOTES_EXCEED_BULLETINS:
        for hour_start in rng.choices(open_starts, weights, k=round(voters * UNUSED_BULLETINS)):
            yield TransactionKind.BULLETIN_ISSUED, hour_start + randrange(3600)
    for hour_start in rng.choices(open_starts, weights, k=round(voters * OTHER_TRANSACTIONS)):
        yield TransactionKind.OTHER, min(hour_start + randrange(3600), ends - 1)
    if kind_of == AnomalyKind.OUTSIDE_VOTING_WINDOW:
        for _ in range(OUTSIDE_PAIRS):  # 07:30-07:50 on day 1: one flagged hour
            issued = starts - 1800 + randrange(1200)
            yield TransactionKind.BULLETIN_ISSUED, issued
            yield TransactionKind.VOTE_CAST, issued + randrange(30, 240)


def demo_election_seed(
    *,
    code: str = DEFAULT_CODE,
    constituencies: int = DEFAULT_CONSTITUENCIES,
    transactions: int = DEFAULT_TRANSACTIONS,
    seed: int = DEFAULT_SEED,
    reset: bool = False,
) -> DemoReport:
    """Create the demo election and compute its metrics; an existing one is kept unless ``reset``."""
    if constituencies < MIN_CONSTITUENCIES:
        raise DemoError(f"At least {MIN_CONSTITUENCIES} constituencies are needed (four carry anomalies).")
    if transactions < MIN_TRANSACTIONS:
        raise DemoError(f"At least {MIN_TRANSACTIONS} transactions are needed for a meaningful demo.")
    existing = Election.objects.filter(code=code).first()
    if existing and not reset:
        return _report(existing, created=False)

    rng = random.Random(f"{seed}:{code}")
    starts_at, ends_at = _window()
    hours = _open_hours()
    plan = _plan(rng, constituencies, transactions)
    started = time.perf_counter()
    with transaction.atomic():
        if existing:
            elections_delete(queryset=Election.objects.filter(pk=existing.pk))
        election = election_save(
            election=Election(
                code=code,
                name="Presidential election 2024 (demo data)",
                timezone=TIMEZONE,
                starts_at=starts_at,
                ends_at=ends_at,
            )
        )
        constituencies_upsert(
            election_id=election.id,
            wanted={
                f"c{i + 1:03d}": (
                    DISTRICTS[i % len(DISTRICTS)] + (f" {i // len(DISTRICTS) + 1}" if i >= len(DISTRICTS) else ""),
                    plan.registered[i],
                )
                for i in range(constituencies)
            },
        )
        ids = list(Constituency.objects.filter(election=election).order_by("code").values_list("id", flat=True))
        _load(rng, election, ids, plan, hours)
        loaded = time.perf_counter()
        election_recompute(election_id=election.id)
        # The full recompute covered every bucket the load marked; the marks are spent.
        DirtyBucket.objects.filter(election_id=election.id).delete()
    report = _report(election, created=True)
    report.injected = {kind: f"c{i + 1:03d}" for kind, i in plan.injected.items()}
    report.load_seconds = loaded - started
    report.recompute_seconds = time.perf_counter() - loaded
    return report


def _load(rng: random.Random, election: Election, ids: list[int], plan: _Plan, hours: list) -> None:
    starts, ends = int(election.starts_at.timestamp()), int(election.ends_at.timestamp())
    block_origin = starts - 86400
    # Subtle: hashes look random but ascend through the 256-bit space in load order, so the
    # unique index takes them like appends; random order costs SQLite twice the time once
    # the index outgrows its page cache.
    expected = sum(round(r * t) for r, t in zip(plan.registered, plan.turnout, strict=True)) * 3 + 1000
    step = (1 << 256) // expected
    assert step > 1 << 200
    getrandbits = rng.getrandbits
    sequence = 0
    # Subtle: one datetime per second reused, not one per transaction: a few hundred
    # thousand rows share a few hundred thousand distinct seconds at most, and the cache
    # keeps the seed fast without changing any value.
    instants: dict[int, datetime] = {}
    rows: list[TransactionRow] = []
    for index, constituency_id in enumerate(ids):
        for kind, ts in _constituency_transactions(rng, index=index, plan=plan, hours=hours, starts=starts, ends=ends):
            instant = instants.get(ts)
            if instant is None:
                instant = instants[ts] = datetime.fromtimestamp(ts, UTC)
            sequence += 1
            tx_hash = f"0x{sequence * step + getrandbits(200):064x}"
            rows.append(TransactionRow(tx_hash, election.id, constituency_id, kind, instant, (ts - block_origin) // 2))
            if len(rows) >= INGEST_BATCH:
                transactions_ingest(rows=rows)
                rows = []
    if rows:
        transactions_ingest(rows=rows)


def _report(election: Election, *, created: bool) -> DemoReport:
    constituencies = Constituency.objects.filter(election=election)
    totals = constituencies.aggregate(
        voters=Sum("registered_voters"), votes=Sum("total_votes_cast"), tx=Sum("total_transactions")
    )
    voters = totals["voters"] or 0
    report = DemoReport(
        code=election.code,
        created=created,
        election_id=election.id,
        constituencies=constituencies.count(),
        registered_voters=voters,
        transactions=totals["tx"] or 0,
        votes=totals["votes"] or 0,
        participation_rate=100.0 * (totals["votes"] or 0) / voters if voters else 0.0,
    )
    found = Anomaly.objects.filter(election=election).values_list("kind", "constituency__code")
    report.anomalies = dict(Counter(kind for kind, _ in found))
    flagged: dict[str, set[str]] = {}
    for kind, constituency_code in found:
        flagged.setdefault(kind, set()).add(constituency_code)
    report.flagged = {kind: sorted(codes) for kind, codes in flagged.items()}
    return report
