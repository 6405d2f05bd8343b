"""The pages in a real headless browser (Debian's chromium and chromium-driver, Selenium)
against a live server: no console errors, one chart mark per data point, usable at 375 and
1280 px, the constituency table sorts and pages, the language switch, and a transaction posted
through the API showing up on the open page within the live bound.

Without chromium these tests skip on a developer's machine and fail in CI (``CI`` set);
.ci/run installs the packages when they are missing."""

import json
import os
import shutil
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse
from rest_framework.authtoken.models import Token

from dashboard.presenters import TABLE_PAGE_SIZE
from elections.tests.factories import ConstituencyFactory, ElectionFactory
from metrics.tests.test_selectors import seeded_election

pytestmark = pytest.mark.django_db(transaction=True)

POLL_SECONDS = 2.0  # dashboard.js POLL_MS
# What the page can take to show a committed change: one poll interval, plus the poll's own
# round trip and the DOM update (README, "Dashboard").
LIVE_BOUND = POLL_SECONDS + 0.5
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
WIDTHS = (375, 1280)


def _binaries() -> tuple[str | None, str | None]:
    return shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser():
    chromium, driver_path = _binaries()
    if not (chromium and driver_path):
        message = "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(f"CI: {message}; .ci/run installs them")
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="em-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_until(condition, timeout: float = 10.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {condition}")
        time.sleep(interval)


def page_language(browser) -> str | None:
    """The html element's lang, or None while a navigation replaces the document."""
    from selenium.common.exceptions import WebDriverException

    try:
        return browser.execute_script("return document.readyState === 'complete' && document.documentElement.lang")
    except WebDriverException:
        return None


def open_page(browser, url: str, width: int = 1280):
    browser.set_window_size(width, 900)
    browser.get(url)
    wait_until(lambda: browser.execute_script("return document.readyState") == "complete")
    browser.get_log("browser")  # only what this page logs from here on counts


def console_errors(browser) -> list[dict]:
    return [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


def chart_marks(browser) -> list[tuple[str, int, int]]:
    """(chart id, data points in its embedded data, marks drawn in its SVG), once drawn."""
    script = """
        return Array.from(document.querySelectorAll('[data-chart]')).map(function (el) {
            var spec = JSON.parse(document.getElementById(el.getAttribute('data-chart')).textContent);
            var points = spec.series.reduce(function (n, s) { return n + s.data.length; }, 0);
            return [el.id, points, el.querySelectorAll('svg .ct-bar, svg .ct-point').length,
                    el.getAttribute('data-drawn')];
        });
    """
    charts = wait_until(lambda: (c := browser.execute_script(script)) and all(row[3] for row in c) and c)
    return [(chart_id, points, marks) for chart_id, points, marks, _ in charts]


@pytest.fixture
def closed_election(db):
    return seeded_election(tz="Europe/Berlin", constituencies=6)


def test_every_page_loads_without_console_errors_and_draws_one_mark_per_point(browser, live_server, closed_election):
    election = closed_election.election
    constituency = closed_election.constituencies[-1]
    pages = {
        "elections": reverse("dashboard:elections"),
        "election": reverse("dashboard:election", args=[election.code]),
        "constituency": reverse("dashboard:constituency", args=[election.code, constituency.code]),
        "login": reverse("dashboard:login"),
    }
    expected_charts = {"elections": 0, "election": 2, "constituency": 3, "login": 0}
    for name, path in pages.items():
        for width in WIDTHS:
            open_page(browser, live_server.url + path, width)
            charts = chart_marks(browser) if expected_charts[name] else []
            assert len(charts) == expected_charts[name], name
            for chart_id, points, marks in charts:
                assert points > 0, chart_id
                assert marks == points, (name, width, chart_id)
            # Usable at this width: nothing wider than the window but the tables' own scrollers.
            overflow = browser.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, (name, width, overflow)
            assert console_errors(browser) == [], (name, width)


@pytest.fixture
def many_constituencies(db):
    election = ElectionFactory(code="browser-table")
    for i in range(TABLE_PAGE_SIZE + 5):
        ConstituencyFactory(election=election, code=f"t{i:03d}", registered_voters=100 + (i * 53) % 97)
    return election


def first_column(browser, column: int) -> list[str]:
    return browser.execute_script(
        "return Array.from(document.querySelectorAll('#constituency-table tbody tr'))"
        f".map(function (tr) {{ return tr.children[{column}].textContent.trim(); }});"
    )


def test_constituency_table_sorts_and_pages(browser, live_server, many_constituencies):
    from selenium.webdriver.common.by import By

    open_page(browser, live_server.url + reverse("dashboard:election", args=[many_constituencies.code]))
    assert first_column(browser, 0) == [f"t{i:03d}" for i in range(TABLE_PAGE_SIZE)]
    browser.find_element(By.CSS_SELECTOR, 'a[data-sort="registered_voters"]').click()
    wait_until(lambda: "sort=-registered_voters" in browser.current_url)
    voters = [int(v.replace(",", "")) for v in first_column(browser, 2)]
    assert voters == sorted(voters, reverse=True)
    assert voters[0] == max(100 + (i * 53) % 97 for i in range(55))
    browser.find_element(By.CSS_SELECTOR, 'a[data-sort="registered_voters"]').click()
    wait_until(lambda: "sort=registered_voters" in browser.current_url)
    ascending = [int(v.replace(",", "")) for v in first_column(browser, 2)]
    assert ascending == sorted(ascending)
    browser.find_element(By.CSS_SELECTOR, 'a[rel="next"]').click()
    wait_until(lambda: "page=2" in browser.current_url)
    assert len(first_column(browser, 0)) == 5
    assert "sort=registered_voters" in browser.current_url  # paging keeps the order
    assert console_errors(browser) == []


def test_the_language_switch_changes_the_page_language(browser, live_server, closed_election):
    from selenium.webdriver.common.by import By

    url = live_server.url + reverse("dashboard:election", args=[closed_election.election.code])
    open_page(browser, url)
    assert page_language(browser) == "en"
    browser.find_element(By.ID, "lang-ru").click()
    wait_until(lambda: page_language(browser) == "ru")
    assert browser.current_url == url
    assert "Явка по часам" in browser.find_element(By.ID, "turnout-h").text
    browser.find_element(By.ID, "lang-en").click()
    wait_until(lambda: page_language(browser) == "en")
    assert console_errors(browser) == []


def post_json(url: str, token: str, body: dict) -> dict:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Token {token}"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status in (200, 201)
        return json.loads(response.read())


def test_a_transaction_posted_during_the_test_shows_on_the_open_page_within_the_live_bound(browser, live_server):
    from selenium.webdriver.common.by import By

    now = datetime.now(UTC)
    election = ElectionFactory(code="live", starts_at=now - timedelta(hours=3), ends_at=now + timedelta(hours=3))
    constituency = ConstituencyFactory(election=election, registered_voters=500)
    user = User.objects.create_user("live-ingest", password="unused-password-9")
    user.user_permissions.add(Permission.objects.get(codename="ingest_data"))
    token = Token.objects.create(user=user).key
    api = live_server.url + reverse("transaction-list")

    def tx(n: int) -> dict:
        stamp = (now - timedelta(minutes=30 - n)).isoformat()
        return {"tx_hash": f"0xlive{n:04d}", "constituency": constituency.id, "kind": "vote_cast", "timestamp": stamp}

    post_json(api, token, tx(1))
    open_page(browser, live_server.url + reverse("dashboard:election", args=[election.code]))

    def votes() -> str:  # looked up each time: a refresh replaces the section holding it
        return browser.execute_script("return document.querySelector('[data-field=\"total_votes_cast\"]').textContent")

    assert votes() == "1"
    time.sleep(2 * POLL_SECONDS + 0.3)  # two polls: the first fetches, the second is a 304
    post_json(api, token, tx(2))
    committed = time.monotonic()
    wait_until(lambda: votes() == "2", timeout=LIVE_BOUND + 2)
    elapsed = time.monotonic() - committed
    assert elapsed <= LIVE_BOUND, f"shown {elapsed:.2f} s after the commit"
    # Then the server-rendered sections follow (the turnout chart and table, the feeds).
    wait_until(
        lambda: (
            chart_marks(browser)[0][1] >= 1
            and "2" in browser.find_element(By.ID, "turnout-table").get_attribute("textContent")
        )
    )
    # Every request the page's script made (polls and the one refresh after a change): one per
    # poll interval at most, and 304s while nothing changed.
    requests = browser.execute_script(
        "return performance.getEntriesByType('resource')"
        ".filter(function (e) { return e.initiatorType === 'fetch'; })"
        ".map(function (e) { return [e.startTime, e.responseStatus, e.name]; });"
    )
    starts = [start for start, _, _ in requests]
    assert all(b - a >= POLL_SECONDS * 1000 - 50 for a, b in zip(starts, starts[1:], strict=False)), starts
    poll_url = reverse("election-metrics", kwargs={"election_id": election.id})
    assert 304 in [status for _, status, name in requests if poll_url in name], requests
    assert console_errors(browser) == []
