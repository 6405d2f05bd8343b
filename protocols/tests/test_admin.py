"""Protocol admin pages: inspectable, and read-only (a re-import is the one write path)."""

import pytest
from django.contrib.auth.models import User

from elections.tests.factories import ElectionFactory
from protocols.models import ProtocolResult
from protocols.services import protocols_import
from protocols.tests.files import commission_csv, station

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("model", ["protocolresult", "protocolimport", "electionoption"])
def test_pages_load_and_offer_no_edits(client, tmp_path, model):
    election = ElectionFactory()
    path = commission_csv(tmp_path / "p.csv", [station("1"), station("2")], ["A", "B", "C"])
    protocols_import(path=path, election=election, on_rejected=lambda *a: None)
    client.force_login(User.objects.create_superuser("admin", password="unused-password-8"))

    listing = client.get(f"/admin/protocols/{model}/", {"election__id__exact": election.id})
    assert listing.status_code == 200
    assert len(listing.context["cl"].result_list) in (1, 2, 3)
    assert client.get(f"/admin/protocols/{model}/add/").status_code == 403
    pk = ProtocolResult.objects.first().pk
    assert client.post(f"/admin/protocols/protocolresult/{pk}/delete/", {"post": "yes"}).status_code == 403
    assert ProtocolResult.objects.count() == 2
