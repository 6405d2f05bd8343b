"""election_monitor/throttling.py: the anonymous throttle identifies clients by the trusted
proxy count (TRUSTED_PROXY_COUNT, DRF's NUM_PROXIES), never by a raw X-Forwarded-For."""

import random

import pytest

from election_monitor.throttling import FailOpenAnonRateThrottle

URL = "/api/metrics/dashboard/summary/"


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def three_a_minute(monkeypatch, db):
    monkeypatch.setattr(FailOpenAnonRateThrottle, "timer", Clock(1_700_000_000.0))
    monkeypatch.setattr(FailOpenAnonRateThrottle, "THROTTLE_RATES", {"anon": "3/minute"})


def random_address(rng: random.Random) -> str:
    return ".".join(str(rng.randrange(1, 255)) for _ in range(4))


def with_proxies(settings, count: int) -> None:
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": count}


def test_by_default_a_random_forwarded_for_header_does_not_bypass_the_throttle(api_client, three_a_minute):
    rng = random.Random(3)
    statuses = [
        api_client.get(URL, HTTP_X_FORWARDED_FOR=random_address(rng), REMOTE_ADDR="198.51.100.7").status_code
        for _ in range(8)
    ]
    assert statuses == [200, 200, 200] + [429] * 5


def test_by_default_clients_are_told_apart_by_their_connection_address(api_client, three_a_minute):
    for address in ("198.51.100.1", "198.51.100.2"):
        statuses = [api_client.get(URL, REMOTE_ADDR=address).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429], address


def test_behind_one_proxy_the_address_it_appended_is_the_client(api_client, three_a_minute, settings):
    with_proxies(settings, 1)
    rng = random.Random(5)
    proxy = "10.0.0.2"
    # The client forges whatever it likes in front; the proxy appends the address it saw.
    forged = [
        api_client.get(URL, HTTP_X_FORWARDED_FOR=f"{random_address(rng)}, 203.0.113.50", REMOTE_ADDR=proxy).status_code
        for _ in range(5)
    ]
    assert forged == [200, 200, 200, 429, 429]
    # Another client behind the same proxy has its own allowance.
    other = [api_client.get(URL, HTTP_X_FORWARDED_FOR="203.0.113.51", REMOTE_ADDR=proxy).status_code for _ in range(4)]
    assert other == [200, 200, 200, 429]


def test_behind_two_proxies_forged_entries_in_front_are_ignored(api_client, three_a_minute, settings):
    with_proxies(settings, 2)
    rng = random.Random(8)
    statuses = [
        api_client.get(
            URL,
            HTTP_X_FORWARDED_FOR=f"{random_address(rng)}, {random_address(rng)}, 203.0.113.60, 10.0.0.3",
            REMOTE_ADDR="10.0.0.4",
        ).status_code
        for _ in range(5)
    ]
    assert statuses == [200, 200, 200, 429, 429]
