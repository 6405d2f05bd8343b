"""The demo listener (manage.py alerts_listen) receiving real deliveries."""

import threading

import pytest

from alerts.listener import alert_listener_build
from alerts.models import AlertChannel, AlertDelivery, DeliveryStatus
from alerts.services import alert_delivery_attempt, episode_events_dispatch
from alerts.tests.conftest import episode_event

pytestmark = pytest.mark.django_db


@pytest.fixture
def listener():
    lines: list[str] = []
    server = alert_listener_build(host="127.0.0.1", port=0, secret="listen-secret", write=lines.append)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server, lines
    server.shutdown()
    server.server_close()


def channel_to(server, secret: str) -> AlertChannel:
    return AlertChannel.objects.create(
        name=f"listener {secret}", kind="webhook", url=f"http://127.0.0.1:{server.server_address[1]}/", secret=secret
    )


def test_listener_prints_a_verified_alert_and_marks_a_resend(listener, alert_settings, two_elections):
    server, lines = listener
    channel_to(server, "listen-secret")
    constituency = two_elections[0].constituencies.first()
    [delivery_id] = episode_events_dispatch(event_ids=[episode_event(constituency).id])

    assert alert_delivery_attempt(delivery_id=delivery_id).status == "delivered"
    # The same delivery sent again, as after a worker lost between sending and recording.
    AlertDelivery.objects.filter(pk=delivery_id).update(status=DeliveryStatus.PENDING)
    assert alert_delivery_attempt(delivery_id=delivery_id).status == "delivered"

    uuid = str(AlertDelivery.objects.get().uuid)
    assert len(lines) == 2
    assert f"verified {uuid}: first {constituency.code}: turnout_over_100 episode opened" in lines[0]
    assert f"duplicate, ignored {uuid}" in lines[1]


def test_listener_rejects_a_wrong_signature(listener, alert_settings, two_elections):
    server, lines = listener
    channel_to(server, "someone-else")
    [delivery_id] = episode_events_dispatch(event_ids=[episode_event(two_elections[0].constituencies.first()).id])

    assert alert_delivery_attempt(delivery_id=delivery_id).status == "failed"  # 401 is not retried
    assert AlertDelivery.objects.get().last_error == "attempt 1: HTTP 401 Unauthorized"
    assert lines[0].startswith("REJECTED (bad or missing signature)")
