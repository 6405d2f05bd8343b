import logging

from rest_framework.throttling import AnonRateThrottle

logger = logging.getLogger(__name__)


class FailOpenAnonRateThrottle(AnonRateThrottle):
    """AnonRateThrottle whose history lives in the cache: when the cache is down, let the
    request through (logged) instead of answering 500 — reads degrade to the database."""

    def allow_request(self, request, view):
        try:
            return super().allow_request(request, view)
        except Exception:
            logger.warning("throttle cache unavailable; not throttling this request", exc_info=True)
            return True
