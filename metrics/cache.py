"""Every metrics cache key, TTL and invalidation lives here (README, "How it stays correct").

Invalidation is O(1) per election and anchored in the database: each election has a
version (metrics.models.MetricsVersion) that every recompute raises inside its own
database transaction, and every cached entry carries the version it was computed under.
An entry counts only while its version is the current one, so a committed recompute
retires every entry of its election in every process, whatever happens to the cache:

- the version is read from the database at most once per METRICS_VERSION_RECHECK_SECONDS
  per process (a memo), so a reader is never staler than that plus the flush;
- after commit a recompute also publishes the new version into the cache (one key per
  election), which readers check on every read, so on a shared cache (Redis) they see
  it at once; if that write fails, the memo still bounds the staleness;
- dashboards (all elections) compare against a fingerprint of every election's version;
- a process keeps a copy of each entry it read until the entry's own expiry, and uses it
  only while its version is still the current one: a hit then asks only for the published
  version, which on Redis is answered in process until Redis pushes its invalidation
  (election_monitor.tracked_reads), so it is exactly as fresh without a round trip.

A cache outage is never an error: every operation degrades to a miss, logged, and the
caller answers from the database.
"""

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import BigIntegerField, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce

from election_monitor import bulk_sql
from election_monitor.resilience import guarded_cache
from elections.models import Election
from metrics.models import MetricsVersion

logger = logging.getLogger(__name__)

MISS = object()
# The version of an election the database does not hold (deleted, or not created yet): below
# every stored version, so no entry cached while it existed counts once it is gone.
NO_SUCH_ELECTION = -1
LOCK_TTL = 30  # seconds a computation may hold its key's lock
LOCK_WAIT = 5.0  # seconds a request waits for another's computation before doing its own
LOCK_POLL = 0.05


@dataclass(frozen=True)
class CachedRead:
    value: Any
    hit: bool
    etag: str


class MetricsCache:
    def __init__(self, alias: str = "default"):
        self.alias = alias

    @property
    def backend(self):
        # Every operation goes through the cache's circuit breaker: a hanging Redis costs
        # one timeout per process per interval, not one per request (election_monitor.resilience).
        return guarded_cache(self.alias)

    # --- plain operations, each safe against a failing backend --------------------------

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self.backend.get(key, default)
        except Exception:
            logger.warning("cache get failed for %s; answering from the database", key, exc_info=True)
            return default

    def set(self, key: str, value: Any, ttl: int | None) -> bool:
        try:
            self.backend.set(key, value, ttl)
            return True
        except Exception:
            logger.warning("cache set failed for %s", key, exc_info=True)
            return False

    def add(self, key: str, value: Any, ttl: int | None) -> bool | None:
        """True if stored, False if the key existed, None if the backend failed."""
        try:
            return bool(self.backend.add(key, value, ttl))
        except Exception:
            logger.warning("cache add failed for %s", key, exc_info=True)
            return None

    def delete(self, key: str) -> None:
        try:
            self.backend.delete(key)
        except Exception:
            logger.warning("cache delete failed for %s", key, exc_info=True)

    def get_or_compute(
        self, key: str, compute: Callable[[], Any], ttl: int | None | Callable[[Any], int | None]
    ) -> tuple[Any, bool]:
        """The cached value, or compute it once: under a burst of misses one caller computes
        while the others wait for its result. ``ttl`` may be a function of the computed value
        (e.g. by election phase). Returns (value, was_cached)."""
        return self._compute_once(key, lambda: self.get(key, MISS), compute, ttl)

    def _compute_once(self, key: str, fetch: Callable[[], Any], compute: Callable[[], Any], ttl) -> tuple[Any, bool]:
        """``fetch()`` is the stored value or MISS; ``compute()``'s result is stored under ``key``.

        Subtle: a waiter retries the lock on every poll, so if the computing caller fails
        (an exception, a 404) or cannot store its result, the next waiter takes over instead
        of sleeping out LOCK_WAIT; after LOCK_WAIT a waiter computes regardless.
        """
        lock_key = f"{key}:lock"
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            value = fetch()
            if value is not MISS:
                return value, True
            locked = self.add(lock_key, 1, LOCK_TTL)
            if locked is not False or time.monotonic() >= deadline:
                break
            time.sleep(LOCK_POLL)
        try:
            value = compute()
            self.set(key, value, ttl(value) if callable(ttl) else ttl)
        finally:
            if locked:
                self.delete(lock_key)
        return value, False

    def election_read(self, election_id: int, name: str, compute: Callable[[], Any], ttl, **params) -> "CachedRead":
        """get_or_compute under the election's version, with an ETag for the result."""

        def version(published: Any) -> int:
            stored = self._memo(("election", election_id), lambda: election_version_stored(election_id))
            if stored is None:
                # Deleted: no entry of it counts, whatever version it was stored under.
                return NO_SUCH_ELECTION
            return max(stored, published) if isinstance(published, int) else stored

        return self._read(
            self._version_key(election_id), self.election_key(election_id, name, **params), version, compute, ttl
        )

    def global_read(self, name: str, compute: Callable[[], Any], ttl, **params) -> "CachedRead":
        """get_or_compute under the fingerprint of every election's version (dashboards)."""
        return self._read(
            None, self.global_key(name, **params), lambda _: self._memo(("global",), versions_fingerprint), compute, ttl
        )

    def _read(self, version_key: str | None, key: str, version_of, compute: Callable[[], Any], ttl) -> "CachedRead":
        """A hit is at most one cache round trip (_entry_get); the entry, stored as (version,
        ETag, value, expires at), counts only if computed under the current version
        (``version_of(published version)``).

        Subtle: the version an entry is stored under is the one read *before* its
        computation read the database, so a recompute that commits meanwhile makes the
        entry stale at once, never the reverse. After a new version, a waiter may sit behind
        the lock of a computation of the previous one; its entry does not count, so the
        waiter takes the lock next and computes. The ETag is minted with each computation: a
        strong validator that changes whenever the value may have (a new version, or a TTL
        expiry that recomputed clock-dependent parts such as status).
        """
        seen = {}

        def fetch():
            seen["version"], entry = self._entry_get(version_key, key, version_of)
            return MISS if entry is None else entry

        def stamped() -> tuple[int, str, Any, float]:
            version = seen["version"]
            text = f"{key}|{version}|{time.time_ns()}"
            etag = '"' + hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:32] + '"'
            value = compute()
            seconds = seen["ttl"] = ttl(value) if callable(ttl) else ttl
            # Wall clock, as the cache's own expiry: a process's copy never outlives the entry.
            return version, etag, value, math.inf if seconds is None else time.time() + seconds

        (_, etag, value, _), hit = self._compute_once(key, fetch, stamped, lambda _: seen["ttl"])
        return CachedRead(value=value, hit=hit, etag=etag)

    def _entry_get(self, version_key: str | None, key: str, version_of) -> tuple[Any, tuple | None]:
        """(current version, the entry if computed under it and unexpired, else None).

        One round trip: the published version and the entry together; or, when this process
        already holds the entry (read from the cache before, until its expiry), the published
        version alone, a tracked read that Redis invalidates when anyone writes it, so a hit
        makes no round trip and does not unpickle the whole value again (docs/PERFORMANCE.md,
        item 6). An entry computed under a version never changes (a new computation is a new
        version or follows its expiry), so the copy is the cached entry itself, shared by
        every caller of the process: cached values are never mutated. A cache that fails to
        answer the version is a miss, never an answer from the copy; a tracked connection that
        died without a word answers its remembered version, and the database version re-read
        every METRICS_VERSION_RECHECK_SECONDS still bounds that. Dashboards have no published
        version: their copy is checked against the same per-process fingerprint memo the
        cached entry would be, so its hit asks the cache nothing at all, and is as fresh as
        before (within the recheck).
        """
        remembered = _entries_seen.get((self.alias, key))
        if remembered is not None and remembered[3] > time.time():
            try:
                published = None if version_key is None else self.backend.tracked_get(version_key)
            except Exception:
                logger.warning("cache get failed for %s; answering from the database", key, exc_info=True)
                return version_of(None), None
            version = version_of(published)
            if remembered[0] == version:
                return version, remembered
        try:
            if version_key is None:
                published, entry = None, self.backend.get(key)
            else:
                found = self.backend.get_many([version_key, key])
                published, entry = found.get(version_key), found.get(key)
        except Exception:
            logger.warning("cache get failed for %s; answering from the database", key, exc_info=True)
            return version_of(None), None
        version = version_of(published)
        if entry is None or entry[0] != version or entry[3] <= time.time():
            return version, None
        if len(_entries_seen) >= ENTRIES_MAX:
            _entries_seen.clear()
        _entries_seen[(self.alias, key)] = entry
        return version, entry

    @staticmethod
    def _memo(name: tuple, read: Callable[[], Any]) -> Any:
        """``read()`` (a database read), reused for METRICS_VERSION_RECHECK_SECONDS."""
        now = time.monotonic()
        found = _versions_seen.get(name)
        if found is not None and found[0] > now:
            return found[1]
        value = read()
        _versions_seen[name] = (now + settings.METRICS_VERSION_RECHECK_SECONDS, value)
        return value

    @staticmethod
    def versions_forget() -> None:
        """Drop this process's memo of versions (the next read asks the database) and its
        copies of entries (the next read fetches them from the cache)."""
        _versions_seen.clear()
        _entries_seen.clear()

    def election_version_bump(self, election_id: int) -> None:
        """Raise the election's version inside the recompute's transaction; publish it to
        the cache after commit. The only invalidation there is."""
        version = election_version_raise(election_id)
        self.versions_forget()  # this process reads its own writes at once

        def publish():
            self.versions_forget()
            self.set(self._version_key(election_id), version, None)

        transaction.on_commit(publish, robust=True)

    # --- keys -----------------------------------------------------------------------------

    @staticmethod
    def _version_key(election_id: int) -> str:
        return f"metrics:election:{election_id}:version"

    @staticmethod
    def _params(params: dict) -> str:
        if not params:
            return "-"
        text = json.dumps(params, sort_keys=True, default=str)
        return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:16]

    # Entries are (version, ETag, value, expires at) since the expiry joined them; the format
    # is in their keys, so a process still running the code of (version, ETag, value) never
    # reads one (and never serves a tuple it cannot unpack).
    ENTRY_FORMAT = "e2"

    def election_key(self, election_id: int, name: str, **params) -> str:
        return f"metrics:election:{election_id}:{name}:{self._params(params)}:{self.ENTRY_FORMAT}"

    def global_key(self, name: str, **params) -> str:
        return f"metrics:global:{name}:{self._params(params)}:{self.ENTRY_FORMAT}"

    def ttl_for(self, status: str) -> int:
        """Short while an election can still change; long once it is closed (a recompute
        still invalidates it at once)."""
        if status == "closed":
            return settings.METRICS_CACHE_TTL_CLOSED
        return settings.METRICS_CACHE_TTL_ACTIVE

    # --- lookups that let a cache hit skip the database -----------------------------------

    def constituency_election(self, constituency_id: int, resolve: Callable[[], int | None]) -> int | None:
        """The election of a constituency (never changes), so constituency endpoints can
        build their key without a query."""
        key = self._constituency_election_key(constituency_id)
        election_id = self.get(key)
        if election_id is None:
            election_id = resolve()
            if election_id is not None:
                self.set(key, election_id, 24 * 3600)
        return election_id

    @staticmethod
    def _constituency_election_key(constituency_id: int) -> str:
        return f"metrics:constituency:{constituency_id}:election"

    # --- pipeline flags ----------------------------------------------------

    @staticmethod
    def _flush_pending_key(election_id: int) -> str:
        return f"metrics:election:{election_id}:flush-pending"

    def flush_pending_claim(self, election_id: int) -> bool:
        """True if the caller should queue a flush (none is queued yet, or the cache is down)."""
        return self.add(self._flush_pending_key(election_id), 1, settings.METRICS_FLUSH_PENDING_TTL) is not False

    def flush_pending_clear(self, election_id: int) -> None:
        self.delete(self._flush_pending_key(election_id))


metrics_cache = MetricsCache()

# name -> (expires at, monotonic clock; version): this process's memo of stored versions.
_versions_seen: dict[tuple, tuple[float, Any]] = {}
# (cache alias, key) -> entry (version, ETag, value, expires at): this process's copies of the
# entries it read from the cache (MetricsCache._entry_get); cleared when full.
ENTRIES_MAX = 512
_entries_seen: dict[tuple, tuple] = {}


def election_version_stored(election_id: int) -> int | None:
    """The election's version, 0 until its first recompute; None if there is no such election.

    Subtle: "never recomputed" and "deleted" must differ. An election deleted before its first
    recompute (or stored before versions existed) has no version either way, and its entries
    cached under 0 would otherwise outlive it until their TTL, a day once it is closed.
    """
    versions = MetricsVersion.objects.filter(election_id=OuterRef("pk")).values("version")
    return (
        Election.objects.filter(pk=election_id)
        .annotate(version=Coalesce(Subquery(versions), Value(0), output_field=BigIntegerField()))
        .values_list("version", flat=True)
        .first()
    )


def election_version_raise(election_id: int) -> int:
    """version + 1 (1 for the first recompute), in the caller's transaction."""
    return bulk_sql.counter_increment(MetricsVersion, key="election", key_value=election_id, counter="version")


def versions_fingerprint() -> tuple[int, int, int, int]:
    """(elections, largest election id, elections with figures, sum of their versions):
    changes with every recompute (the sum grows), every deleted election (a count drops)
    and every new one (a larger id than any before), and never comes back to an earlier
    value."""
    quote = connection.ops.quote_name
    elections, versions = quote(Election._meta.db_table), quote(MetricsVersion._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT (SELECT COUNT(*) FROM {elections}), (SELECT COALESCE(MAX(id), 0) FROM {elections}), "
            f"(SELECT COUNT(*) FROM {versions}), (SELECT COALESCE(SUM(version), 0) FROM {versions})"
        )
        return tuple(int(value) for value in cursor.fetchone())
