"""Query bounds on the hour grid (metrics/selectors.py): start_time and end_time are rounded
to the election's bucket starts before they reach a query or a cache key, so the key space
is bounded and the result is what the raw bounds select."""

import random
from datetime import timedelta

import pytest
from django.core.cache import caches
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from elections.timebuckets import HOUR
from metrics.models import HourlyStats
from metrics.tests.test_selectors import seeded_election

pytestmark = pytest.mark.django_db


def cache_keys(fragment: str) -> list[str]:
    """Keys of the real cache holding ``fragment`` (local memory or Redis)."""
    backend = caches["default"]
    if hasattr(backend, "_cache"):  # LocMemCache
        return [key for key in backend._cache if fragment in key]
    return list(backend.keys(f"*{fragment}*"))


def test_400_start_times_inside_one_hour_make_one_cache_entry(api_client):
    seeded = seeded_election(tz="Asia/Kolkata", constituencies=3)
    member = seeded.constituencies[0]
    hour = min(HourlyStats.objects.filter(constituency=member).values_list("hour", flat=True)) + 6 * HOUR
    url = f"/api/metrics/constituency/{member.id}/time-period/"
    rng = random.Random(4)
    offsets = sorted(rng.sample(range(1, 3600 * 1000), 400))  # milliseconds, strictly inside
    bodies = set()
    for offset in offsets:
        start = hour + timedelta(milliseconds=offset)
        response = api_client.get(url, {"period": "hour", "start_time": start.isoformat()})
        assert response.status_code == 200
        body = response.json()
        body.pop("computed_at")
        bodies.add(repr(body))

    assert len(cache_keys(":time-period:")) == 1
    assert len(bodies) == 1
    # ... and it is what the next bucket start, sent as is, selects.
    exact = api_client.get(url, {"period": "hour", "start_time": (hour + HOUR).isoformat()}).json()
    exact.pop("computed_at")
    assert repr(exact) in bodies
    assert exact["buckets"][0]["start"] == (hour + HOUR).isoformat().replace("+00:00", "Z")


@pytest.mark.parametrize("tz", ["Asia/Kolkata", "Europe/Berlin"])
def test_rounded_bounds_select_what_the_raw_bounds_select(api_client, tz):
    seeded = seeded_election(tz=tz, constituencies=3)
    stored = sorted(HourlyStats.objects.filter(election=seeded.election).values_list("hour", "constituency_id"))
    first, last = stored[0][0], stored[-1][0]
    span = int((last - first).total_seconds())

    @given(
        start=st.integers(-7200, span + 7200),
        length=st.integers(0, span + 7200),
        bounds=st.sampled_from(["both", "start", "end"]),
    )
    @settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def check(start, length, bounds):
        start_time = first + timedelta(seconds=start, microseconds=start % 997)
        end_time = start_time + timedelta(seconds=length)
        params = {"page_size": 1000}
        if bounds in ("both", "start"):
            params["start_time"] = start_time.isoformat()
        if bounds in ("both", "end"):
            params["end_time"] = end_time.isoformat()
        body = api_client.get(f"/api/hourly-stats/election/{seeded.election.id}/", params).json()
        got = [(row["hour"], row["constituency_id"]) for row in body["results"]]
        # The reference: the raw bounds applied to the stored rows in plain Python.
        want = [
            (hour.isoformat().replace("+00:00", "Z"), constituency_id)
            for hour, constituency_id in stored
            if ("start_time" not in params or hour >= start_time) and ("end_time" not in params or hour < end_time)
        ]
        assert body["count"] == len(want)
        assert got == want[:1000]

    check()
