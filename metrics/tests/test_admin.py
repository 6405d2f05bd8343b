"""metrics/admin.py: derived tables are inspectable, filterable and read-only, and their list
pages stay a fixed number of queries however many rows they hold."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from elections.admin_utils import ConstituencyListFilter
from elections.tests.factories import VOTING_STARTS, ConstituencyFactory, ElectionFactory, TransactionFactory
from metrics.models import Anomaly, AnomalyKind, DirtyBucket, Episode, EpisodeEvent, HourlyStats
from metrics.tests.factories import AnomalyFactory, HourlyStatsFactory

pytestmark = pytest.mark.django_db

H = timedelta(hours=1)
MODELS = ["hourlystats", "anomaly", "episode", "episodeevent", "dirtybucket"]


def url(model: str, action: str = "changelist", *args) -> str:
    return reverse(f"admin:metrics_{model}_{action}", args=args)


def shown_ids(response) -> list[int]:
    return [obj.pk for obj in response.context["cl"].result_list]


def fill(constituencies, hours: int) -> None:
    for c in constituencies:
        for n in range(hours):
            HourlyStatsFactory(constituency=c, hour=VOTING_STARTS + n * H)
            AnomalyFactory(constituency=c, hour=VOTING_STARTS + n * H)
            DirtyBucket.objects.create(election=c.election, constituency=c, hour=VOTING_STARTS + n * H)
            _episode_with_event(c, VOTING_STARTS + n * H)


def _episode_with_event(constituency, hour) -> Episode:
    fields = {"constituency": constituency, "kind": AnomalyKind.OUTSIDE_VOTING_WINDOW, "first_hour": hour}
    episode = Episode.objects.create(
        election=constituency.election, last_hour=hour, hours=1, peak=1.0, open=False, weight=1.0, **fields
    )
    EpisodeEvent.objects.create(election=constituency.election, event="opened", payload={"id": episode.id}, **fields)
    return episode


@pytest.mark.parametrize("model", MODELS)
def test_changelist_query_count_does_not_grow_with_rows(
    admin_client, constituencies, model, django_assert_max_num_queries
):
    fill(constituencies[:1], 1)
    with CaptureQueriesContext(connection) as few:
        assert admin_client.get(url(model)).status_code == 200
    fill(constituencies[1:], 15)

    with django_assert_max_num_queries(len(few)):
        response = admin_client.get(url(model))

    assert len(response.context["cl"].result_list) == 76


@pytest.mark.parametrize("model", ["hourlystats", "anomaly", "episode", "episodeevent"])
def test_changelist_of_an_election_has_a_fixed_query_count(
    admin_client, constituencies, model, django_assert_max_num_queries
):
    election_id = constituencies[0].election_id
    fill(constituencies[:1], 1)
    with CaptureQueriesContext(connection) as few:
        admin_client.get(url(model), {"election__id__exact": election_id})
    fill(constituencies[1:], 15)

    with django_assert_max_num_queries(len(few)):
        response = admin_client.get(url(model), {"election__id__exact": election_id})

    assert len(response.context["cl"].result_list) == 76


@pytest.mark.parametrize("model", MODELS)
def test_derived_rows_cannot_be_added_changed_or_deleted(admin_client, constituencies, model):
    fill(constituencies[:1], 1)
    models = {
        "hourlystats": HourlyStats,
        "anomaly": Anomaly,
        "episode": Episode,
        "episodeevent": EpisodeEvent,
        "dirtybucket": DirtyBucket,
    }
    row = models[model].objects.get()

    view = admin_client.get(url(model, "change", row.pk))
    add = admin_client.get(url(model, "add"))
    change = admin_client.post(url(model, "change", row.pk), {})
    delete = admin_client.post(url(model, "delete", row.pk), {"post": "yes"})
    bulk_delete = admin_client.post(
        url(model), {"action": "delete_selected", "_selected_action": [row.pk], "post": "yes"}
    )

    assert view.status_code == 200  # inspectable ...
    assert not view.context["has_change_permission"]
    assert (add.status_code, change.status_code, delete.status_code) == (403, 403, 403)  # ... never edited
    assert bulk_delete.status_code == 200  # "no action selected": delete_selected is not offered
    assert type(row).objects.filter(pk=row.pk).exists()


def test_hourly_stats_filters_by_election_and_constituency(admin_client, constituencies):
    fill(constituencies[:3], 4)
    other = ConstituencyFactory(election=ElectionFactory())
    elsewhere = HourlyStatsFactory(constituency=other, hour=VOTING_STARTS)

    by_election = admin_client.get(url("hourlystats"), {"election__id__exact": other.election_id})
    by_constituency = admin_client.get(
        url("hourlystats"), {"election__id__exact": constituencies[0].election_id, "constituency": constituencies[1].id}
    )

    assert shown_ids(by_election) == [elsewhere.id]
    assert sorted(shown_ids(by_constituency)) == sorted(
        HourlyStats.objects.filter(constituency=constituencies[1]).values_list("id", flat=True)
    )
    # Newest hour first once an election is chosen.
    assert [r.hour for r in by_constituency.context["cl"].result_list] == [VOTING_STARTS + n * H for n in (3, 2, 1, 0)]


def test_constituency_filter_appears_only_once_an_election_is_chosen(admin_client, constituencies):
    fill(constituencies[:2], 1)

    unfiltered = admin_client.get(url("hourlystats"))
    chosen = admin_client.get(url("hourlystats"), {"election__id__exact": constituencies[0].election_id})

    assert not [s for s in unfiltered.context["cl"].filter_specs if isinstance(s, ConstituencyListFilter)]
    assert [s for s in chosen.context["cl"].filter_specs if isinstance(s, ConstituencyListFilter)][0].lookup_choices


def test_anomalies_filter_by_kind(admin_client, constituencies):
    spike = AnomalyFactory(
        constituency=constituencies[0], hour=VOTING_STARTS, kind=AnomalyKind.VELOCITY_SPIKE, weight=2
    )
    AnomalyFactory(constituency=constituencies[0], hour=VOTING_STARTS, kind=AnomalyKind.TURNOUT_OVER_100, weight=5)

    response = admin_client.get(url("anomaly"), {"kind__exact": "velocity_spike"})

    assert shown_ids(response) == [spike.id]


def test_search_by_constituency_code(admin_client, constituencies):
    fill(constituencies[:3], 2)

    response = admin_client.get(url("hourlystats"), {"q": constituencies[2].code})

    assert {r.constituency_id for r in response.context["cl"].result_list} == {constituencies[2].id}
    assert len(shown_ids(response)) == 2


def test_date_hierarchy_on_hour(admin_client, constituencies):
    first_day = HourlyStatsFactory(constituency=constituencies[0], hour=VOTING_STARTS)
    HourlyStatsFactory(constituency=constituencies[0], hour=VOTING_STARTS + 24 * H)

    response = admin_client.get(url("hourlystats"), {"hour__year": 2024, "hour__month": 9, "hour__day": 6})

    assert shown_ids(response) == [first_day.id]


def test_list_shows_rows_written_by_the_metrics_engine(
    admin_client, constituencies, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        TransactionFactory(
            constituency=constituencies[0], kind="bulletin_issued", timestamp=VOTING_STARTS - timedelta(minutes=30)
        )

    stats = admin_client.get(url("hourlystats"))
    found = admin_client.get(url("anomaly"))

    assert [r.transaction_count for r in stats.context["cl"].result_list] == [1]
    assert [r.kind for r in found.context["cl"].result_list] == ["outside_voting_window"]
    assert constituencies[0].code in found.content.decode()


def test_episodes_filter_by_open_and_kind_latest_first(admin_client, constituencies):
    fill(constituencies[:1], 3)
    Episode.objects.filter(first_hour=VOTING_STARTS + 2 * H).update(open=True)

    running = admin_client.get(url("episode"), {"open__exact": "1"})
    by_kind = admin_client.get(url("episode"), {"kind__exact": "outside_voting_window"})
    none_of_kind = admin_client.get(url("episode"), {"kind__exact": "velocity_spike"})

    assert [e.first_hour for e in running.context["cl"].result_list] == [VOTING_STARTS + 2 * H]
    assert [e.last_hour for e in by_kind.context["cl"].result_list] == [VOTING_STARTS + n * H for n in (2, 1, 0)]
    assert shown_ids(none_of_kind) == []


def test_episode_events_written_by_the_metrics_engine_are_listed(
    admin_client, constituencies, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        TransactionFactory(
            constituency=constituencies[0], kind="bulletin_issued", timestamp=VOTING_STARTS - timedelta(minutes=30)
        )

    events = admin_client.get(url("episodeevent"), {"event__exact": "opened"})

    assert [(e.event, e.kind) for e in events.context["cl"].result_list] == [("opened", "outside_voting_window")]
    assert constituencies[0].code in events.content.decode()
