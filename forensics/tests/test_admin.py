"""The reconciliation admin page lists constituencies with a stream and a protocol."""

import pytest
from django.contrib.auth.models import User

from elections.models import Constituency
from elections.tests.factories import ElectionFactory
from forensics.tests.conftest import import_rows
from protocols.tests.files import station

pytestmark = pytest.mark.django_db


def test_reconciliation_page_shows_differences_and_the_rule(client, tmp_path):
    election = ElectionFactory()
    import_rows(election, [station("1", issued=200, votes=(100, 80, 15), invalid=5), station("2")], tmp_path)
    first = Constituency.objects.get(election=election, name__endswith="/ 1")
    # The stream's totals as the metrics pipeline writes them (a stream of 220 votes).
    Constituency.objects.filter(pk=first.pk).update(
        total_transactions=440, total_votes_cast=220, total_bulletins_issued=220
    )
    client.force_login(User.objects.create_superuser("admin", password="unused-password-7"))

    response = client.get("/admin/forensics/reconciliation/", {"election__id__exact": election.id})

    assert response.status_code == 200
    rows = response.context["cl"].result_list
    assert [r.constituency_id for r in rows] == [first.id]  # the other has no stream
    html = response.content.decode()
    assert ">20<" in html  # 220 votes − 200 ballots
    assert "icon-yes" in html  # a mismatch: 20 > max(5, 1)
    assert client.get(f"/admin/forensics/reconciliation/{rows[0].pk}/change/").status_code == 200
