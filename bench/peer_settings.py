"""Settings of the durable peers' processes: the bench's, plus their apps.

``django-tasks-db`` (Django's task framework with its database backend and
``db_worker``) and ``procrastinate`` (its Django integration and ``manage.py
procrastinate worker``) keep their tasks in the same database as the store, so
they are measured on the same PostgreSQL. Only their processes use this module;
the retry layer's own runs keep ``bench.settings``.
"""

from bench.settings import *  # noqa: F403

INSTALLED_APPS = [
    *INSTALLED_APPS,  # noqa: F405
    "django_tasks_db",
    "procrastinate.contrib.django",
]

# Django's task framework, served by django-tasks-db's database backend.
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}

# procrastinate finds the bench's task here (not in an app's tasks.py).
PROCRASTINATE_IMPORT_PATHS = ["bench.peer_tasks"]
PROCRASTINATE_AUTODISCOVER_MODULE_NAME = ""
