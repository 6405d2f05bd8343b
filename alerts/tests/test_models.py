"""Channel validation and filters."""

import pytest
from django.core.exceptions import ValidationError

from alerts.models import AlertChannel


@pytest.mark.parametrize(
    ("fields", "field_in_error"),
    [
        ({"kind": "webhook", "url": "ftp://example.org/hook", "secret": "s"}, "url"),
        ({"kind": "webhook", "url": "file:///etc/passwd", "secret": "s"}, "url"),
        ({"kind": "webhook", "url": "", "secret": "s"}, "url"),
        ({"kind": "webhook", "url": "https://example.org/hook", "secret": ""}, "secret"),
        ({"kind": "email", "recipients": ""}, "recipients"),
        ({"kind": "email", "recipients": "a@example.org, not-an-address"}, "recipients"),
        ({"kind": "email", "recipients": "a@example.org", "events": ["opened", "exploded"]}, "events"),
        ({"kind": "email", "recipients": "a@example.org", "anomaly_kinds": ["bad_kind"]}, "anomaly_kinds"),
    ],
)
def test_invalid_channels_are_refused_with_the_field_named(fields, field_in_error):
    with pytest.raises(ValidationError) as error:
        AlertChannel(name="x", **fields).full_clean()
    assert field_in_error in error.value.message_dict


@pytest.mark.parametrize(
    "fields",
    [
        {"kind": "webhook", "url": "http://127.0.0.1:8765/", "secret": "s"},
        {"kind": "webhook", "url": "https://hooks.example.org/em?x=1", "secret": "s", "events": ["opened"]},
        {"kind": "email", "recipients": "a@example.org;\nb@example.org", "anomaly_kinds": ["velocity_spike"]},
    ],
)
def test_valid_channels_pass(fields):
    AlertChannel(name="x", **fields).full_clean()


def test_recipients_split_on_commas_semicolons_and_lines():
    channel = AlertChannel(kind="email", recipients=" a@example.org;b@example.org,\n c@example.org ,")
    assert channel.recipient_list == ["a@example.org", "b@example.org", "c@example.org"]


def test_filters_let_through_what_they_name_and_everything_when_empty():
    everything = AlertChannel(kind="email")
    openings = AlertChannel(kind="email", events=["opened"])
    spikes = AlertChannel(kind="email", anomaly_kinds=["velocity_spike"])
    assert everything.accepts(event_type="withdrawn", anomaly_kind="turnout_over_100")
    assert openings.accepts(event_type="opened", anomaly_kind="turnout_over_100")
    assert not openings.accepts(event_type="closed", anomaly_kind="turnout_over_100")
    assert not openings.accepts(event_type="message", anomaly_kind=None)
    assert spikes.accepts(event_type="closed", anomaly_kind="velocity_spike")
    assert not spikes.accepts(event_type="closed", anomaly_kind="turnout_over_100")
    assert spikes.accepts(event_type="message", anomaly_kind=None)  # messages have no kind
