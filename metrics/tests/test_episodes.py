"""metrics.episodes: episodes follow every correction, and each change of state records one
event in the same transaction (docs/METRICS.md#episode-events)."""

import logging
from datetime import timedelta

import pytest

from metrics import aggregation, episodes
from metrics.aggregation import Scope, metrics_recompute
from metrics.events import episode_events_recorded
from metrics.models import Episode, EpisodeEvent
from metrics.tests import reference
from metrics.tests.test_aggregation import BULLETIN, HOUR, T0, VOTE, tracked

pytestmark = pytest.mark.django_db

VEB = "votes_exceed_bulletins"


def at(hour: int):
    return T0 + hour * HOUR + timedelta(minutes=15)


class Watched:
    """A tracked election whose every flush is checked against the reference, episodes and
    the events between the previous and the new episodes included."""

    def __init__(self, t, now):
        self.t, self.now = t, now
        self.episodes = {}
        self.seen = 0

    def flush(self) -> list[tuple[tuple, str]]:
        self.t.flush(self.now)
        self.t.check(self.now)
        episodes = reference.compute(self.t.ref, self.now)["episodes"]
        new = list(EpisodeEvent.objects.filter(id__gt=self.seen).order_by("id"))
        got = sorted(((e.constituency_id, e.first_hour, e.kind), e.event) for e in new)
        assert got == sorted(reference.episode_events(self.episodes, episodes))
        self.episodes = episodes
        self.seen = max([self.seen, *(e.id for e in new)])
        return [(key[1], event) for key, event in got]


@pytest.fixture
def watched():
    """One constituency (no spikes: fewer than five peers). Votes beyond the bulletins
    issued so far flag an hour, bulletins catching up clear it:
    h0 V1 (flag) | h1 B2 | h2 V2 (flag) | h3 B2 | h4 B1."""
    t = tracked(voters=(1000,), hours=24)
    t.add(0, VOTE, at(0))
    t.add(0, BULLETIN, at(1), n=2)
    t.add(0, VOTE, at(2), n=2)
    t.add(0, BULLETIN, at(3), n=2)
    t.add(0, BULLETIN, at(4))
    return Watched(t, T0 + 30 * HOUR)


def h(n: int):
    return T0 + n * HOUR


def test_episodes_that_start_and_end_in_one_flush_are_opened_and_closed(watched):
    events = watched.flush()
    assert events == [(h(0), "closed"), (h(0), "opened"), (h(2), "closed"), (h(2), "opened")]
    episodes = Episode.objects.order_by("first_hour")
    assert [(e.first_hour, e.last_hour, e.hours, e.peak, e.open) for e in episodes] == [
        (h(0), h(0), 1, 1.0, False),
        (h(2), h(2), 1, 1.0, False),
    ]


def test_a_recompute_that_changes_no_episode_records_nothing(watched):
    watched.flush()
    stored = list(Episode.objects.order_by("id").values())
    metrics_recompute(election_id=watched.t.election.id, scope=Scope.election(), now=watched.now)
    metrics_recompute(election_id=watched.t.election.id, scope=Scope.constituencies(watched.t.ids), now=watched.now)
    assert watched.flush() == []
    assert list(Episode.objects.order_by("id").values()) == stored


def test_a_merge_withdraws_the_later_episode_and_a_split_opens_it_again(watched):
    watched.flush()
    merge = watched.t.add(0, VOTE, at(1), n=2)  # h1..h3 flagged too: one run from h0
    assert watched.flush() == [(h(2), "withdrawn")]
    assert Episode.objects.get().hours == 4

    watched.t.delete(merge)
    assert watched.flush() == [(h(2), "closed"), (h(2), "opened")]
    assert Episode.objects.count() == 2


def test_a_correction_that_clears_a_run_withdraws_it_and_a_moved_start_is_a_new_identity(watched):
    watched.flush()
    watched.t.add(0, BULLETIN, at(0))  # h0 clear; h2 stays flagged by one more vote
    watched.t.add(0, VOTE, at(2))
    assert watched.flush() == [(h(0), "withdrawn")]

    watched.t.add(0, VOTE, at(1), n=3)  # the run now starts at h1 and reaches h4, the latest
    assert watched.flush() == [(h(1), "opened"), (h(2), "withdrawn")]
    withdrawn = EpisodeEvent.objects.get(event="withdrawn", first_hour=h(2))
    assert withdrawn.payload["first_hour"] == h(2).isoformat().replace("+00:00", "Z")
    assert not Episode.objects.filter(id=withdrawn.payload["id"]).exists()


def test_an_episode_closes_when_a_later_hour_is_clear_and_reopens_when_that_hour_goes(watched):
    watched.flush()
    watched.t.add(0, VOTE, at(6), n=4)
    assert watched.flush() == [(h(6), "opened")]
    opened = EpisodeEvent.objects.get(first_hour=h(6))
    episode = Episode.objects.get(first_hour=h(6))
    assert opened.payload == {
        "id": episode.id,
        "election_id": watched.t.election.id,
        "constituency_id": watched.t.ids[0],
        "kind": VEB,
        "first_hour": "2024-09-06T11:00:00Z",
        "last_hour": "2024-09-06T11:00:00Z",
        "hours": 1,
        "peak": 2.0,
        "open": True,
        "weight": 3.0,
    }

    watched.t.add(0, VOTE, at(7))  # still flagged: the episode grows, no event
    assert watched.flush() == []
    assert (Episode.objects.get(pk=episode.pk).hours, Episode.objects.get(pk=episode.pk).peak) == (2, 3.0)

    clear = watched.t.add(0, BULLETIN, at(9), n=5)
    assert watched.flush() == [(h(6), "closed")]
    watched.t.delete(clear)
    assert watched.flush() == [(h(6), "opened")]


def test_hours_without_data_do_not_split_an_episode(watched):
    """Consecutive among the hours with data: a night without transactions keeps the run."""
    watched.flush()
    watched.t.add(0, VOTE, at(12), n=3)
    watched.t.add(0, VOTE, at(22))
    assert watched.flush() == [(h(12), "opened")]
    episode = Episode.objects.get(first_hour=h(12))
    assert (episode.last_hour, episode.hours, episode.open) == (h(22), 2, True)


def test_events_and_episodes_roll_back_with_the_recompute_that_failed(watched, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("simulated crash after the episodes were written")

    monkeypatch.setattr(aggregation, "_constituencies_write", fail)
    with pytest.raises(RuntimeError):
        metrics_recompute(election_id=watched.t.election.id, scope=Scope.election(), now=watched.now)
    assert not Episode.objects.exists()
    assert not EpisodeEvent.objects.exists()

    monkeypatch.undo()
    assert len(watched.flush()) == 4  # recorded once, by the recompute that committed


def test_the_signal_is_sent_once_after_commit_with_the_new_events(watched, django_capture_on_commit_callbacks):
    received = []

    def receiver(sender, election_id, event_ids, **kwargs):
        received.append((election_id, event_ids))

    episode_events_recorded.connect(receiver)
    try:
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            watched.flush()
        assert received == []  # nothing before the commit
        for callback in callbacks:
            callback()
        ids = list(EpisodeEvent.objects.order_by("id").values_list("id", flat=True))
        assert received == [(watched.t.election.id, ids)]

        received.clear()
        with django_capture_on_commit_callbacks(execute=True):
            metrics_recompute(election_id=watched.t.election.id, scope=Scope.election(), now=watched.now)
        assert received == []  # no change, no signal
    finally:
        episode_events_recorded.disconnect(receiver)


def test_a_failing_receiver_is_logged_and_the_events_stay(watched, django_capture_on_commit_callbacks, caplog):
    def broken(**kwargs):
        raise ValueError("receiver bug")

    episode_events_recorded.connect(broken)
    caplog.set_level(logging.ERROR)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            watched.flush()
    finally:
        episode_events_recorded.disconnect(broken)
    assert EpisodeEvent.objects.count() == 4
    assert any("receiver" in r.getMessage() for r in caplog.records)


def test_a_constituency_score_counts_episodes_not_hours(watched):
    """Four flagged hours in one run weigh one episode: 100 × (1 − e^(−3/10))."""
    watched.flush()
    watched.t.add(0, VOTE, at(1), n=2)
    watched.flush()
    constituency = watched.t.election.constituencies.get()
    assert (constituency.total_anomalies, constituency.anomaly_score) == (4, 25.92)


@pytest.mark.parametrize(("in_list_max", "clauses_max"), [(1, 1), (2, 2), (200, 20)])
def test_windows_read_in_shared_clauses_give_the_same_episodes(monkeypatch, in_list_max, clauses_max):
    """Many constituencies with episodes starting at different hours: read through one
    clause per window, through merged windows, or through the election's rows alike."""
    monkeypatch.setattr(episodes, "IN_LIST_MAX", in_list_max)
    monkeypatch.setattr(episodes, "WINDOW_CLAUSES_MAX", clauses_max)
    t = tracked(voters=(1000,) * 6, hours=24)
    w = Watched(t, T0 + 30 * HOUR)
    for i in range(6):
        t.add(i, BULLETIN, at(0), n=3)
        t.add(i, VOTE, at(i), n=4)  # flagged from hour i on: one open episode each
        t.add(i, BULLETIN, at(i + 1))
    assert len(w.flush()) >= 6
    for i in range(6):
        t.add(i, BULLETIN, at(8), n=2 + i % 3)  # some clear at hour 8, some stay flagged
        t.add(i, VOTE, at(8))
    w.flush()
    t.add(2, BULLETIN, at(1), n=3)  # a late correction before the others' windows
    t.add(4, VOTE, at(9), n=5)
    w.flush()


def test_a_peak_moves_without_rereading_the_episode_unless_its_hour_went_down(watched, monkeypatch):
    """Only a flag's details changed: the peak follows from the stored one, except when the
    hour that held it went down, which re-derives the constituency; both match the reference."""
    outcomes = []
    original = episodes._peaks_moved

    def spy(stored, changes):
        found = original(stored, changes)
        outcomes.append(None if found is None else sorted(found.values()))
        return found

    monkeypatch.setattr(episodes, "_peaks_moved", spy)
    watched.flush()
    watched.t.add(0, VOTE, at(6), n=4)  # a new episode at h6: votes ahead by 2
    assert watched.flush() == [(h(6), "opened")]
    outcomes.clear()

    watched.t.add(0, VOTE, at(6), n=2)  # ahead by 4 at the same hour: the peak rises
    assert watched.flush() == []
    assert outcomes == [[4.0]]
    assert Episode.objects.get(first_hour=h(6)).peak == 4.0

    watched.t.add(0, BULLETIN, at(6), n=3)  # ahead by 1: the peak's own hour went down
    assert watched.flush() == []
    assert outcomes[-1] is None
    assert Episode.objects.get(first_hour=h(6)).peak == 1.0
