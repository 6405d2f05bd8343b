"""Circuit breakers for the cache and the broker (SPEC section 10, "Resilience").

A Redis or broker that refuses connections fails fast by itself; one that hangs (accepts and
never answers) costs each caller its full socket timeout. A breaker turns that into at most
one timeout per process per CIRCUIT_BREAKER_RESET_SECONDS: after a failure it opens, and
calls fail at once with CircuitOpen (callers already treat a failing cache as a miss and a
failing broker as "the sweep will flush"); once the interval has passed, one caller tries
the service again (half-open) while the others still fail fast, and a success closes it.

Nothing is lost while a breaker is open: reads come from the database, and dirty marks are
committed with the data they describe (the beat sweep flushes them).
"""

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings

from election_monitor.tracked_reads import tracked_reads

logger = logging.getLogger(__name__)


class CircuitOpen(ConnectionError):
    """The service failed recently; not tried again until the breaker's interval has passed."""


class CircuitBreaker:
    def __init__(self, name: str, *, ignore: tuple[type[BaseException], ...] = ()):
        self.name = name
        # Errors that say nothing about the service's health (e.g. incr of a missing key).
        self.ignore = ignore
        self._lock = threading.Lock()
        self._opened_at: float | None = None
        self._trial_running = False

    @property
    def reset_seconds(self) -> float:
        return settings.CIRCUIT_BREAKER_RESET_SECONDS

    @property
    def is_open(self) -> bool:
        return self._opened_at is not None

    def call(self, function: Callable[..., Any], *args, **kwargs) -> Any:
        trial = self._admit()
        try:
            result = function(*args, **kwargs)
        except self.ignore:
            self._succeeded(trial)
            raise
        except Exception:
            self._failed(trial)
            raise
        self._succeeded(trial)
        return result

    def _admit(self) -> bool:
        """True if this call is the half-open trial; raises CircuitOpen if it may not run."""
        if self._opened_at is None:  # closed: the common case, no lock
            return False
        with self._lock:
            if self._opened_at is None:
                return False
            if self._trial_running or time.monotonic() - self._opened_at < self.reset_seconds:
                raise CircuitOpen(f"{self.name} failed recently; not tried again for a few seconds")
            self._trial_running = True
            return True

    def _failed(self, trial: bool) -> None:
        with self._lock:
            if self._opened_at is None:
                logger.warning(
                    "%s failed; circuit open: not tried again for %ss", self.name, self.reset_seconds, exc_info=True
                )
            self._opened_at = time.monotonic()
            if trial:
                self._trial_running = False

    def _succeeded(self, trial: bool) -> None:
        if self._opened_at is None and not trial:
            return
        with self._lock:
            if trial:
                self._trial_running = False
            if self._opened_at is not None:
                logger.warning("%s answers again; circuit closed", self.name)
            self._opened_at = None

    def reset(self) -> None:
        with self._lock:
            self._opened_at, self._trial_running = None, False


_breakers: dict[str, CircuitBreaker] = {}
_breakers_lock = threading.Lock()


def breaker(name: str, **options) -> CircuitBreaker:
    """The process's breaker of that name (one per service), created on first use."""
    found = _breakers.get(name)
    if found is None:
        with _breakers_lock:
            found = _breakers.setdefault(name, CircuitBreaker(name, **options))
    return found


def breakers_reset() -> None:
    """Close every breaker (tests, and a process that knows the services are back)."""
    for item in list(_breakers.values()):
        item.reset()


class GuardedCache:
    """A Django cache backend whose every method call goes through a breaker.

    ValueError does not trip it: ``incr`` of a missing key raises it from a healthy server."""

    def __init__(self, backend, guard: CircuitBreaker):
        self._backend = backend
        self._guard = guard

    def tracked_get(self, key: str) -> Any:
        """``get`` answered in process until Redis says the key changed
        (election_monitor.tracked_reads): for small keys read on every request."""
        return self._guard.call(tracked_reads.get, self._backend, key)

    def __getattr__(self, name: str):
        attribute = getattr(self._backend, name)
        if not callable(attribute):
            return attribute
        guard = self._guard

        def guarded(*args, **kwargs):
            return guard.call(attribute, *args, **kwargs)

        return guarded


def guarded_cache(alias: str = "default") -> GuardedCache:
    """The cache ``alias`` behind its breaker; one wrapper per backend object (Django keeps
    one backend per alias and thread)."""
    from django.core.cache import caches

    backend = caches[alias]
    guarded = backend.__dict__.get("_guarded")
    if guarded is None:
        guarded = backend.__dict__["_guarded"] = GuardedCache(backend, breaker(f"cache:{alias}", ignore=(ValueError,)))
    return guarded


def broker_breaker() -> CircuitBreaker:
    return breaker("broker")
