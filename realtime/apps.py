from django.apps import AppConfig


class RealtimeConfig(AppConfig):
    """Websocket progress and the dashboard page."""

    name = "realtime"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Connects the logout receiver that closes a session's websockets.
        from realtime import access  # noqa: F401
