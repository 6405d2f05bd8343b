"""Settings for benchmark runs: the product's settings as production runs them, plus one
bench-only route (a static DRF view, the API's raw limit) and an isolated task queue.

Every value comes from the product settings except what is listed here, so a figure measured
under these settings is a figure of the product. The environment is prepared by
bench/run.py before Django starts (DEBUG off, PostgreSQL, Redis cache, Redis broker).
"""

import os

from election_monitor.settings import *  # noqa: F403
from election_monitor.settings import REST_FRAMEWORK

ROOT_URLCONF = "bench.urls"

# Throttling is per client address; a load generator is one address, so with throttling on we
# would measure the throttle (HTTP 429), not the path. Off for the static view and the product
# views alike, so the ratio between them stays fair.
REST_FRAMEWORK = {**REST_FRAMEWORK, "DEFAULT_THROTTLE_CLASSES": [], "DEFAULT_THROTTLE_RATES": {}}

# The bench worker consumes only its own queue, so a bench run never feeds (or is fed by) another
# worker on the same broker, e.g. CI's.
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("BENCH_QUEUE", "bench")

LOGGING = {**LOGGING, "root": {**LOGGING["root"], "level": os.environ.get("LOG_LEVEL", "WARNING")}}  # noqa: F405
