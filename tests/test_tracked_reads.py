"""election_monitor/tracked_reads.py on a real Redis: a value read once is answered in process,
and every change made by another client (a write, a delete, a flush) is seen by the very next
read, with no waiting; a failing Redis is an error, never a remembered value."""

import os

import pytest
import redis
from django.core.cache import caches

from election_monitor.resilience import guarded_cache
from election_monitor.tracked_reads import tracked_reads
from metrics.tests.fixtures import redis_cache_settings

KEY = "tracked-reads:test"

# A real Redis: run with the services, as the worker tests are (deselected on the embedded
# default, where the cache is local memory).
pytestmark = pytest.mark.worker


@pytest.fixture
def redis_cache():
    """The test's Redis cache, and another client of the same Redis (another process's)."""
    if not os.environ.get("REDIS_URL", "").startswith("redis://"):
        if os.environ.get("CI"):
            pytest.fail("needs the Redis cache in CI: REDIS_URL is not set", pytrace=False)
        pytest.skip("needs a Redis cache (set REDIS_URL=redis://...)")
    backend = caches["default"]
    other = redis.Redis.from_url(os.environ["REDIS_URL"])
    yield backend, other
    tracked_reads.close()
    other.close()


@pytest.mark.parametrize("stored", [7, None], ids=["present", "absent"])
def test_a_value_read_once_is_answered_without_a_round_trip(redis_cache, stored):
    backend, _ = redis_cache
    backend.delete(KEY)
    if stored is not None:
        backend.set(KEY, stored, None)
    assert tracked_reads.get(backend, KEY) == stored
    connection = tracked_reads._connection
    sent = []
    original = connection.send_command
    connection.send_command = lambda *args, **kwargs: (sent.append(args), original(*args, **kwargs))[1]
    try:
        assert [tracked_reads.get(backend, KEY) for _ in range(5)] == [stored] * 5
    finally:
        del connection.send_command
    assert sent == []


@pytest.mark.parametrize(
    "change",
    [
        lambda other, name: other.set(name, 8),
        lambda other, name: other.delete(name),
        lambda other, name: other.flushdb(),
    ],
    ids=["written", "deleted", "flushed"],
)
def test_a_change_by_another_client_is_seen_by_the_next_read(redis_cache, change):
    backend, other = redis_cache
    backend.set(KEY, 7, None)
    assert tracked_reads.get(backend, KEY) == 7
    change(other, str(backend.client.make_key(KEY)))  # acknowledged before the next read starts
    assert tracked_reads.get(backend, KEY) == backend.get(KEY)
    assert tracked_reads.get(backend, KEY) != 7


def test_an_absent_key_written_by_another_client_is_seen_by_the_next_read(redis_cache):
    backend, other = redis_cache
    backend.delete(KEY)
    assert tracked_reads.get(backend, KEY) is None
    other.set(str(backend.client.make_key(KEY)), 9)
    assert tracked_reads.get(backend, KEY) == 9


def test_a_failing_redis_is_an_error_and_forgets_every_value(redis_cache, hanging, settings):
    backend, _ = redis_cache
    backend.set(KEY, 7, None)
    assert tracked_reads.get(backend, KEY) == 7
    settings.CACHES = redis_cache_settings(hanging.url(), timeout=0.2)  # another server: a new connection
    with pytest.raises(redis.exceptions.TimeoutError):
        tracked_reads.get(caches["default"], KEY)
    assert tracked_reads._values == {}


def test_other_caches_are_read_as_usual(settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    backend = caches["default"]
    backend.set(KEY, 7, None)
    assert tracked_reads.get(backend, KEY) == 7
    backend.set(KEY, 8, None)
    assert tracked_reads.get(backend, KEY) == 8


class ProxiedConnection(redis.connection.Connection):
    """A connection class of the pool's own (as a Unix socket, TLS or Sentinel pool has): the
    tracked connection, always plain TCP, cannot be trusted to reach the same server."""


def test_a_cache_reached_otherwise_than_plain_tcp_is_read_as_usual(redis_cache, settings):
    # django-redis keeps one pool per URL for the whole process: this URL (same server, a
    # no-op query argument) gets a pool of its own, with the connection class below.
    url = os.environ["REDIS_URL"]
    settings.CACHES = redis_cache_settings(url + ("&" if "?" in url else "?") + "health_check_interval=0", timeout=0.5)
    settings.CACHES["default"]["OPTIONS"]["CONNECTION_POOL_KWARGS"] = {"connection_class": ProxiedConnection}
    backend = caches["default"]
    backend.set(KEY, 7, None)
    guarded = guarded_cache()
    assert guarded.tracked_get(KEY) == 7
    assert tracked_reads._connection is None, "no tracked connection was kept"
    backend.set(KEY, 8, None)
    assert guarded.tracked_get(KEY) == 8
    assert guarded.get(KEY) == 8, "the cache's circuit breaker stayed closed"


def test_a_tracked_connection_closed_by_the_server_is_opened_again(redis_cache):
    backend, other = redis_cache
    backend.set(KEY, 7, None)
    guarded = guarded_cache()
    assert guarded.tracked_get(KEY) == 7
    connection = tracked_reads._connection
    connection.send_command("CLIENT", "ID")
    client_id = connection.read_response()
    assert other.client_kill_filter(_id=client_id) == 1  # a restart's, or an idle timeout's, close
    other.set(str(backend.client.make_key(KEY)), 8)
    assert guarded.tracked_get(KEY) == 8
    assert guarded.get(KEY) == 8, "the cache's circuit breaker stayed closed"
    assert tracked_reads._connection is not None, "tracked again on a new connection"
    assert tracked_reads._connection is not connection
