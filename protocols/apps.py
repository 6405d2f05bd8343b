from django.apps import AppConfig


class ProtocolsConfig(AppConfig):
    name = "protocols"
    default_auto_field = "django.db.models.BigAutoField"
