"""The dashboard pages through Django's test client: what they show against the independent
reference, local times with their offset, the constituency table's search, sort and pages,
permissions, English and Russian, download and admin links, and bad parameters."""

import json
import re
from datetime import UTC, datetime
from html import unescape
from zoneinfo import ZoneInfo

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from dashboard.presenters import TABLE_PAGE_SIZE
from elections.tests.factories import ConstituencyFactory, ElectionFactory
from metrics.tests.test_selectors import seeded_election

pytestmark = pytest.mark.django_db


@pytest.fixture(params=["Europe/Berlin", "Asia/Kolkata"])
def seeded(request):
    return seeded_election(tz=request.param, constituencies=6)


def page(client, url, **headers):
    response = client.get(url, **headers)
    assert response.status_code == 200, response.content[:500]
    return response.content.decode()


def fields(html: str) -> dict[str, str]:
    """Headline figures by their data-field name."""
    return {
        name: unescape(value)
        for name, value in re.findall(r'data-field="([a-z_]+)"(?: data-decimals="\d")?>([^<]*)<', html)
    }


def chart_data(html: str, chart_id: str) -> dict:
    found = re.search(rf'<script id="{chart_id}-data" type="application/json">(.*?)</script>', html, re.S)
    return json.loads(found.group(1))


def number(text: str) -> float:
    return float(text.replace(",", "").replace("\xa0", "").replace(" ", ""))


def election_url(election) -> str:
    return reverse("dashboard:election", args=[election.code])


def constituency_url(election, constituency) -> str:
    return reverse("dashboard:constituency", args=[election.code, constituency.code])


# --- figures -----------------------------------------------------------------------------


def test_election_page_shows_the_reference_figures_and_turnout_curve(client, seeded):
    html = page(client, election_url(seeded.election))
    want = seeded.expected["election"]
    shown = fields(html)
    for name in ("total_votes_cast", "total_bulletins_issued", "registered_voters", "total_transactions"):
        assert number(shown[name]) == want[name], name
    assert number(shown["participation_rate"]) == pytest.approx(want["participation_rate"], abs=0.005)
    assert number(shown["total_anomalies"]) == want["total_anomalies"]
    votes = chart_data(html, "chart-votes")
    participation = chart_data(html, "chart-participation")
    assert votes["series"][0]["data"] == [row["votes_cast"] for row in want["hourly_turnout"]]
    assert participation["series"][0]["data"] == pytest.approx(
        [row["participation_rate"] for row in want["hourly_turnout"]]
    )
    tz = ZoneInfo(seeded.election.timezone)
    assert votes["labels"] == [row["hour"].astimezone(tz).strftime("%m-%d %H:%M") for row in want["hourly_turnout"]]


def test_constituency_page_shows_the_reference_hours_velocities_and_activity(client, seeded):
    constituency = seeded.constituencies[-1]  # the small one: turnout over 100 %
    html = page(client, constituency_url(seeded.election, constituency))
    want = seeded.expected["constituencies"][constituency.id]
    shown = fields(html)
    assert number(shown["total_votes_cast"]) == want["total_votes_cast"]
    assert number(shown["anomaly_score"]) == pytest.approx(want["anomaly_score"], abs=0.005)
    hours = sorted((h, row) for (cid, h), row in seeded.expected["hourly"].items() if cid == constituency.id)
    counts = chart_data(html, "chart-counts")
    assert counts["series"][0]["data"] == [row["bulletins_issued"] for _, row in hours]
    assert counts["series"][1]["data"] == [row["votes_cast"] for _, row in hours]
    velocity = chart_data(html, "chart-velocity")
    assert velocity["series"][1]["data"] == pytest.approx([row["vote_velocity"] for _, row in hours])
    activity = chart_data(html, "chart-activity")
    assert activity["series"][1]["data"] == [slot["votes_cast"] for slot in want["hourly_activity"]]
    assert "Turnout over 100 %" in html  # its anomaly feed


def test_times_are_local_and_labelled_with_their_offset(client, seeded):
    election = seeded.election
    html = page(client, election_url(election))
    tz = ZoneInfo(election.timezone)
    first = seeded.expected["election"]["hourly_turnout"][0]["hour"]
    local = first.astimezone(tz).strftime("%Y-%m-%d %H:%M")
    assert f'<time datetime="{first.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}">{local}' in html
    assert election.timezone in html
    if election.timezone == "Asia/Kolkata":
        assert "UTC+05:30" in html
    else:  # the Berlin window crosses the autumn change: each time carries its own offset
        assert "UTC+02:00" in html
        assert "UTC+01:00" in html


def test_elections_page_lists_every_election_with_links(client, seeded):
    other = ElectionFactory(code="empty-one", timezone="America/Sao_Paulo")
    html = page(client, reverse("dashboard:elections"))
    assert f'href="{election_url(seeded.election)}"' in html
    assert f'href="{election_url(other)}"' in html
    assert "UTC−03:00" in html  # Sao Paulo, with its own offset
    assert number(fields(html)["total_votes_cast"]) == seeded.expected["election"]["total_votes_cast"]


def test_pages_link_their_csv_exports(client, seeded):
    html = page(client, election_url(seeded.election))
    url = reverse("hourly-stats-election", kwargs={"election_id": seeded.election.id}) + "?format=csv"
    assert f'href="{url}"' in html
    assert client.get(url).status_code == 200
    constituency = seeded.constituencies[0]
    html = page(client, constituency_url(seeded.election, constituency))
    url = reverse("hourly-stats-constituency", kwargs={"constituency_id": constituency.id}) + "?format=csv"
    assert f'href="{url}"' in html


# --- the constituency table ---------------------------------------------------------------


@pytest.fixture
def big_election(db):
    election = ElectionFactory(code="many")
    for i in range(TABLE_PAGE_SIZE + 7):
        ConstituencyFactory(
            election=election, code=f"k{i:03d}", name=f"Place {i}", registered_voters=100 + (i * 37) % 90
        )
    return election


def table_codes(html: str) -> list[str]:
    body = html.split('id="constituency-table"', 1)[1].split("</table>", 1)[0]
    return re.findall(r'/constituencies/([^/]+)/">', body)


def test_constituency_table_sorts_pages_and_searches(client, big_election):
    url = election_url(big_election)
    first = table_codes(page(client, url))
    assert first == [f"k{i:03d}" for i in range(TABLE_PAGE_SIZE)]
    second = page(client, url + "?page=2")
    assert table_codes(second) == [f"k{i:03d}" for i in range(TABLE_PAGE_SIZE, TABLE_PAGE_SIZE + 7)]
    assert "Page 2 of 2" in second
    voters = {f"k{i:03d}": 100 + (i * 37) % 90 for i in range(TABLE_PAGE_SIZE + 7)}
    by_voters = table_codes(page(client, url + "?sort=-registered_voters"))
    assert by_voters == sorted(voters, key=lambda code: (-voters[code], code))[:TABLE_PAGE_SIZE]
    assert table_codes(page(client, url + "?q=place 1")) == [f"k{i:03d}" for i in [1, *range(10, 20)]]
    assert table_codes(page(client, url + "?q=K05")) == [f"k05{i}" for i in range(7)]
    assert "No constituency matches." in page(client, url + "?q=nothing-like-it")


def test_sort_links_flip_the_direction_and_keep_the_search(client, big_election):
    html = page(client, election_url(big_election) + "?q=place&sort=-total_votes_cast")
    assert 'href="?q=place&amp;sort=total_votes_cast" data-sort="total_votes_cast"' in html
    assert 'aria-sort="descending"' in html


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("?sort=bogus", 400),
        ("?page=0", 400),
        ("?page=abc", 400),
        ("?page=99", 404),
        ("?page=99999999999999999999", 400),
        ("?q=" + "x" * 101, 400),
    ],
)
def test_bad_table_parameters_are_a_400_or_404(client, big_election, query, status):
    response = client.get(election_url(big_election) + query)
    assert response.status_code == status


def test_unknown_elections_and_constituencies_are_404(client, seeded):
    assert client.get(reverse("dashboard:election", args=["no-such"])).status_code == 404
    other = seeded_election(tz="Europe/Berlin", constituencies=5, seed=3).election
    # A code of another election's constituency is not this election's.
    code = ConstituencyFactory(election=other, code="only-there").code
    assert client.get(reverse("dashboard:constituency", args=[seeded.election.code, code])).status_code == 404
    assert client.post(election_url(seeded.election)).status_code == 405
    for code in ("nul%00byte", "x" * 65):
        assert client.get(f"/elections/{code}/").status_code == 404
        assert client.get(f"/elections/{seeded.election.code}/constituencies/{code}/").status_code == 404


# --- permissions and language ------------------------------------------------------------


def test_pages_need_a_login_when_anonymous_reads_are_off(client, seeded, settings):
    settings.METRICS_ALLOW_ANONYMOUS_READ = False
    url = election_url(seeded.election)
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("dashboard:login"))
    login = client.get(response["Location"])
    assert login.status_code == 200
    assert b'name="password"' in login.content
    User.objects.create_user("observer", password="a-long-password-1")
    signed_in = client.post(
        response["Location"], {"username": "observer", "password": "a-long-password-1", "next": url}
    )
    assert signed_in.status_code == 302
    assert signed_in["Location"] == url
    assert client.get(url).status_code == 200


def test_the_dashboard_login_is_throttled_like_the_admins(client, settings):
    settings.ADMIN_LOGIN_MAX_FAILURES = 2
    User.objects.create_user("observer", password="a-long-password-1")
    url = reverse("dashboard:login")
    for _ in range(2):
        assert client.post(url, {"username": "observer", "password": "wrong"}).status_code == 200
    refused = client.post(url, {"username": "observer", "password": "a-long-password-1"})
    assert refused.status_code == 429


def test_russian_by_accept_language_and_by_the_switch(client, seeded):
    url = election_url(seeded.election)
    html = page(client, url, HTTP_ACCEPT_LANGUAGE="ru")
    assert '<html lang="ru">' in html
    assert "Явка по часам" in html
    assert "Участки" in html
    english = page(client, url, HTTP_ACCEPT_LANGUAGE="en")
    assert '<html lang="en">' in english
    assert "Turnout by hour" in english
    response = client.post(reverse("set_language"), {"language": "ru", "next": url})
    assert response.status_code == 302
    assert response["Location"] == url
    switched = page(client, url)
    assert "Явка по часам" in switched
    # Numbers in the Russian style: a non-breaking space groups thousands, a comma marks decimals.
    votes = seeded.expected["election"]["total_votes_cast"]
    assert f"{votes:,}".replace(",", "\xa0") in switched


def test_the_admin_links_hourly_stats_and_constituencies_to_their_dashboard_page(client, seeded):
    User.objects.create_superuser("admin", password="a-long-password-2")
    client.login(username="admin", password="a-long-password-2")
    constituency = seeded.constituencies[0]
    target = constituency_url(seeded.election, constituency)
    change = client.get(reverse("admin:elections_constituency_change", args=[constituency.id]))
    assert f'href="{target}"' in change.content.decode()
    stats = client.get(reverse("admin:metrics_hourlystats_changelist"), {"constituency": constituency.id})
    assert f'href="{target}#hourly"' in stats.content.decode()


def test_a_page_of_an_active_election_names_its_live_endpoint(client):
    now = datetime.now(UTC)
    election = ElectionFactory(starts_at=now.replace(year=now.year - 1), ends_at=now.replace(year=now.year + 1))
    html = page(client, election_url(election))
    assert f'data-live-url="{reverse("election-metrics", kwargs={"election_id": election.id})}"' in html
    closed = page(client, election_url(ElectionFactory()))
    assert 'data-live-url=""' in closed
