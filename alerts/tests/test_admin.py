"""alerts/admin.py: channels are edited in the admin without their secret ever being shown;
deliveries and messages are read-only, filterable, and a fixed number of queries per page."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from alerts.models import AlertChannel, AlertDelivery
from alerts.notify import alert_send
from alerts.services import episode_events_dispatch
from alerts.tests.conftest import email_channel, episode_event

pytestmark = pytest.mark.django_db

SECRET = "a-long-webhook-secret-never-shown-9f3"


def url(model: str, action: str = "changelist", *args) -> str:
    return reverse(f"admin:alerts_{model}_{action}", args=args)


@pytest.fixture
def hook(db):
    return AlertChannel.objects.create(name="ops hook", kind="webhook", url="https://hooks.example.org/", secret=SECRET)


def test_the_secret_is_never_shown_in_lists_or_forms(admin_client, hook):
    for page in (url("alertchannel"), url("alertchannel", "change", hook.id)):
        response = admin_client.get(page)
        assert response.status_code == 200
        html = response.content.decode()
        assert SECRET not in html
        assert SECRET[:12] not in html
    assert "37 characters, ending …f3" in html


def test_editing_a_channel_without_a_new_secret_keeps_the_stored_one(admin_client, hook, two_elections):
    response = admin_client.post(
        url("alertchannel", "change", hook.id),
        {
            "name": "ops hook, first election",
            "kind": "webhook",
            "election": two_elections[0].id,
            "enabled": "on",
            "url": "https://hooks.example.org/v2",
            "secret": "",
            "recipients": "",
            "events": ["opened", "withdrawn"],
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    hook.refresh_from_db()
    assert (hook.secret, hook.url, hook.election_id) == (SECRET, "https://hooks.example.org/v2", two_elections[0].id)
    assert hook.events == ["opened", "withdrawn"]
    assert hook.anomaly_kinds == []


def test_a_channel_is_created_with_its_secret_and_refused_without_one(admin_client):
    fields = {"name": "new", "kind": "webhook", "enabled": "on", "url": "https://x.example.org/", "recipients": ""}
    refused = admin_client.post(url("alertchannel", "add"), {**fields, "secret": ""})
    assert refused.status_code == 200
    assert "A webhook needs a secret" in refused.content.decode()
    refused = admin_client.post(url("alertchannel", "add"), {**fields, "url": "file:///etc/passwd", "secret": "s"})
    assert refused.status_code == 200
    assert not AlertChannel.objects.exists()

    assert admin_client.post(url("alertchannel", "add"), {**fields, "secret": "new-secret"}).status_code == 302
    assert AlertChannel.objects.get().secret == "new-secret"


def fill(two_elections, per_constituency: int) -> None:
    email_channel(name="global")
    for election in two_elections:
        email_channel(election=election, name=f"only {election.code}")
        for constituency in election.constituencies.all():
            events = [episode_event(constituency, hour=h) for h in range(per_constituency)]
            episode_events_dispatch(event_ids=[e.id for e in events])
        alert_send(election_id=election.id, subject=f"drift in {election.code}", body={})


@pytest.mark.parametrize("model", ["alertdelivery", "alertmessage", "alertchannel"])
def test_list_pages_take_a_fixed_number_of_queries(admin_client, two_elections, model):
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert admin_client.get(url(model)).status_code == 200
        return len(captured)

    fill(two_elections, 1)
    few = queries()
    fill(two_elections, 10)
    assert AlertDelivery.objects.count() > 80
    assert queries() == few


def test_deliveries_are_read_only_and_filterable(admin_client, two_elections):
    fill(two_elections, 2)
    delivery = AlertDelivery.objects.filter(event__isnull=False).first()
    assert admin_client.get(url("alertdelivery", "add")).status_code == 403
    assert admin_client.post(url("alertdelivery", "delete", delivery.id)).status_code == 403
    page = admin_client.get(url("alertdelivery", "change", delivery.id))
    assert page.status_code == 200
    assert str(delivery.uuid) in page.content.decode()

    pending = admin_client.get(url("alertdelivery") + "?status__exact=pending")
    assert pending.status_code == 200
    assert len(pending.context["cl"].result_list) == AlertDelivery.objects.filter(status="pending").count() > 0
    assert list(admin_client.get(url("alertdelivery") + "?status__exact=delivered").context["cl"].result_list) == []
    by_kind = admin_client.get(url("alertdelivery") + "?channel__kind__exact=email")
    assert by_kind.status_code == 200


def test_a_channel_with_deliveries_is_disabled_not_deleted(admin_client, two_elections):
    fill(two_elections, 1)
    channel = AlertChannel.objects.get(name="global")
    response = admin_client.post(url("alertchannel", "delete", channel.id), {"post": "yes"})
    assert AlertChannel.objects.filter(pk=channel.id).exists()
    assert "Cannot delete alert channel" in response.content.decode()
