"""Settings for worker processes in the fault tests: short leases and rings."""

from project.settings import *  # noqa: F403

ASGI_APPLICATION = "tests.e2e.fault_app.application"
RETRYING_CONSUMERS = {
    "LEASE_SECONDS": 2,
    "RING_TIMEOUT": 2,
    "SCHEDULER_INTERVAL": 0.2,
}
# "fault-plain" routes a plain consumer on purpose (a worker must serve it too).
SILENCED_SYSTEM_CHECKS = ["retrying_consumers.W001"]
