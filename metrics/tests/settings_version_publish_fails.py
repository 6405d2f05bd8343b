"""The product's settings for a writer process whose publish of a new figures version into
the Redis cache fails (metrics/tests/test_coherence.py); everything else is unchanged."""

from election_monitor.settings import *  # noqa: F403
from election_monitor.settings import CACHES

CACHES = {"default": {**CACHES["default"], "BACKEND": "metrics.tests.faults.VersionPublishFailsRedisCache"}}
