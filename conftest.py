"""Shared fixtures: API clients with and without credentials, and a small election."""

import pytest
from django.contrib.auth.models import Permission, User
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from elections.tests.factories import ConstituencyFactory, ElectionFactory

# The real worker, broker faults and the stats check, for tests in every directory.
pytest_plugins = ["metrics.tests.fixtures"]


@pytest.fixture(autouse=True)
def _isolated_cache(settings):
    """Each test starts with an empty cache (local memory, or its own Redis key prefix)."""
    from django.core.cache import cache

    from metrics.cache import metrics_cache

    cache.clear()
    metrics_cache.versions_forget()


@pytest.fixture(autouse=True)
def _closed_circuit_breakers():
    """Breakers are per process: a fault simulated by one test must not open them for the next."""
    from election_monitor.resilience import breakers_reset

    breakers_reset()
    yield
    breakers_reset()


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    """Test users need passwords only to exist; the production hasher costs ~0.3 s each."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _eager_celery_unless_worker(request):
    """Tests run Celery tasks in-process (the embedded default's path) unless marked
    ``worker``, in which case they publish to the real broker for a real worker."""
    from election_monitor.celery import app

    eager = request.node.get_closest_marker("worker") is None
    previous = app.conf.task_always_eager
    app.conf.task_always_eager = eager
    yield
    app.conf.task_always_eager = previous


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


def _token_client(user: User) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


@pytest.fixture
def ingest_user(db) -> User:
    user = User.objects.create_user("ingest", password="unused-password-1")
    user.user_permissions.add(Permission.objects.get(codename="ingest_data"))
    return user


@pytest.fixture
def ingest_client(ingest_user) -> APIClient:
    """Token-authenticated, with the ingest permission."""
    return _token_client(ingest_user)


@pytest.fixture
def reader_client(db) -> APIClient:
    """Token-authenticated, without the ingest permission."""
    return _token_client(User.objects.create_user("reader", password="unused-password-2"))


@pytest.fixture
def staff_client(db) -> APIClient:
    return _token_client(User.objects.create_user("staff", password="unused-password-3", is_staff=True))


@pytest.fixture
def election(db):
    return ElectionFactory(code="test-election", timezone="Europe/Moscow")


@pytest.fixture
def constituencies(election):
    return ConstituencyFactory.create_batch(6, election=election, registered_voters=1000)
