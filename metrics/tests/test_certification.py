"""Certified figures carry a snapshot_sha256 that anyone can recompute from the API alone."""

import hashlib
from datetime import datetime

import pytest
from django.contrib.auth.models import User
from django.test import TestCase

from elections.services import election_certify, election_uncertify
from metrics.tests.test_selectors import seeded_election


def all_pages(client, url: str) -> list[dict]:
    rows, page = [], 1
    while True:
        body = client.get(url, {"page": page, "page_size": 1000}).json()
        rows += body["results"]
        if not body["next"]:
            return rows
        page += 1


def snapshot_from_the_api(client, election_id: int) -> str:
    """The procedure of the README's "Certification" section, from API output only."""
    hourly = all_pages(client, f"/api/hourly-stats/election/{election_id}/")
    places = all_pages(client, f"/api/metrics/election/{election_id}/constituencies/")
    lines = ["hourly_stats"]
    for row in sorted(hourly, key=lambda r: (datetime.fromisoformat(r["hour"]), r["constituency_id"])):
        hour = int(datetime.fromisoformat(row["hour"]).timestamp())
        lines.append(
            f"{row['constituency_id']},{hour},{row['bulletins_issued']},{row['votes_cast']},{row['transaction_count']}"
        )
    lines.append("constituencies")
    for row in sorted(places, key=lambda r: r["constituency_id"]):
        figures = ("constituency_id", "registered_voters", "total_bulletins_issued", "total_votes_cast")
        lines.append(",".join(str(row[name]) for name in (*figures, "total_transactions")))
    return hashlib.sha256(("\n".join(lines) + "\n").encode()).hexdigest()


@pytest.mark.django_db
def test_a_certified_elections_snapshot_is_reproducible_from_the_api(api_client):
    seeded = seeded_election(tz="Asia/Kolkata", constituencies=5, seed=3)
    staff = User.objects.create_user("cert", password="unused-password-4", is_staff=True)
    url = f"/api/metrics/election/{seeded.election.id}/"
    assert api_client.get(url).json()["snapshot_sha256"] is None  # not certified yet

    with TestCase.captureOnCommitCallbacks(execute=True):
        election_certify(election_id=seeded.election.id, user=staff)
    body = api_client.get(url).json()

    assert body["certified_at"] is not None
    assert len(body["snapshot_sha256"]) == 64
    assert body["snapshot_sha256"] == snapshot_from_the_api(api_client, seeded.election.id)


@pytest.mark.django_db
def test_the_snapshot_changes_with_the_figures_and_vanishes_when_uncertified(api_client):
    from elections.models import Constituency

    seeded = seeded_election(tz="Europe/Berlin", constituencies=5, seed=4)
    staff = User.objects.create_user("cert", password="unused-password-4", is_staff=True)
    url = f"/api/metrics/election/{seeded.election.id}/"
    with TestCase.captureOnCommitCallbacks(execute=True):
        election_certify(election_id=seeded.election.id, user=staff)
    certified = api_client.get(url).json()["snapshot_sha256"]
    # A figure changed behind the product's back (and the figures' version moved).
    Constituency.objects.filter(pk=seeded.constituencies[0].pk).update(total_votes_cast=10**6)
    from metrics.cache import metrics_cache

    metrics_cache.election_version_bump(seeded.election.id)
    assert api_client.get(url).json()["snapshot_sha256"] != certified
    with TestCase.captureOnCommitCallbacks(execute=True):
        election_uncertify(election_id=seeded.election.id, user=staff, reason="test")
    assert api_client.get(url).json()["snapshot_sha256"] is None
