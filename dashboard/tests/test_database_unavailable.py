"""Pages answer a database lost mid-request with 503 and Retry-After, never a bare 500, and
the next request is served again (README, "Reliability"; the API's JSON 503 is covered by
tests/test_fault_matrix.py)."""

import psycopg
import pytest
from django.contrib.auth.models import User
from django.db import OperationalError, connection
from django.urls import reverse

from elections.tests.factories import ConstituencyFactory, ElectionFactory
from metrics.tests.fixtures import test_database_url

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def drop_connection():
    """Makes the request's next query fail as a lost database does: on PostgreSQL its backend
    is terminated from another connection; SQLite has no server to lose, so there the next
    query raises the error its driver gives a locked or vanished file."""

    def drop():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                (pid,) = cursor.fetchone()
            with psycopg.connect(test_database_url(), autocommit=True) as admin:
                (done,) = admin.execute("SELECT pg_terminate_backend(%s, 5000)", [pid]).fetchone()
            assert done
            return None
        failed = []

        def fail_once(execute, sql, params, many, context):
            if not failed:
                failed.append(sql)
                raise OperationalError("disk I/O error")
            return execute(sql, params, many, context)

        return connection.execute_wrapper(fail_once)

    return drop


def get_while_dropped(client, url, drop_connection, **headers):
    wrapper = drop_connection()
    try:
        if wrapper is None:
            return client.get(url, **headers)
        with wrapper:
            return client.get(url, **headers)
    finally:
        # What Django's handler does when a request finishes (the test client leaves it out):
        # a connection that failed and is no longer usable is closed, the next query opens one.
        connection.close_if_unusable_or_obsolete()


def assert_unavailable_then_served(client, url, drop_connection) -> None:
    response = get_while_dropped(client, url, drop_connection)
    assert response.status_code == 503, response.content[:300]
    assert response["Retry-After"].isdigit()
    assert response["Content-Type"].startswith("text/html")
    assert b"database became unavailable" in response.content
    assert b"<title>Temporarily unavailable</title>" in response.content
    assert b'name="viewport"' in response.content  # readable on a phone
    assert client.get(url).status_code == 200, "the next request reconnects"


@pytest.fixture
def election():
    election = ElectionFactory(code="e-503")
    ConstituencyFactory(election=election, code="c-503")
    return election


def test_dashboard_pages_answer_503(client, election, drop_connection, settings):
    settings.METRICS_ALLOW_ANONYMOUS_READ = True
    for url in (
        reverse("dashboard:elections"),
        reverse("dashboard:election", args=[election.code]),
        reverse("dashboard:constituency", args=[election.code, "c-503"]),
    ):
        assert_unavailable_then_served(client, url, drop_connection)


def test_admin_pages_answer_503(client, election, drop_connection):
    client.force_login(User.objects.create_superuser("admin", "admin@example.org", "pw"))
    for url in (reverse("admin:index"), reverse("admin:elections_election_changelist")):
        assert_unavailable_then_served(client, url, drop_connection)


def test_russian_page(client, election, drop_connection, settings):
    settings.METRICS_ALLOW_ANONYMOUS_READ = True
    response = get_while_dropped(client, reverse("dashboard:elections"), drop_connection, HTTP_ACCEPT_LANGUAGE="ru")
    assert response.status_code == 503
    assert "База данных стала недоступна" in response.content.decode()
