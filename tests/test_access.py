"""Who may reach what: the schema and docs follow the read permission, and the admin login
is throttled per client (election_monitor/admin_login.py)."""

import pytest
from django.contrib.auth.models import User

pytestmark = pytest.mark.django_db

LOGIN = "/admin/login/"


@pytest.mark.parametrize("url", ["/api/schema/", "/api/docs/"])
def test_schema_and_docs_follow_the_read_permission(api_client, reader_client, settings, url):
    settings.METRICS_ALLOW_ANONYMOUS_READ = False
    refused = api_client.get(url)
    assert refused.status_code in (401, 403)
    assert reader_client.get(url).status_code == 200

    settings.METRICS_ALLOW_ANONYMOUS_READ = True
    assert api_client.get(url).status_code == 200


@pytest.fixture
def staff(db):
    return User.objects.create_user("boss", password="the-right-password-1", is_staff=True, is_superuser=True)


def attempt(client, username: str, password: str, address: str = "198.51.100.20"):
    return client.post(LOGIN, {"username": username, "password": password, "next": "/admin/"}, REMOTE_ADDR=address)


def test_admin_login_is_refused_after_repeated_failures(client, staff, settings):
    settings.ADMIN_LOGIN_MAX_FAILURES = 3
    statuses = [attempt(client, "boss", f"guess-{i}").status_code for i in range(3)]
    assert statuses == [200, 200, 200]  # the form again, with its error

    locked = attempt(client, "boss", "the-right-password-1")
    assert locked.status_code == 429
    assert "Too many failed logins" in locked.content.decode()
    assert "_auth_user_id" not in client.session  # not logged in, even with the right password


def test_the_lockout_is_per_client_so_nobody_locks_staff_out_from_elsewhere(client, staff, settings):
    settings.ADMIN_LOGIN_MAX_FAILURES = 2
    for i in range(3):
        attempt(client, "boss", f"guess-{i}", address="203.0.113.66")
    assert attempt(client, "boss", "x", address="203.0.113.66").status_code == 429

    ok = attempt(client, "boss", "the-right-password-1", address="198.51.100.21")
    assert ok.status_code == 302
    assert client.session["_auth_user_id"] == str(staff.pk)


def test_one_client_trying_many_usernames_is_refused_too(client, staff, settings):
    settings.ADMIN_LOGIN_MAX_FAILURES = 2  # 8 failures in all from one client
    statuses = [attempt(client, f"user{i}", "guess").status_code for i in range(9)]
    assert statuses == [200] * 8 + [429]


def test_a_successful_login_is_not_counted(client, staff, settings):
    settings.ADMIN_LOGIN_MAX_FAILURES = 2
    for _ in range(4):
        assert attempt(client, "boss", "the-right-password-1").status_code == 302
        client.logout()


def test_the_login_page_itself_renders(client):
    response = client.get(LOGIN)
    assert response.status_code == 200
    assert "username" in response.content.decode()
