"""The receivers of what metrics announces: episode events and drift repairs reach the
channels."""

import pytest
from django.core import mail
from django.db import transaction

from alerts.models import AlertDelivery, AlertMessage, DeliveryStatus
from alerts.tests.conftest import email_channel, episode_event, webhook_channel
from elections.models import Transaction
from metrics.events import episode_events_announce
from metrics.pipeline import settled_elections_verify
from metrics.tests.test_selectors import seeded_election

pytestmark = pytest.mark.django_db


def test_recorded_events_are_dispatched_after_the_commit_that_recorded_them(
    receiver, alert_settings, two_elections, django_capture_on_commit_callbacks
):
    """Through the signal the episode upkeep sends (metrics.events)."""
    webhook_channel(receiver)
    election = two_elections[0]
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        event = episode_event(election.constituencies.first())
        episode_events_announce(election_id=election.id, event_ids=[event.id])
        assert receiver.count() == 0  # nothing before the commit
    assert receiver.count() == 1
    assert AlertDelivery.objects.get().event_id == event.id


def test_a_drift_repair_in_a_settled_election_is_alerted(receiver, alert_settings, django_capture_on_commit_callbacks):
    seeded = seeded_election(tz="Europe/Berlin", constituencies=5, seed=5)
    election = seeded.election
    webhook_channel(receiver, election=election)
    email_channel(name="global", recipients="audit@example.org")
    gone = Transaction.objects.filter(constituency=seeded.constituencies[0]).order_by("id")[:7]
    Transaction.objects.filter(pk__in=list(gone.values_list("pk", flat=True))).delete()  # behind the product's back

    with django_capture_on_commit_callbacks(execute=True):
        (check,) = settled_elections_verify()

    assert check.drifted
    message = AlertMessage.objects.get()
    assert message.election_id == election.id
    assert message.body["drift_check_id"] == check.id
    assert message.body["repaired_buckets"] == check.repaired_buckets > 0
    # The repair may also move episodes (their events are alerted too); one message.
    [post] = [p for p in receiver.posts if p.json["type"] == "message"]
    assert post.signature_ok
    assert post.json["message"]["subject"].startswith(f"Verification repaired {check.repaired_buckets} hourly buckets")
    [email] = [m for m in mail.outbox if "Verification repaired" in m.subject]
    assert email.to == ["audit@example.org"]
    assert set(AlertDelivery.objects.values_list("status", flat=True)) == {DeliveryStatus.DELIVERED}

    # The next verification finds nothing to repair and alerts nothing.
    posts = receiver.count()
    with django_capture_on_commit_callbacks(execute=True):
        settled_elections_verify()
    assert AlertMessage.objects.count() == 1
    assert receiver.count() == posts
