"""Worker settings for the @task schedule test: Django's task queues and an
``echo`` task that runs every second."""

from tests.e2e.django_tasks_settings import *  # noqa: F403
from tests.e2e.django_tasks_settings import RETRYING_CONSUMERS as TASK_SETTINGS

TASK_SCHEDULE = "e2e-echo-every-second"

RETRYING_CONSUMERS = {
    **TASK_SETTINGS,
    "SCHEDULES": {
        TASK_SCHEDULE: {
            "every": 1,
            "task": "tests.django_tasks_defs.echo",
            "args": ["tick"],
            "kwargs": {"n": 1},
        }
    },
}
