from django.apps import AppConfig


class RetryingConsumersConfig(AppConfig):
    """Retries, backoff, dead-lettering and durable task state for Channels."""

    name = "retrying_consumers"
    verbose_name = "Retrying consumers"
    default_auto_field = "django.db.models.BigAutoField"
