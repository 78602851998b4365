"""Worker settings for the periodic-task tests: the fault consumers, short
leases, and a schedule that ticks every second."""

from tests.e2e.fault_settings import *  # noqa: F403
from tests.e2e.fault_settings import RETRYING_CONSUMERS as FAULT_SETTINGS

SCHEDULE = "e2e-every-second"
RETRYING_CONSUMERS = {
    **FAULT_SETTINGS,
    "SCHEDULES": {
        SCHEDULE: {
            "every": 1,
            "channel": "fault-a",
            "type": "fault.sleep",
            "payload": {"seconds": 0.6},
        }
    },
}
