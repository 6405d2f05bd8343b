import logging

from rest_framework.throttling import AnonRateThrottle

from election_monitor.resilience import guarded_cache

logger = logging.getLogger(__name__)


class FailOpenAnonRateThrottle(AnonRateThrottle):
    """The anonymous rate as a counter per client and fixed window, kept in the cache: one
    atomic increment per request (DRF's sliding history was a read and a write of up to
    ``rate`` timestamps on every request, and lost counts between concurrent workers). A
    client may spend two windows' allowance across a window boundary, never more. When the
    cache is down, let the request through (logged) instead of answering 500 — reads degrade
    to the database."""

    @property
    def cache(self):
        # The cache's circuit breaker: a hanging Redis must not cost every request a timeout.
        return guarded_cache()

    def allow_request(self, request, view):
        if self.rate is None:
            return True
        ident_key = self.get_cache_key(request, view)
        if ident_key is None:  # authenticated: not this throttle's business
            return True
        self.now = self.timer()
        window = int(self.now // self.duration)
        self.window_end = (window + 1) * self.duration
        try:
            count = self._count(f"{ident_key}:{window}")
        except Exception:
            logger.warning("throttle cache unavailable; not throttling this request", exc_info=True)
            return True
        return count <= self.num_requests

    def _count(self, key: str) -> int:
        try:
            return self.cache.incr(key)
        except ValueError:
            # The window's first request. Subtle: another worker may create the key between
            # the failed increment and add(); add() then fails and the increment counts.
            if self.cache.add(key, 1, self.duration + 1):
                return 1
            return self.cache.incr(key)

    def wait(self):
        """Seconds until the window ends (the Retry-After of a 429)."""
        return max(self.window_end - self.now, 0.0)
