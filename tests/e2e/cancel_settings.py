"""Worker settings for the cancel tests: a lease far longer than the second a
cancel may take, so that only the cancel message can explain a quick stop."""

from tests.e2e.fault_settings import *  # noqa: F403

RETRYING_CONSUMERS = {
    "LEASE_SECONDS": 30,
    "RING_TIMEOUT": 2,
    "SCHEDULER_INTERVAL": 0.2,
}
