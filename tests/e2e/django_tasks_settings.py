"""Worker settings for the Django task tests: short leases and rings, two queues."""

import project.settings as base
from project.settings import *  # noqa: F403

RETRYING_CONSUMERS = {
    **getattr(base, "RETRYING_CONSUMERS", {}),
    "LEASE_SECONDS": 2,
    "RING_TIMEOUT": 2,
    "SCHEDULER_INTERVAL": 0.2,
}
TASKS = {
    "default": {
        "BACKEND": "retrying_consumers.tasks_backend.ChannelsBackend",
        "QUEUES": ["default", "dj-e2e-emails"],
    }
}
