"""Every metrics cache key, TTL and invalidation lives here (SPEC section 6).

Invalidation is O(1) per election: each election has a version number, stored with every
entry computed from it; a recompute bumps the version after it commits, and entries of an
older version no longer count (they are recomputed over, or age out). A cache outage is never an error: every operation degrades to a
miss, logged, and the caller answers from the database.
"""

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from election_monitor.resilience import guarded_cache

logger = logging.getLogger(__name__)

MISS = object()
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
        return self._read(self._version_key(election_id), self.election_key(election_id, name, **params), compute, ttl)

    def global_read(self, name: str, compute: Callable[[], Any], ttl, **params) -> "CachedRead":
        """get_or_compute under the version every election's recompute bumps (dashboards)."""
        return self._read(self.GLOBAL_VERSION_KEY, self.global_key(name, **params), compute, ttl)

    def _read(self, version_key: str, key: str, compute: Callable[[], Any], ttl) -> "CachedRead":
        """A hit is one round trip: the version and the entry are fetched together, and the
        entry, stored as (version, ETag, value), counts only if computed under the current
        version.

        Subtle: the version an entry is stored under is the one read *before* its
        computation read the database, so a recompute that commits meanwhile (and bumps the
        version) makes the entry stale at once, never the reverse. After a bump, a waiter
        may sit behind the lock of a computation of the previous version; its entry does
        not count, so the waiter takes the lock next and computes. The ETag is minted with
        each computation: a strong validator that changes whenever the value may have (a
        new version, or a TTL expiry that recomputed clock-dependent parts such as status).
        """
        seen = {}

        def fetch():
            seen["version"], entry = self._versioned_get(version_key, key)
            return entry if entry is not None and entry[0] == seen["version"] else MISS

        def stamped() -> tuple[int, str, Any]:
            version = seen["version"]
            text = f"{key}|{version}|{time.time_ns()}"
            return version, '"' + hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:32] + '"', compute()

        entry_ttl = (lambda entry: ttl(entry[2])) if callable(ttl) else ttl
        (_, etag, value), hit = self._compute_once(key, fetch, stamped, entry_ttl)
        return CachedRead(value=value, hit=hit, etag=etag)

    def _versioned_get(self, version_key: str, key: str) -> tuple[int, Any]:
        """(current version, stored entry or None) in one round trip."""
        try:
            found = self.backend.get_many([version_key, key])
        except Exception:
            logger.warning("cache get failed for %s; answering from the database", key, exc_info=True)
            return time.time_ns(), None
        version = found.get(version_key)
        if version is None:
            version = self._version(version_key)
        return version, found.get(key)

    # --- keys -----------------------------------------------------------------------------

    def _version(self, key: str) -> int:
        version = self.get(key)
        if version is None:
            # Start from the clock, so a lost version key never brings back old entries.
            initial = time.time_ns()
            if self.add(key, initial, None) is None:
                return initial
            version = self.get(key, initial)
        return version

    @staticmethod
    def _version_key(election_id: int) -> str:
        return f"metrics:election:{election_id}:version"

    GLOBAL_VERSION_KEY = "metrics:global:version"

    @staticmethod
    def _params(params: dict) -> str:
        if not params:
            return "-"
        text = json.dumps(params, sort_keys=True, default=str)
        return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:16]

    def election_key(self, election_id: int, name: str, **params) -> str:
        return f"metrics:election:{election_id}:{name}:{self._params(params)}"

    def global_key(self, name: str, **params) -> str:
        return f"metrics:global:{name}:{self._params(params)}"

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

    def forget_constituency(self, constituency_id: int) -> None:
        """A deleted constituency's endpoints must answer 404, not its cached election's data."""
        self.delete(self._constituency_election_key(constituency_id))

    # --- invalidation and pipeline flags ----------------------------------------------------

    def invalidate_election(self, election_id: int) -> None:
        """Called after a recompute commits: O(1), whatever the number of entries."""
        for key in (self._version_key(election_id), self.GLOBAL_VERSION_KEY):
            try:
                self.backend.incr(key)
            except ValueError:
                self.set(key, time.time_ns(), None)
            except Exception:
                logger.warning("cache invalidation failed for %s", key, exc_info=True)

    @staticmethod
    def _flush_pending_key(election_id: int) -> str:
        return f"metrics:election:{election_id}:flush-pending"

    def flush_pending_claim(self, election_id: int) -> bool:
        """True if the caller should queue a flush (none is queued yet, or the cache is down)."""
        return self.add(self._flush_pending_key(election_id), 1, settings.METRICS_FLUSH_PENDING_TTL) is not False

    def flush_pending_clear(self, election_id: int) -> None:
        self.delete(self._flush_pending_key(election_id))


metrics_cache = MetricsCache()
