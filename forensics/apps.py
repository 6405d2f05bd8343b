from django.apps import AppConfig


class ForensicsConfig(AppConfig):
    name = "forensics"
    default_auto_field = "django.db.models.BigAutoField"
