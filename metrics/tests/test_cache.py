"""metrics/cache.py: one computation per key under a burst of misses, O(1) invalidation by
election version, TTL by election phase, and reads that survive a cache outage."""

import logging
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.test import TestCase
from django.urls import reverse
from django.utils import timezone as dj_timezone

from elections.tests.factories import ElectionFactory
from metrics import selectors
from metrics.cache import MetricsCache, election_version_raise, metrics_cache
from metrics.tests.test_selectors import ingest_and_recompute, seeded_election

# A real Redis server address where nothing listens: connections are refused, as in an outage.
UNREACHABLE_REDIS = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": "redis://127.0.0.1:6390/0",
        "OPTIONS": {
            "CLIENT_CLASS": "django_redis.client.DefaultClient",
            "SOCKET_CONNECT_TIMEOUT": 0.2,
            "SOCKET_TIMEOUT": 0.2,
        },
    }
}


class Counted:
    """Wraps a compute function to count its calls (the function itself runs for real)."""

    def __init__(self, func, delay: float = 0.0):
        self.func, self.delay, self.calls = func, delay, 0
        self.lock = threading.Lock()

    def __call__(self, *args, **kwargs):
        with self.lock:
            self.calls += 1
        time.sleep(self.delay)
        return self.func(*args, **kwargs)


# --- get_or_compute ----------------------------------------------------------------------------


def test_a_burst_of_misses_computes_once():
    compute = Counted(lambda: {"value": 42}, delay=0.3)
    results = []

    def read():
        results.append(metrics_cache.get_or_compute("test:burst", compute, 60))

    threads = [threading.Thread(target=read) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert compute.calls == 1
    assert [value for value, _ in results] == [{"value": 42}] * 8
    assert sorted(hit for _, hit in results) == [False] + [True] * 7


def test_a_failed_computation_hands_over_to_a_waiter_at_once():
    attempts = []

    def compute():
        attempts.append(threading.current_thread().name)
        time.sleep(0.2)
        if len(attempts) == 1:
            raise RuntimeError("database went away")
        return "fresh"

    outcomes = {}

    def read(name):
        try:
            outcomes[name] = metrics_cache.get_or_compute("test:handover", compute, 60)[0]
        except RuntimeError as error:
            outcomes[name] = str(error)

    threads = [threading.Thread(target=read, args=(f"r{i}",), name=f"r{i}") for i in range(4)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
        time.sleep(0.02)
    for thread in threads:
        thread.join()
    assert len(attempts) == 2  # the failure, then exactly one successor
    assert sorted(outcomes.values()) == ["database went away", "fresh", "fresh", "fresh"]
    assert time.monotonic() - started < 2  # nobody sat out the 5 s lock wait


@pytest.mark.django_db
def test_invalidation_makes_every_read_of_the_election_stale_and_only_them():
    first, second = ElectionFactory(), ElectionFactory()
    compute = Counted(lambda: {"value": 42})

    def reads():
        return [
            metrics_cache.election_read(first.id, "x", compute, 60).hit,
            metrics_cache.election_read(first.id, "y", compute, 60, page=2).hit,
            metrics_cache.election_read(second.id, "x", compute, 60).hit,
            metrics_cache.global_read("dashboard", compute, 60).hit,
        ]

    assert reads() == [False, False, False, False]
    assert reads() == [True, True, True, True]
    metrics_cache.election_version_bump(first.id)
    assert reads() == [False, False, True, False]
    assert compute.calls == 7


@pytest.mark.django_db
def test_a_cached_read_is_one_round_trip(django_assert_num_queries):
    """The version and the entry come back together: a hit costs one cache call and no query."""
    election = ElectionFactory()
    metrics_cache.election_read(election.id, "x", lambda: {"value": 1}, 60)
    calls, undo = spied_calls(metrics_cache.backend)
    try:
        with django_assert_num_queries(0):
            cached = metrics_cache.election_read(election.id, "x", lambda: {"value": 2}, 60)
    finally:
        undo()
    assert (cached.value, cached.hit) == ({"value": 1}, True)
    assert [name for name, _ in calls] == ["get_many"]


def spied_calls(backend, names=("get", "get_many", "add", "set")):
    """Installs spies on the backend's methods; returns (calls as (name, first argument), undo)."""
    calls, depth = [], []

    def spy(name, original):
        def call(*args, **kwargs):
            if not depth:  # the local-memory backend's get_many calls its own get
                calls.append((name, args[0] if args else None))
            depth.append(name)
            try:
                return original(*args, **kwargs)
            finally:
                depth.pop()

        return call

    for name in names:
        setattr(backend, name, spy(name, getattr(backend, name)))

    def undo():
        for name in names:
            delattr(backend, name)

    return calls, undo


@pytest.mark.django_db
def test_a_hit_on_an_entry_this_process_read_fetches_only_the_published_version(django_assert_num_queries):
    """The process keeps the entry it read; a hit then asks only for the published version
    (on Redis, answered in process until Redis invalidates it: election_monitor.tracked_reads),
    not for the whole entry (docs/PERFORMANCE.md, item 6)."""
    election = ElectionFactory()
    metrics_cache.election_read(election.id, "x", lambda: {"value": 1}, 60)  # computed
    metrics_cache.election_read(election.id, "x", lambda: {"value": 2}, 60)  # read from the cache
    calls, undo = spied_calls(metrics_cache.backend, ("get", "get_many", "add", "set", "tracked_get"))
    try:
        with django_assert_num_queries(0):
            cached = metrics_cache.election_read(election.id, "x", lambda: {"value": 3}, 60)
    finally:
        undo()
    assert (cached.value, cached.hit) == ({"value": 1}, True)
    assert calls == [("tracked_get", metrics_cache._version_key(election.id))]


@pytest.mark.django_db
def test_a_version_published_by_another_process_retires_the_kept_entry_at_once():
    """Another process's recompute does not clear this process's memos: the published
    version alone must make the kept entry stale, on the next read."""
    election = ElectionFactory()
    reads = [metrics_cache.election_read(election.id, "x", lambda: "old", 60) for _ in range(3)]
    assert [r.hit for r in reads] == [False, True, True]
    # What election_version_bump does in another process: the database, then the cache.
    version = election_version_raise(election.id)
    metrics_cache.set(metrics_cache._version_key(election.id), version, None)
    fresh = metrics_cache.election_read(election.id, "x", lambda: "new", 60)
    assert (fresh.value, fresh.hit, fresh.etag != reads[0].etag) == ("new", False, True)


@pytest.mark.django_db
def test_a_kept_entry_expires_with_the_cached_one():
    election = ElectionFactory()
    for _ in range(2):
        metrics_cache.election_read(election.id, "x", lambda: "first", 1)
    metrics_cache.global_read("g", lambda: "first", 1)
    metrics_cache.global_read("g", lambda: "first", 1)
    time.sleep(1.2)
    assert metrics_cache.election_read(election.id, "x", lambda: "second", 1).value == "second"
    assert metrics_cache.global_read("g", lambda: "second", 1).value == "second"


@pytest.mark.django_db
def test_with_the_cache_failing_a_kept_entry_is_not_served(settings):
    """An election read that cannot ask the cache for the published version cannot know the
    kept entry is current: a miss, answered from the database, as without the copy."""
    election = ElectionFactory()
    for _ in range(2):
        metrics_cache.election_read(election.id, "x", lambda: "kept", 60)
    settings.CACHES = UNREACHABLE_REDIS
    assert MetricsCache().add("probe", 1, 5) is None  # really unreachable
    cached = metrics_cache.election_read(election.id, "x", lambda: "from the database", 60)
    assert (cached.value, cached.hit) == ("from the database", False)


@pytest.mark.django_db
def test_an_entry_computed_before_a_bump_is_stale_even_if_stored_after_it():
    """A computation that read the database before a recompute committed must not be served
    after the recompute's version bump, even when it finishes (and stores) later."""
    election = ElectionFactory()

    def slow_old_value():
        metrics_cache.election_version_bump(election.id)  # the recompute commits meanwhile
        return "old"

    assert metrics_cache.election_read(election.id, "x", slow_old_value, 60).value == "old"
    fresh = metrics_cache.election_read(election.id, "x", lambda: "new", 60)
    assert (fresh.value, fresh.hit) == ("new", False)
    assert metrics_cache.election_read(election.id, "x", lambda: "newer", 60).value == "new"


@pytest.mark.django_db
def test_a_lost_published_version_falls_back_to_the_stored_one():
    election = ElectionFactory()
    metrics_cache.election_version_bump(election.id)
    metrics_cache.election_read(election.id, "x", lambda: "old", 60)
    metrics_cache.delete(metrics_cache._version_key(election.id))  # evicted, or Redis restarted
    kept = metrics_cache.election_read(election.id, "x", lambda: "recomputed", 60)
    assert (kept.value, kept.hit) == ("old", True)  # still the current version's figures
    metrics_cache.election_version_bump(election.id)
    fresh = metrics_cache.election_read(election.id, "x", lambda: "new", 60)
    assert (fresh.value, fresh.hit) == ("new", False)


def test_ttl_follows_the_election_phase(settings):
    settings.METRICS_CACHE_TTL_ACTIVE = 30
    settings.METRICS_CACHE_TTL_CLOSED = 86400
    assert [metrics_cache.ttl_for(s) for s in ("scheduled", "active", "closed")] == [30, 30, 86400]


@pytest.mark.django_db
def test_an_active_election_expires_sooner_than_a_closed_one(api_client, settings, monkeypatch):
    settings.METRICS_CACHE_TTL_ACTIVE = 1
    settings.METRICS_CACHE_TTL_CLOSED = 3600
    now = dj_timezone.now()
    active = ElectionFactory(starts_at=now - timedelta(hours=1), ends_at=now + timedelta(hours=3))
    closed = ElectionFactory(starts_at=now - timedelta(days=3), ends_at=now - timedelta(days=2))
    compute = Counted(selectors.election_metrics)
    monkeypatch.setattr(selectors, "election_metrics", compute)
    urls = [reverse("election-metrics", kwargs={"election_id": e.id}) for e in (active, closed)]
    for url in urls:
        api_client.get(url)
    assert compute.calls == 2
    time.sleep(1.3)
    for url in urls:
        assert api_client.get(url).status_code == 200
    assert compute.calls == 3  # only the active election's entry had expired


# --- through the API ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_repeated_reads_compute_once_until_a_recompute_commits(api_client, monkeypatch):
    seeded = seeded_election(tz="Asia/Kolkata")
    compute = Counted(selectors.election_metrics)
    monkeypatch.setattr(selectors, "election_metrics", compute)
    url = reverse("election-metrics", kwargs={"election_id": seeded.election.id})
    bodies = [api_client.get(url).json() for _ in range(5)]
    assert compute.calls == 1
    assert all(body == bodies[0] for body in bodies)

    member = seeded.constituencies[0]
    vote_at = seeded.election.starts_at + timedelta(minutes=10)
    ingest_and_recompute(seeded.election.id, [("late-vote", member.id, "vote_cast", vote_at)])
    after = api_client.get(url).json()
    assert compute.calls == 2
    assert after["total_votes_cast"] == bodies[0]["total_votes_cast"] + 1
    assert after["total_transactions"] == bodies[0]["total_transactions"] + 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("constituency-metrics", "C"),
        ("constituency-time-period", "C"),
        ("election-constituencies", "E"),
        ("dashboard-summary", None),
        ("dashboard-detailed", None),
    ],
)
def test_a_new_transaction_is_visible_right_after_its_recompute(api_client, name, kind):
    seeded = seeded_election(tz="Europe/Berlin", constituencies=5)
    member = seeded.constituencies[0]
    kwargs = {"C": {"constituency_id": member.id}, "E": {"election_id": seeded.election.id}, None: {}}[kind]
    url = reverse(name, kwargs=kwargs)
    params = {"period": "month"} if name == "constituency-time-period" else {}

    def votes(body):
        if name == "constituency-time-period":
            return sum(b["votes_cast"] for b in body["buckets"])
        if name == "election-constituencies":
            return next(r["total_votes_cast"] for r in body["results"] if r["constituency_id"] == member.id)
        if name == "dashboard-detailed":
            return body["summary"]["total_votes_cast"]
        return body["total_votes_cast"]

    before = votes(api_client.get(url, params).json())
    assert votes(api_client.get(url, params).json()) == before  # served from the cache
    ingest_and_recompute(
        seeded.election.id, [("fresh-vote", member.id, "vote_cast", seeded.election.starts_at + timedelta(hours=2))]
    )
    assert votes(api_client.get(url, params).json()) == before + 1


@pytest.mark.django_db
def test_without_the_recompute_commit_the_cached_value_is_served(api_client):
    """Proves the previous tests read the cache: the stored figures change, the answer does
    not, until the version is bumped."""
    seeded = seeded_election(tz="Europe/Berlin", constituencies=5)
    url = reverse("election-metrics", kwargs={"election_id": seeded.election.id})
    before = api_client.get(url).json()
    seeded.constituencies[0].__class__.objects.filter(pk=seeded.constituencies[0].pk).update(total_votes_cast=10**6)
    assert api_client.get(url).json() == before
    metrics_cache.election_version_bump(seeded.election.id)
    assert api_client.get(url).json()["total_votes_cast"] > 10**6


# --- cache outage ------------------------------------------------------------------------------------


@pytest.fixture
def redis_down(settings):
    settings.CACHES = UNREACHABLE_REDIS
    assert MetricsCache().add("probe", 1, 5) is None  # really unreachable


READ_ROUTES = [
    ("election-metrics", "E", {}),
    ("election-constituencies", "E", {}),
    ("constituency-metrics", "C", {}),
    ("constituency-time-period", "C", {"period": "day"}),
    ("hourly-stats-election", "E", {}),
    ("dashboard-summary", None, {}),
    ("dashboard-detailed", None, {}),
    ("anomaly-list", None, {}),
    ("episode-list", None, {}),
]


@pytest.mark.django_db
def test_with_redis_down_every_read_answers_from_the_database(api_client, redis_down, caplog):
    seeded = seeded_election(tz="Asia/Kolkata", constituencies=5)  # ingest and recompute work too
    member = seeded.constituencies[0]
    ids = {"E": {"election_id": seeded.election.id}, "C": {"constituency_id": member.id}, None: {}}
    caplog.set_level(logging.WARNING)
    for name, kind, params in READ_ROUTES:
        response = api_client.get(reverse(name, kwargs=ids[kind]), params)
        assert response.status_code == 200, (name, response.content)
    body = api_client.get(reverse("election-metrics", kwargs=ids["E"])).json()
    want = seeded.expected["election"]
    assert body["total_votes_cast"] == want["total_votes_cast"]
    assert body["total_transactions"] == want["total_transactions"]
    assert body["participation_rate"] == pytest.approx(want["participation_rate"])
    constituency = api_client.get(reverse("constituency-metrics", kwargs=ids["C"])).json()
    assert constituency["hourly_activity"] == seeded.expected["constituencies"][member.id]["hourly_activity"]
    assert any("answering from the database" in r.getMessage() for r in caplog.records)


@pytest.mark.django_db
def test_with_redis_down_a_new_transaction_is_still_visible(api_client, redis_down):
    seeded = seeded_election(tz="Europe/Berlin", constituencies=5)
    url = reverse("election-metrics", kwargs={"election_id": seeded.election.id})
    before = api_client.get(url).json()["total_votes_cast"]
    vote_at = datetime(2024, 10, 26, 9, 15, tzinfo=UTC)
    ingest_and_recompute(seeded.election.id, [("outage-vote", seeded.constituencies[1].id, "vote_cast", vote_at)])
    assert api_client.get(url).json()["total_votes_cast"] == before + 1


def test_cache_operations_degrade_to_misses_when_the_backend_fails(redis_down):
    broken = MetricsCache()
    assert broken.get("k", "default") == "default"
    assert broken.set("k", 1, 10) is False
    assert broken.add("k", 1, 10) is None
    broken.delete("k")
    value, hit = broken.get_or_compute("k", lambda: "computed", 10)
    assert (value, hit) == ("computed", False)
    assert broken.constituency_election(5, lambda: 7) == 7


@pytest.mark.django_db
def test_a_new_constituency_shows_in_a_closed_elections_cached_metrics(api_client, ingest_client, settings):
    settings.METRICS_CACHE_TTL_CLOSED = 86400
    seeded = seeded_election(tz="Europe/Berlin", constituencies=5)
    url = reverse("election-metrics", kwargs={"election_id": seeded.election.id})
    before = api_client.get(url).json()
    assert before["status"] == "closed"
    with TestCase.captureOnCommitCallbacks(execute=True):
        created = ingest_client.post(
            reverse("constituency-list"),
            {"election": seeded.election.id, "code": "late-one", "name": "Late", "registered_voters": 500},
            format="json",
        )
    assert created.status_code == 201, created.content
    after = api_client.get(url).json()
    assert after["constituency_count"] == before["constituency_count"] + 1
    assert after["registered_voters"] == before["registered_voters"] + 500
