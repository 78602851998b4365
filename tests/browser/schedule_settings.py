"""Settings for the schedules page test: a short example job every 2 seconds."""

import project.settings as base
from project.settings import *  # noqa: F403

RETRYING_CONSUMERS = {
    **getattr(base, "RETRYING_CONSUMERS", {}),
    "SCHEDULES": {
        "example-every-2s": {
            "every": 2,
            "channel": "examples",
            "type": "example.long",
            "payload": {"steps": 1},
        },
        "nightly-example": {
            "cron": "0 3 * * *",
            "timezone": "Europe/Berlin",
            "channel": "examples",
            "type": "example.long",
            "catch_up": "skip",
        },
    },
}
