from django.apps import AppConfig


class ProjectConfig(AppConfig):
    """This site's own checks (the library and ``realtime`` ship without them)."""

    name = "project"

    def ready(self) -> None:
        from project import checks

        checks.register()
