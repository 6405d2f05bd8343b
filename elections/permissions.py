from django.conf import settings
from rest_framework.permissions import SAFE_METHODS, BasePermission

INGEST_PERMISSION = "elections.ingest_data"


def can_ingest(user) -> bool:
    return bool(user and user.is_authenticated and (user.is_staff or user.has_perm(INGEST_PERMISSION)))


def can_read(user) -> bool:
    """Reads of the API and the dashboard: anyone when METRICS_ALLOW_ANONYMOUS_READ is on."""
    return settings.METRICS_ALLOW_ANONYMOUS_READ or bool(user and user.is_authenticated)


class ReadOrIngest(BasePermission):
    """Reads: anyone when METRICS_ALLOW_ANONYMOUS_READ is on, else authenticated users.
    Writes: authenticated users holding the ingest permission (or staff)."""

    def has_permission(self, request, view):
        if request.method in SAFE_METHODS:
            return can_read(request.user)
        return can_ingest(request.user)


class IsStaff(BasePermission):
    def has_permission(self, request, view):
        if request.method in SAFE_METHODS:
            return ReadOrIngest().has_permission(request, view)
        return bool(request.user and request.user.is_authenticated and request.user.is_staff)


class CanCertify(BasePermission):
    """Certification and un-certification: staff holding the certify permission."""

    def has_permission(self, request, view):
        user = request.user
        return bool(user and user.is_authenticated and user.is_staff and user.has_perm("elections.certify_election"))
