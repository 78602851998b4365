from django.apps import AppConfig


class RetryingConsumersConfig(AppConfig):
    """Retries, backoff, dead-lettering and durable task state for Channels."""

    name = "retrying_consumers"
    verbose_name = "Retrying consumers"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks, signals
        from .core.conf import library_settings
        from .ops import notify

        # Read now, so that a bad option stops every process at its start
        # rather than failing a request or a worker later.
        library_settings()
        checks.register()

        # The receiver checks NOTIFY_DEAD itself, so settings may change later.
        signals.task_dead.connect(
            notify.on_task_dead, dispatch_uid="retrying_consumers.notify"
        )
