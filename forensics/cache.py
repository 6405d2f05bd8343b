"""Every forensics cache key and TTL lives here (SPEC sections 6 and 11).

Invalidation is anchored in the database: each key carries the id of the election's latest
protocol import (``protocols.ProtocolImport``), read from the database on every request. A
re-import commits a new id in the same transaction as the new protocols, so any process sees
the new figures at once, and no cache entry or version counter has to be deleted or bumped
(an entry of an older import is simply never asked for again and ages out).

A cache outage is never an error: every operation degrades to a miss and the figure is
computed from the database. Under a burst of misses for one key, one caller computes while
the others wait for its result (a figure can take seconds).
"""

import hashlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.cache import cache

logger = logging.getLogger(__name__)

LOCK_TTL = 60  # seconds a computation may hold its key's lock
LOCK_WAIT = 30.0  # seconds a request waits for another's computation before doing its own
LOCK_POLL = 0.05
_MISS = object()


def figure_key(*, election_id: int, import_id: int, figure: str, **params) -> str:
    """Key of a figure (JSON data, or its picture with ``representation="png"``)."""
    text = json.dumps(params, sort_keys=True, default=str)
    digest = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:16]
    return f"forensics:election:{election_id}:import:{import_id}:{figure}:{digest}"


# Keys built from query parameters must span a bounded set. Histogram and fingerprint widths
# are divisors of 100 (a few thousand at most); repetitions and seed are free, so only the
# defaults, the figure everyone reads, are cached, and other values are computed each time.
UNCACHED_UNLESS = {"integer-excess": {"reps": 1000, "seed": 42}}


def figure_cacheable(figure: str, **params) -> bool:
    wanted = UNCACHED_UNLESS.get(figure)
    return wanted is None or all(params.get(name) == value for name, value in wanted.items())


def cached(key: str, compute: Callable[[], Any]) -> Any:
    """The value stored under ``key``, or ``compute()``'s, stored for FORENSICS_CACHE_TTL."""
    value = _get(key)
    if value is not _MISS:
        return value
    lock_key = f"{key}:lock"
    deadline = time.monotonic() + LOCK_WAIT
    locked = _add(lock_key)
    while locked is False and time.monotonic() < deadline:
        time.sleep(LOCK_POLL)
        value = _get(key)
        if value is not _MISS:
            return value
        locked = _add(lock_key)  # the computing caller failed or finished without storing
    try:
        value = compute()
        _set(key, value)
    finally:
        if locked:
            _delete(lock_key)
    return value


def _get(key: str) -> Any:
    try:
        return cache.get(key, _MISS)
    except Exception:
        logger.warning("forensics cache get failed for %s; computing from the database", key, exc_info=True)
        return _MISS


def _set(key: str, value: Any) -> None:
    try:
        cache.set(key, value, settings.FORENSICS_CACHE_TTL)
    except Exception:
        logger.warning("forensics cache set failed for %s", key, exc_info=True)


def _add(key: str) -> bool | None:
    """True: lock taken; False: held by another caller; None: the cache failed (compute anyway)."""
    try:
        return bool(cache.add(key, 1, LOCK_TTL))
    except Exception:
        logger.warning("forensics cache add failed for %s", key, exc_info=True)
        return None


def _delete(key: str) -> None:
    try:
        cache.delete(key)
    except Exception:
        logger.warning("forensics cache delete failed for %s", key, exc_info=True)
