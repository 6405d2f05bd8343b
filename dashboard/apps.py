from django.apps import AppConfig


class DashboardConfig(AppConfig):
    """Observer pages over the metrics read side (floor 4: reads metrics and elections;
    nothing imports it)."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "dashboard"
