"""A throttle in front of the admin login (SPEC section 10, "Resilience").

Failed logins are counted in the cache per client and username, and per client: after
ADMIN_LOGIN_MAX_FAILURES failures for one username (or four times as many in all) from one
client within ADMIN_LOGIN_LOCKOUT_SECONDS, that client's logins are refused with 429 until
the window ends, without the password being checked. Counting per client (identified as the
API throttle does, by TRUSTED_PROXY_COUNT) means nobody can lock a staff member out from
elsewhere. When the cache is unavailable, logins are let through (logged): the password
still guards the door, and an outage must not lock staff out while the election runs.
"""

import logging

from django.conf import settings
from django.contrib import admin
from django.http import HttpResponse
from rest_framework.throttling import BaseThrottle

from election_monitor.resilience import guarded_cache

logger = logging.getLogger(__name__)


def _keys(request) -> tuple[str, str]:
    client = BaseThrottle().get_ident(request)
    username = str(request.POST.get("username", "")).strip().lower()[:150]
    return f"admin-login:client:{client}", f"admin-login:user:{client}:{username}"


def _locked(request) -> bool:
    client_key, user_key = _keys(request)
    limit = settings.ADMIN_LOGIN_MAX_FAILURES
    try:
        counts = guarded_cache().get_many([client_key, user_key])
    except Exception:
        logger.warning("admin login throttle: cache unavailable; not throttling", exc_info=True)
        return False
    return counts.get(user_key, 0) >= limit or counts.get(client_key, 0) >= 4 * limit


def _count_failure(request) -> None:
    cache = guarded_cache()
    for key in _keys(request):
        try:
            try:
                cache.incr(key)
            except ValueError:  # the window's first failure
                if not cache.add(key, 1, settings.ADMIN_LOGIN_LOCKOUT_SECONDS):
                    cache.incr(key)
        except Exception:
            logger.warning("admin login throttle: cache unavailable; failure not counted", exc_info=True)
            return


def login_throttled(login_view):
    """``login_view`` (the admin's, the dashboard's) behind the failure counter."""

    def view(request, *args, **kwargs):
        if request.method != "POST":
            return login_view(request, *args, **kwargs)
        if _locked(request):
            minutes = max(1, round(settings.ADMIN_LOGIN_LOCKOUT_SECONDS / 60))
            return HttpResponse(
                f"Too many failed logins from this address; try again in up to {minutes} minutes.",
                status=429,
                content_type="text/plain; charset=utf-8",
            )
        response = login_view(request, *args, **kwargs)
        if response.status_code == 200:  # the form again: the credentials were refused
            _count_failure(request)
        return response

    return view


def admin_login(request, *args, **kwargs):
    """Django's admin login, behind the failure counter."""
    return login_throttled(admin.site.login)(request, *args, **kwargs)
