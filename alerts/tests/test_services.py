"""Dispatch, delivery and recovery of alerts, in-process (eager Celery), against a real local
webhook receiver and Django's mail outbox."""

import json
import threading
import time
from datetime import timedelta

import pytest
from django.core import mail
from django.db import OperationalError, connection, transaction
from django.utils import timezone

from alerts.models import AlertDelivery, AlertMessage, DeliveryStatus, DispatchedEvent
from alerts.notify import alert_send
from alerts.services import alert_delivery_attempt, episode_events_dispatch, retry_delay
from alerts.tasks import deliver_alert, deliveries_queue, deliveries_queue_on_commit, recover_deliveries
from alerts.tests.conftest import email_channel, episode_event, webhook_channel

pytestmark = pytest.mark.django_db


def dispatch(django_capture_on_commit_callbacks, event_ids):
    """What the receiver of recorded events does, with what it queues after commit run
    (the test's own transaction never commits)."""
    with django_capture_on_commit_callbacks(execute=True):
        created = episode_events_dispatch(event_ids=event_ids)
        deliveries_queue_on_commit(created)
    return created


def test_webhook_receives_one_signed_post_with_the_event(
    receiver, alert_settings, two_elections, django_capture_on_commit_callbacks
):
    election = two_elections[0]
    constituency = election.constituencies.first()
    channel = webhook_channel(receiver)
    event = episode_event(constituency)

    created = dispatch(django_capture_on_commit_callbacks, [event.id])

    assert len(created) == 1
    assert receiver.count() == 1
    post = receiver.posts[0]
    assert post.signature_ok
    assert post.headers["content-type"] == "application/json"
    assert post.headers["x-election-monitor-event"] == "episode.opened"
    delivery = AlertDelivery.objects.get()
    assert (delivery.event_id, delivery.channel_id) == (event.id, channel.id)
    assert post.delivery_id == str(delivery.uuid)
    body = post.json
    assert body["delivery_id"] == str(delivery.uuid)
    assert body["type"] == "episode.opened"
    assert body["election"] == {"id": election.id, "code": "first"}
    assert body["event"]["event"] == "opened"
    assert body["event"]["kind"] == "turnout_over_100"
    assert body["event"]["constituency"] == {"id": constituency.id, "code": constituency.code}
    assert body["episode"] == event.payload
    assert delivery.status == DeliveryStatus.DELIVERED
    assert delivery.attempts == 1
    assert delivery.delivered_at is not None
    assert delivery.last_error == ""


def test_a_wrong_secret_fails_the_receivers_check(
    receiver, alert_settings, two_elections, django_capture_on_commit_callbacks
):
    """The receiver's check is real: a body signed under another key does not pass it."""
    channel = webhook_channel(receiver)
    channel.secret = "another-secret"
    channel.save()
    dispatch(django_capture_on_commit_callbacks, [episode_event(two_elections[0].constituencies.first()).id])
    assert receiver.count() == 1
    assert not receiver.posts[0].signature_ok


def test_receiver_failing_twice_then_succeeding_gets_one_delivery_after_three_attempts(
    receiver, alert_settings, two_elections, django_capture_on_commit_callbacks
):
    receiver.statuses = [500, 500]
    webhook_channel(receiver)
    dispatch(django_capture_on_commit_callbacks, [episode_event(two_elections[0].constituencies.first()).id])
    delivery = AlertDelivery.objects.get()
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.PENDING, 1)
    # What the worker's retry messages do after their countdown (test_worker.py runs them
    # through a real worker).
    assert deliver_alert.apply(args=[delivery.id]).get() == "retry"
    assert deliver_alert.apply(args=[delivery.id]).get() == "delivered"

    delivery = AlertDelivery.objects.get()
    assert delivery.status == DeliveryStatus.DELIVERED
    assert delivery.attempts == 3
    assert "attempt 2: HTTP 500" in delivery.last_error
    assert [post.answered for post in receiver.posts] == [500, 500, 200]
    # Every attempt carries the same delivery id and the same signed body.
    assert {post.delivery_id for post in receiver.posts} == {str(delivery.uuid)}
    assert len({post.body for post in receiver.posts}) == 1
    assert all(post.signature_ok for post in receiver.posts)


def test_retries_stop_at_the_attempt_cap(receiver, alert_settings, two_elections, django_capture_on_commit_callbacks):
    alert_settings.ALERTS_MAX_ATTEMPTS = 3
    receiver.statuses = [503] * 10
    webhook_channel(receiver)
    dispatch(django_capture_on_commit_callbacks, [episode_event(two_elections[0].constituencies.first()).id])
    delivery_id = AlertDelivery.objects.get().id
    assert [deliver_alert.apply(args=[delivery_id]).get() for _ in range(3)] == ["retry", "failed", "skipped"]

    delivery = AlertDelivery.objects.get()
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.FAILED, 3)
    assert "attempt 3: HTTP 503" in delivery.last_error
    assert delivery.delivered_at is None
    assert receiver.count() == 3


@pytest.mark.parametrize("status", [400, 404, 301])
def test_a_refusal_or_redirect_is_not_retried(
    status, receiver, alert_settings, two_elections, django_capture_on_commit_callbacks
):
    receiver.statuses = [status]
    webhook_channel(receiver)
    dispatch(django_capture_on_commit_callbacks, [episode_event(two_elections[0].constituencies.first()).id])
    delivery = AlertDelivery.objects.get()
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.FAILED, 1)
    assert f"HTTP {status}" in delivery.last_error
    assert receiver.count() == 1


def test_a_receiver_that_does_not_answer_times_out_and_is_retried(receiver, alert_settings, two_elections):
    alert_settings.ALERTS_HTTP_TIMEOUT = 0.3
    receiver.hold = threading.Event()
    webhook_channel(receiver)
    event = episode_event(two_elections[0].constituencies.first())
    [delivery_id] = episode_events_dispatch(event_ids=[event.id])

    result = alert_delivery_attempt(delivery_id=delivery_id)

    receiver.hold.set()
    delivery = AlertDelivery.objects.get()
    assert result.status == "retry"
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.PENDING, 1)
    assert "timed out" in delivery.last_error


def test_an_unreachable_receiver_is_retried(alert_settings, two_elections, django_capture_on_commit_callbacks):
    alert_settings.ALERTS_MAX_ATTEMPTS = 2
    from alerts.models import AlertChannel

    AlertChannel.objects.create(name="nobody", kind="webhook", url="http://127.0.0.1:9/hook", secret="s")
    dispatch(django_capture_on_commit_callbacks, [episode_event(two_elections[0].constituencies.first()).id])
    assert deliver_alert.apply(args=[AlertDelivery.objects.get().id]).get() == "failed"
    delivery = AlertDelivery.objects.get()
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.FAILED, 2)
    assert "refused" in delivery.last_error.lower()


def test_a_url_with_another_scheme_is_never_fetched(alert_settings, two_elections, django_capture_on_commit_callbacks):
    from alerts.models import AlertChannel

    # Written around the model's validation, as a hand edit of the table could.
    AlertChannel.objects.create(name="file", kind="webhook", url="file:///etc/passwd", secret="s")
    dispatch(django_capture_on_commit_callbacks, [episode_event(two_elections[0].constituencies.first()).id])
    delivery = AlertDelivery.objects.get()
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.FAILED, 1)
    assert "not an http(s) URL" in delivery.last_error


def test_duplicate_task_execution_sends_once(
    receiver, alert_settings, two_elections, django_capture_on_commit_callbacks
):
    webhook_channel(receiver)
    dispatch(django_capture_on_commit_callbacks, [episode_event(two_elections[0].constituencies.first()).id])
    delivery = AlertDelivery.objects.get()

    for _ in range(3):
        assert deliver_alert.apply(args=[delivery.id]).get() == "skipped"

    assert receiver.count() == 1
    again = AlertDelivery.objects.get()
    assert (again.status, again.attempts, again.delivered_at) == (DeliveryStatus.DELIVERED, 1, delivery.delivered_at)


def test_a_delivery_being_sent_by_another_worker_is_left_to_it(receiver, alert_settings, two_elections):
    webhook_channel(receiver)
    event = episode_event(two_elections[0].constituencies.first())
    [delivery_id] = episode_events_dispatch(event_ids=[event.id])
    AlertDelivery.objects.filter(pk=delivery_id).update(
        status=DeliveryStatus.SENDING, attempts=1, lease_until=timezone.now() + timedelta(seconds=60)
    )

    assert alert_delivery_attempt(delivery_id=delivery_id).status == "skipped"
    assert receiver.count() == 0


def retrying_lock_refusals(call):
    """What the task's autoretry does on OperationalError. Only SQLite's shared in-memory test
    database refuses a second writer instead of waiting (PostgreSQL waits)."""
    for _ in range(500):
        try:
            return call()
        except OperationalError:
            time.sleep(0.01)
    raise AssertionError("still refused after 500 tries")


@pytest.mark.django_db(transaction=True)
def test_concurrent_attempts_of_one_delivery_send_once(receiver, alert_settings, two_elections):
    """Eight threads run the same delivery at once; the claim lets exactly one send."""
    from alerts.services import _deliveries_insert

    channel = webhook_channel(receiver)
    event = episode_event(two_elections[0].constituencies.first())
    [delivery_id] = _deliveries_insert([(event.id, None, channel.id)])  # created, not queued
    barrier = threading.Barrier(8)
    results = []

    def attempt():
        barrier.wait()
        try:
            results.append(retrying_lock_refusals(lambda: alert_delivery_attempt(delivery_id=delivery_id)).status)
        finally:
            connection.close()

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert receiver.count() == 1
    if connection.vendor == "postgresql":
        assert sorted(results) == ["delivered"] + ["skipped"] * 7
    else:
        # SQLite's shared in-memory test database may refuse the record after the send; the
        # retried attempt then finds the row claimed (the recovery job finishes it).
        assert results.count("delivered") <= 1
        assert len(results) == 8


def test_dispatching_twice_creates_each_delivery_once(receiver, alert_settings, two_elections):
    webhook_channel(receiver)
    email_channel()
    events = [episode_event(c) for c in two_elections[0].constituencies.all()]

    first = episode_events_dispatch(event_ids=[e.id for e in events])
    second = episode_events_dispatch(event_ids=[e.id for e in events])

    assert len(first) == 4
    assert second == []
    assert AlertDelivery.objects.count() == 4
    assert DispatchedEvent.objects.count() == 2


def test_per_election_channel_gets_only_its_election_and_global_channel_gets_all(
    receiver, alert_settings, two_elections, django_capture_on_commit_callbacks
):
    first, second = two_elections
    only_first = webhook_channel(receiver, election=first, name="first only")
    everything = email_channel(name="global")
    events = [episode_event(c) for election in two_elections for c in election.constituencies.all()]

    dispatch(django_capture_on_commit_callbacks, [e.id for e in events])

    by_channel = {
        channel.id: set(AlertDelivery.objects.filter(channel=channel).values_list("event__election_id", flat=True))
        for channel in (only_first, everything)
    }
    assert by_channel == {only_first.id: {first.id}, everything.id: {first.id, second.id}}
    assert AlertDelivery.objects.filter(channel=only_first).count() == 2
    assert AlertDelivery.objects.filter(channel=everything).count() == 4
    assert {post.json["election"]["code"] for post in receiver.posts} == {"first"}
    assert receiver.count() == 2
    assert len(mail.outbox) == 4


def test_disabled_channels_get_nothing(receiver, alert_settings, two_elections, django_capture_on_commit_callbacks):
    webhook_channel(receiver, enabled=False)
    email_channel(enabled=False)
    dispatch(django_capture_on_commit_callbacks, [episode_event(two_elections[0].constituencies.first()).id])
    assert AlertDelivery.objects.count() == 0
    assert receiver.count() == 0
    assert mail.outbox == []


def test_a_channel_disabled_after_dispatch_sends_nothing(receiver, alert_settings, two_elections):
    channel = webhook_channel(receiver)
    [delivery_id] = episode_events_dispatch(event_ids=[episode_event(two_elections[0].constituencies.first()).id])
    channel.enabled = False
    channel.save()

    assert alert_delivery_attempt(delivery_id=delivery_id).status == "failed"
    assert receiver.count() == 0
    assert "disabled" in AlertDelivery.objects.get().last_error


def test_channel_filters_pick_events_and_kinds(receiver, alert_settings, two_elections):
    constituency = two_elections[0].constituencies.first()
    openings = webhook_channel(receiver, name="openings", events=["opened"])
    turnout = email_channel(name="turnout", anomaly_kinds=["turnout_over_100"])
    events = [
        episode_event(constituency, event="opened", kind="turnout_over_100"),
        episode_event(constituency, event="closed", kind="turnout_over_100"),
        episode_event(constituency, event="opened", kind="velocity_spike", hour=3),
    ]
    episode_events_dispatch(event_ids=[e.id for e in events])

    got = set(AlertDelivery.objects.values_list("channel_id", "event_id"))
    assert got == {
        (openings.id, events[0].id),
        (openings.id, events[2].id),
        (turnout.id, events[0].id),
        (turnout.id, events[1].id),
    }


def test_email_goes_through_djangos_mail_framework(alert_settings, two_elections, django_capture_on_commit_callbacks):
    election = two_elections[0]
    constituency = election.constituencies.first()
    email_channel(recipients="a@example.org,\nb@example.org")
    dispatch(django_capture_on_commit_callbacks, [episode_event(constituency, event="withdrawn").id])

    [message] = mail.outbox
    delivery = AlertDelivery.objects.get()
    assert message.to == ["a@example.org", "b@example.org"]
    assert message.subject == f"[Election Monitor] first: turnout_over_100 episode withdrawn in {constituency.code}"
    assert message.extra_headers["X-Election-Monitor-Delivery"] == str(delivery.uuid)
    assert message.extra_headers["Message-ID"] == f"<{delivery.uuid}@election-monitor>"
    assert '"type": "episode.withdrawn"' in message.body
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.DELIVERED, 1)


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_dispatches_create_each_delivery_once(receiver, alert_settings, two_elections):
    webhook_channel(receiver)
    email_channel()
    events = [episode_event(c, hour=h) for c in two_elections[0].constituencies.all() for h in range(0, 20, 2)]
    ids = [e.id for e in events]
    barrier = threading.Barrier(2)
    created: list[list[int]] = []
    errors: list[Exception] = []

    def run():
        barrier.wait()
        try:
            created.append(retrying_lock_refusals(lambda: episode_events_dispatch(event_ids=ids)))
        except Exception as error:
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    both = created[0] + created[1]
    assert len(both) == len(set(both)) == 2 * len(events)
    assert AlertDelivery.objects.count() == 2 * len(events)
    deliveries_queue(delivery_ids=both)  # what each receiver does after its commit
    assert AlertDelivery.objects.filter(status=DeliveryStatus.DELIVERED).count() == 2 * len(events)
    assert receiver.count() == len(events)
    assert len({post.delivery_id for post in receiver.posts}) == len(events)
    assert len(mail.outbox) == len(events)


# --- Messages (the drift verification's alerts) --------------------------------------------


def test_alert_send_reaches_the_elections_and_the_global_channels(
    receiver, alert_settings, two_elections, django_capture_on_commit_callbacks
):
    first, second = two_elections
    webhook_channel(receiver, election=first)
    email_channel(election=second, name="second only")
    email_channel(name="global", recipients="all@example.org")

    with django_capture_on_commit_callbacks(execute=True):
        message = alert_send(
            election_id=first.id, subject="Drift repaired", body={"repaired_buckets": 3, "at": timezone.now()}
        )

    assert receiver.count() == 1
    post = receiver.posts[0]
    assert post.signature_ok
    assert post.json["type"] == "message"
    assert post.json["election"] == {"id": first.id, "code": "first"}
    assert post.json["message"]["subject"] == "Drift repaired"
    assert post.json["message"]["body"]["repaired_buckets"] == 3
    [email] = mail.outbox
    assert email.to == ["all@example.org"]
    assert email.subject == "[Election Monitor] first: Drift repaired"
    assert set(AlertDelivery.objects.values_list("message_id", "status")) == {(message.id, DeliveryStatus.DELIVERED)}
    assert AlertDelivery.objects.count() == 2


def test_alert_send_without_an_election_reaches_only_global_channels(
    receiver, alert_settings, two_elections, django_capture_on_commit_callbacks
):
    webhook_channel(receiver, election=two_elections[0])
    email_channel(name="global")
    with django_capture_on_commit_callbacks(execute=True):
        alert_send(election_id=None, subject="Nightly verification", body={"elections": 2})
    assert receiver.count() == 0
    assert [m.subject for m in mail.outbox] == ["[Election Monitor] all elections: Nightly verification"]


def test_alert_send_in_a_transaction_that_rolls_back_sends_nothing(receiver, alert_settings, two_elections):
    webhook_channel(receiver)

    def verification_that_fails_after_alerting():
        with transaction.atomic():
            alert_send(election_id=two_elections[0].id, subject="never", body={})
            raise RuntimeError("the verification failed")

    with pytest.raises(RuntimeError):
        verification_that_fails_after_alerting()
    assert AlertMessage.objects.count() == 0
    assert AlertDelivery.objects.count() == 0
    assert receiver.count() == 0


def test_messages_follow_the_channels_event_filter(alert_settings, two_elections):
    email_channel(name="episodes only", events=["opened", "closed"])
    email_channel(name="messages", events=["message"])
    alert_send(election_id=two_elections[0].id, subject="Drift", body={})
    assert list(AlertDelivery.objects.values_list("channel__name", flat=True)) == ["messages"]


# --- Recovery ------------------------------------------------------------------------------


def test_recovery_dispatches_events_whose_dispatch_never_ran(receiver, alert_settings, two_elections, long_ago):
    webhook_channel(receiver)
    constituency = two_elections[0].constituencies.first()
    lost = episode_event(constituency, created_at=long_ago)
    too_old = episode_event(constituency, hour=4, created_at=timezone.now() - timedelta(days=2))
    fresh = episode_event(constituency, hour=8)  # its receiver may still be running

    result = recover_deliveries()

    assert result["events_dispatched"] == 1
    assert list(AlertDelivery.objects.values_list("event_id", flat=True)) == [lost.id]
    assert receiver.count() == 1
    assert not DispatchedEvent.objects.filter(event_id__in=[too_old.id, fresh.id]).exists()
    # An event matching no channel is dispatched once too, and not looked at again.
    assert recover_deliveries()["events_dispatched"] == 0


def test_recovery_requeues_a_delivery_whose_task_was_lost(receiver, alert_settings, two_elections, long_ago):
    webhook_channel(receiver)
    [delivery_id] = episode_events_dispatch(event_ids=[episode_event(two_elections[0].constituencies.first()).id])
    # No task ran (as if the broker lost it); a recent pending row may still have one queued.
    assert recover_deliveries()["deliveries_requeued"] == 0
    AlertDelivery.objects.filter(pk=delivery_id).update(next_attempt_at=long_ago)

    assert recover_deliveries()["deliveries_requeued"] == 1
    assert AlertDelivery.objects.get().status == DeliveryStatus.DELIVERED
    assert receiver.count() == 1


def test_a_queue_failure_loses_nothing(receiver, alert_settings, two_elections, monkeypatch, long_ago):
    """The broker refuses the publish: the delivery stays pending and recovery sends it."""
    from kombu.exceptions import OperationalError

    webhook_channel(receiver)

    def broker_down(*args, **kwargs):
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    [delivery_id] = episode_events_dispatch(event_ids=[episode_event(two_elections[0].constituencies.first()).id])
    with monkeypatch.context() as patch:
        patch.setattr(deliver_alert, "delay", broker_down)
        deliveries_queue(delivery_ids=[delivery_id])
    assert AlertDelivery.objects.get().status == DeliveryStatus.PENDING
    assert receiver.count() == 0

    AlertDelivery.objects.filter(pk=delivery_id).update(next_attempt_at=long_ago)
    recover_deliveries()
    assert AlertDelivery.objects.get().status == DeliveryStatus.DELIVERED
    assert receiver.count() == 1


def test_a_worker_lost_mid_attempt_is_resent_with_the_same_delivery_id_after_its_lease(
    receiver, alert_settings, two_elections, long_ago
):
    webhook_channel(receiver)
    [delivery_id] = episode_events_dispatch(event_ids=[episode_event(two_elections[0].constituencies.first()).id])
    # A worker claimed it and died: the row is sending, its lease running.
    AlertDelivery.objects.filter(pk=delivery_id).update(
        status=DeliveryStatus.SENDING, attempts=1, lease_until=timezone.now() + timedelta(seconds=60)
    )
    assert recover_deliveries()["deliveries_requeued"] == 0
    assert receiver.count() == 0

    AlertDelivery.objects.filter(pk=delivery_id).update(lease_until=long_ago)  # the lease runs out
    assert recover_deliveries()["deliveries_requeued"] == 1

    delivery = AlertDelivery.objects.get()
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.DELIVERED, 2)
    assert [post.delivery_id for post in receiver.posts] == [str(delivery.uuid)]


def test_a_worker_lost_during_the_last_attempt_is_recorded_failed(receiver, alert_settings, two_elections, long_ago):
    webhook_channel(receiver)
    [delivery_id] = episode_events_dispatch(event_ids=[episode_event(two_elections[0].constituencies.first()).id])
    AlertDelivery.objects.filter(pk=delivery_id).update(
        status=DeliveryStatus.SENDING, attempts=alert_settings.ALERTS_MAX_ATTEMPTS, lease_until=long_ago
    )
    assert recover_deliveries()["deliveries_lost"] == 1
    delivery = AlertDelivery.objects.get()
    assert delivery.status == DeliveryStatus.FAILED
    assert "may or may not" in delivery.last_error
    assert receiver.count() == 0


def test_an_attempt_that_outlived_its_lease_does_not_overwrite_the_newer_record(
    receiver, alert_settings, two_elections
):
    """Worker A claims, stalls past its lease; worker B takes over and delivers; A's late
    outcome is not recorded."""
    from alerts import services

    webhook_channel(receiver)
    [delivery_id] = episode_events_dispatch(event_ids=[episode_event(two_elections[0].constituencies.first()).id])
    delivery = AlertDelivery.objects.get()
    AlertDelivery.objects.filter(pk=delivery_id).update(status=DeliveryStatus.SENDING, attempts=1)
    AlertDelivery.objects.filter(pk=delivery_id).update(status=DeliveryStatus.SENDING, attempts=2)  # B's claim

    services._attempt_record(delivery, 1, status=DeliveryStatus.FAILED, error="A's late failure")

    assert AlertDelivery.objects.get().status == DeliveryStatus.SENDING
    assert AlertDelivery.objects.get().last_error == ""


@pytest.mark.parametrize("attempt", range(1, 12))
def test_retry_delay_grows_exponentially_with_jitter_under_the_cap(attempt, settings):
    settings.ALERTS_RETRY_BASE_SECONDS = 2
    settings.ALERTS_RETRY_MAX_SECONDS = 300
    ceiling = min(300, 2 * 2 ** (attempt - 1))
    delays = {retry_delay(attempt=attempt) for _ in range(50)}
    assert all(ceiling / 2 <= d <= ceiling for d in delays)
    assert len(delays) > 1


def test_the_signed_body_is_the_exact_json_sent(receiver, alert_settings, two_elections):
    from alerts.services import alert_body_encode, alert_payload

    webhook_channel(receiver)
    [delivery_id] = episode_events_dispatch(event_ids=[episode_event(two_elections[0].constituencies.first()).id])
    alert_delivery_attempt(delivery_id=delivery_id)
    delivery = AlertDelivery.objects.select_related("event__election", "event__constituency").get()
    assert receiver.posts[0].body == alert_body_encode(alert_payload(delivery))
    assert json.loads(receiver.posts[0].body)["delivery_id"] == str(delivery.uuid)
