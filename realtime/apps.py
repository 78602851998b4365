from django.apps import AppConfig


class RealtimeConfig(AppConfig):
    """Websocket progress and the dashboard page."""

    name = "realtime"
    default_auto_field = "django.db.models.BigAutoField"
