"""Alerts end to end with a real Celery worker, PostgreSQL and a Redis broker: from a
transaction posted through the API to a signed POST at a local receiver, retries with
their real countdowns, and a worker killed with SIGKILL in the middle of a delivery."""

import threading
from datetime import timedelta

import pytest
from django.utils import timezone

from alerts.models import AlertDelivery, DeliveryStatus
from alerts.tasks import recover_deliveries
from alerts.tests.conftest import episode_event, webhook_channel
from elections.tests.factories import ConstituencyFactory, ElectionFactory
from metrics.events import episode_events_announce
from metrics.models import Episode, EpisodeEvent

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def election(db):
    election = ElectionFactory(code="alerts-live")
    ConstituencyFactory.create_batch(3, election=election, registered_voters=1000)
    return election


def delivered(count: int):
    def check():
        return AlertDelivery.objects.filter(status=DeliveryStatus.DELIVERED).count() == count

    return check


def test_a_transaction_that_opens_an_episode_sends_one_opened_post(worker, poll, receiver, ingest_client, election):
    channel = webhook_channel(receiver, election=election)
    constituency = election.constituencies.first()
    # A bulletin before the polls open: an outside_voting_window anomaly (and no other), and
    # a new episode.
    response = ingest_client.post(
        "/api/transactions/",
        {
            "tx_hash": "early-bulletin",
            "constituency": constituency.id,
            "kind": "bulletin_issued",
            "timestamp": (election.starts_at - timedelta(minutes=20)).isoformat(),
        },
        format="json",
    )
    assert response.status_code == 201

    poll(delivered(1), timeout=20, message="the opened alert delivered")
    worker.wait_idle()
    assert EpisodeEvent.objects.count() == 1
    assert receiver.count() == 1
    post = receiver.posts[0]
    assert post.signature_ok
    body = post.json
    assert body["type"] == "episode.opened"
    assert body["election"]["code"] == "alerts-live"
    assert body["event"]["kind"] == "outside_voting_window"
    assert body["event"]["constituency"]["id"] == constituency.id
    episode = Episode.objects.get(constituency=constituency)
    assert body["event"]["first_hour"].startswith(episode.first_hour.strftime("%Y-%m-%dT%H:%M"))
    delivery = AlertDelivery.objects.get()
    assert (delivery.channel_id, delivery.attempts) == (channel.id, 1)
    assert post.delivery_id == str(delivery.uuid)


def test_recorded_events_reach_the_receiver_through_the_worker(worker, poll, receiver, election):
    webhook_channel(receiver)
    constituencies = list(election.constituencies.all())
    events = [episode_event(c, event=name) for c in constituencies for name in ("opened", "closed")]
    # As the episode upkeep does: announced after the commit that recorded them.
    episode_events_announce(election_id=election.id, event_ids=[e.id for e in events])

    poll(delivered(len(events)), timeout=20, message="every event delivered")
    worker.wait_idle()
    assert receiver.count() == len(events)
    assert sorted(p.json["event"]["id"] for p in receiver.posts) == sorted(e.id for e in events)
    assert all(p.signature_ok for p in receiver.posts)


def test_receiver_failing_twice_then_succeeding_gets_one_delivery_after_three_attempts(
    worker, poll, receiver, election
):
    """With the worker's own retries and their countdowns (backoff with jitter)."""
    receiver.statuses = [500, 502]
    webhook_channel(receiver)
    event = episode_event(election.constituencies.first())
    episode_events_announce(election_id=election.id, event_ids=[event.id])

    poll(delivered(1), timeout=30, message="delivered after the retries")
    worker.wait_idle()
    delivery = AlertDelivery.objects.get()
    assert delivery.attempts == 3
    assert [p.answered for p in receiver.posts] == [500, 502, 200]
    assert {p.delivery_id for p in receiver.posts} == {str(delivery.uuid)}
    # The retries waited: at least half of base × 2^0 and of base × 2^1 (settings).
    gaps = [b.arrived - a.arrived for a, b in zip(receiver.posts, receiver.posts[1:], strict=False)]
    assert gaps[0] >= 0.9
    assert gaps[1] >= 1.9


def test_worker_killed_mid_delivery_recovers_to_one_delivered_row(worker, poll, receiver, election):
    """SIGKILL while the receiver holds the POST: the row stays claimed (sending) until its
    lease runs out; the recovery job then re-queues it and it is sent again with the same
    delivery id, which the receiver can dedupe on. One row, delivered."""
    receiver.hold = threading.Event()
    webhook_channel(receiver)
    event = episode_event(election.constituencies.first())
    episode_events_announce(election_id=election.id, event_ids=[event.id])

    assert receiver.arrived.wait(20), "the first attempt never arrived"
    worker.kill()  # kill -9 the whole worker and its pool process
    receiver.hold.set()
    # Its message stays unacknowledged in Redis until the visibility timeout (an hour):
    # treat it as lost, so only the recovery job can finish the delivery.
    worker.purge()
    delivery = AlertDelivery.objects.get()
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.SENDING, 1)

    worker.start()
    recover_deliveries.delay()  # the lease is still running: nothing to take over
    worker.wait_idle()
    assert AlertDelivery.objects.get().status == DeliveryStatus.SENDING
    # Instead of waiting out ALERTS_LEASE_SECONDS: the lease runs out.
    AlertDelivery.objects.filter(pk=delivery.pk).update(lease_until=timezone.now() - timedelta(seconds=1))
    recover_deliveries.delay()

    poll(delivered(1), timeout=20, message="delivered after recovery")
    worker.wait_idle()
    assert AlertDelivery.objects.count() == 1
    delivery = AlertDelivery.objects.get()
    assert delivery.attempts == 2
    assert receiver.count() == 2
    assert {p.delivery_id for p in receiver.posts} == {str(delivery.uuid)}
    assert receiver.posts[0].body == receiver.posts[1].body


def test_recovery_dispatches_an_event_whose_dispatch_died(worker, poll, receiver, election):
    """The process that recorded the event died before its receiver ran: no announce."""
    webhook_channel(receiver)
    event = episode_event(election.constituencies.first())
    EpisodeEvent.objects.filter(pk=event.pk).update(created_at=timezone.now() - timedelta(minutes=5))

    recover_deliveries.delay()

    poll(delivered(1), timeout=20, message="the lost event delivered")
    worker.wait_idle()
    assert receiver.count() == 1
    assert receiver.posts[0].json["event"]["id"] == event.id
