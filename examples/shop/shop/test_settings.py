"""The shop's settings for its tests: no Redis, and @task functions run eagerly."""

from .settings import *  # noqa: F403

# perform and EAGER send no ring, so no test needs a Redis; in memory, no test
# can reach one by accident.
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# docs/testing.md: ChannelsBackend runs each @task at enqueue, with its retries.
TASKS = {
    "default": {
        "BACKEND": "retrying_consumers.tasks_backend.ChannelsBackend",
        "QUEUES": ["default"],
        "OPTIONS": {"EAGER": True},
    }
}
