"""The verification of settled elections: drift is found, repaired, recorded and announced."""

import logging
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.test import TestCase
from django.utils import timezone

from elections.models import Transaction
from metrics.events import drift_repaired
from metrics.models import DriftCheck, HourlyStats
from metrics.pipeline import settled_elections_verify
from metrics.tests.test_selectors import seeded_election


@pytest.fixture
def announced():
    received = []

    def receiver(sender, **kwargs):
        received.append(kwargs)

    drift_repaired.connect(receiver)
    yield received
    drift_repaired.disconnect(receiver)


@pytest.mark.django_db
def test_a_closed_election_whose_rows_were_changed_behind_the_product_is_repaired(stats_match, announced, caplog):
    seeded = seeded_election(tz="Europe/Berlin", constituencies=5, seed=5)
    election = seeded.election
    assert election.status == "closed"
    gone = Transaction.objects.filter(constituency=seeded.constituencies[0]).order_by("id")[:7]
    Transaction.objects.filter(pk__in=list(gone.values_list("pk", flat=True))).delete()  # a bare delete()
    HourlyStats.objects.filter(constituency=seeded.constituencies[1]).update(votes_cast=0)  # a hand edit

    with caplog.at_level(logging.ERROR, logger="metrics.pipeline"), TestCase.captureOnCommitCallbacks(execute=True):
        (check,) = settled_elections_verify()

    assert check.election_id == election.id
    assert check.repaired_buckets > 0
    assert check.drifted
    stats_match(election)
    assert "had drifted" in caplog.text
    assert announced == [{"election_id": election.id, "drift_check_id": check.id, "signal": drift_repaired}]
    # Once repaired, the next verification finds nothing and announces nothing.
    with TestCase.captureOnCommitCallbacks(execute=True):
        (again,) = settled_elections_verify()
    assert (again.repaired_buckets, again.repaired_constituencies) == (0, 0)
    assert len(announced) == 1


@pytest.mark.django_db
def test_active_elections_are_left_to_the_sweep(announced):
    from elections.tests.factories import ElectionFactory

    now = timezone.now()
    ElectionFactory(starts_at=now - timedelta(hours=1), ends_at=now + timedelta(hours=5))
    assert settled_elections_verify(now=now) == []
    assert not DriftCheck.objects.exists()


@pytest.mark.django_db
def test_the_command_verifies_on_demand(capsys):
    seeded = seeded_election(tz="Asia/Kolkata", constituencies=5, seed=6)
    call_command("verify_metrics", "--election", seeded.election.code)
    out = capsys.readouterr().out
    assert f"election {seeded.election.id}: in agreement with its transactions" in out
    assert DriftCheck.objects.filter(election=seeded.election, repaired_buckets=0).count() == 1
    with pytest.raises(Exception, match="No election with code nope"):
        call_command("verify_metrics", "--election", "nope")
