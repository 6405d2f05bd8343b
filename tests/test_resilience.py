"""election_monitor/resilience.py against real hanging services: a TCP listener on 127.0.0.1
that accepts connections and never answers stands in for Redis (cache) and for the broker.
With the breakers, such a service costs one timeout per process per interval, not one per
request, and nothing is lost: marks stay in the database, reads come from it."""

import time
from datetime import timedelta

import pytest
from django.db import connection
from django.test import TestCase

from election_monitor.resilience import CircuitBreaker, CircuitOpen, breaker
from elections.models import Transaction
from metrics.models import DirtyBucket
from metrics.tests.fixtures import BrokerOutage, HangingListener, redis_cache_settings

SOCKET_TIMEOUT = 0.3


def use_hanging_cache(settings, hanging: HangingListener) -> None:
    settings.CACHES = redis_cache_settings(hanging.url(), timeout=SOCKET_TIMEOUT)


@pytest.fixture
def hanging_broker(hanging):
    """This process publishes to the hanging listener, without eager tasks."""
    from election_monitor.celery import app

    outage, eager = BrokerOutage(), app.conf.task_always_eager
    app.conf.task_always_eager = False
    outage.hang(hanging, timeout=SOCKET_TIMEOUT)
    yield hanging
    outage.end()
    app.conf.task_always_eager = eager


def post_and_commit(client, body):
    """A POST whose after-commit work (the flush request) runs before this returns, as it
    does in a real request outside a test's transaction."""
    with TestCase.captureOnCommitCallbacks(using=connection.alias, execute=True):
        return client.post("/api/transactions/", body, format="json")


def timed(call) -> tuple[float, object]:
    started = time.monotonic()
    result = call()
    return time.monotonic() - started, result


# --- the breaker itself ------------------------------------------------------------------------


def test_a_breaker_opens_on_failure_fails_fast_then_lets_one_trial_through(settings):
    settings.CIRCUIT_BREAKER_RESET_SECONDS = 0.2
    guard = CircuitBreaker("test")
    calls = []

    def down():
        calls.append("down")
        raise ConnectionError("refused")

    with pytest.raises(ConnectionError):
        guard.call(down)
    for _ in range(5):
        with pytest.raises(CircuitOpen):
            guard.call(down)
    assert calls == ["down"]  # five calls never reached the service

    time.sleep(0.25)
    assert guard.call(lambda: "back") == "back"  # the trial succeeds: closed again
    assert not guard.is_open
    assert guard.call(lambda: "again") == "again"


def test_errors_a_healthy_service_raises_do_not_open_the_breaker():
    guard = CircuitBreaker("test", ignore=(ValueError,))

    def missing_key():
        raise ValueError("Key 'x' not found")

    for _ in range(3):
        with pytest.raises(ValueError):
            guard.call(missing_key)
    assert not guard.is_open


def test_breakers_are_one_per_name_per_process():
    assert breaker("broker") is breaker("broker")
    assert breaker("broker") is not breaker("cache:default")


# --- a hanging Redis as the cache ------------------------------------------------------------------


@pytest.mark.django_db
def test_a_hanging_cache_costs_one_timeout_then_reads_come_from_the_database(api_client, hanging, settings):
    from metrics.tests.test_selectors import seeded_election

    seeded = seeded_election(tz="Europe/Berlin", constituencies=4)
    use_hanging_cache(settings, hanging)
    hanging_cache = hanging
    url = f"/api/metrics/election/{seeded.election.id}/"

    first, response = timed(lambda: api_client.get(url))
    assert response.status_code == 200
    assert first >= SOCKET_TIMEOUT  # it did wait for the hanging server once
    attempts_after_first = hanging_cache.accepted
    assert attempts_after_first >= 1

    durations, bodies = [], []
    for _ in range(20):
        took, response = timed(lambda: api_client.get(url))
        assert response.status_code == 200
        durations.append(took)
        bodies.append(response.json())

    # Not one of the 20 requests went to the hanging server, so none waited its timeout.
    assert hanging_cache.accepted == attempts_after_first
    assert sum(durations) < 20 * SOCKET_TIMEOUT / 2, durations
    # Answered from the database, right.
    want = seeded.expected["election"]
    for body in bodies:
        assert body["total_votes_cast"] == want["total_votes_cast"]
        assert body["total_transactions"] == want["total_transactions"]


@pytest.mark.django_db
def test_a_hanging_cache_is_tried_again_after_the_interval(api_client, hanging, settings):
    settings.CIRCUIT_BREAKER_RESET_SECONDS = 0.5
    from metrics.tests.test_selectors import seeded_election

    seeded = seeded_election(tz="UTC", constituencies=2)
    use_hanging_cache(settings, hanging)
    hanging_cache = hanging
    url = f"/api/metrics/election/{seeded.election.id}/"
    assert api_client.get(url).status_code == 200
    after_first = hanging_cache.accepted
    time.sleep(0.6)
    assert api_client.get(url).status_code == 200  # the trial: one more timeout
    assert hanging_cache.accepted > after_first
    after_trial = hanging_cache.accepted
    for _ in range(5):
        assert api_client.get(url).status_code == 200
    assert hanging_cache.accepted == after_trial  # open again after the failed trial


# --- a hanging broker --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_hanging_broker_costs_one_timeout_and_loses_no_write(ingest_client, election, constituencies, hanging_broker):
    durations = []
    for i in range(10):
        body = {
            "tx_hash": f"0xhang{i}",
            "constituency": constituencies[i % 6].id,
            "kind": "vote_cast",
            "timestamp": (election.starts_at + timedelta(minutes=10 * i)).isoformat(),
        }
        took, response = timed(lambda body=body: post_and_commit(ingest_client, body))
        assert response.status_code == 201, response.content
        durations.append(took)

    assert hanging_broker.accepted >= 1  # the first flush request did try the broker
    attempts = hanging_broker.accepted
    # Every write is stored with its dirty mark; the flushes are left to the sweep.
    assert Transaction.objects.count() == 10
    marked = set(DirtyBucket.objects.values_list("constituency_id", "hour"))
    assert marked == set(Transaction.objects.values_list("constituency_id", "hour"))
    # Only the first write waited for the hanging broker.
    assert durations[0] >= SOCKET_TIMEOUT
    assert sum(durations[1:]) < 9 * SOCKET_TIMEOUT / 2, durations

    # A later write within the interval does not connect again.
    last = {"tx_hash": "0xlast", "constituency": constituencies[0].id, "kind": "vote_cast",
            "timestamp": election.starts_at.isoformat()}  # fmt: skip
    assert post_and_commit(ingest_client, last).status_code == 201
    assert hanging_broker.accepted == attempts


@pytest.mark.django_db
def test_a_hanging_broker_makes_a_recompute_request_a_quick_503(staff_client, election, hanging_broker):
    first = staff_client.post("/api/metrics/recompute/", {"election": election.id}, format="json")
    assert first.status_code == 503
    attempts = hanging_broker.accepted
    for _ in range(5):
        took, response = timed(
            lambda: staff_client.post("/api/metrics/recompute/", {"election": election.id}, format="json")
        )
        assert response.status_code == 503
        assert took < SOCKET_TIMEOUT
    assert hanging_broker.accepted == attempts
