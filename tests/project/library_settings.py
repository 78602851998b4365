"""The project's settings with ``RETRYING_CONSUMERS`` read from JSON in the
environment variable ``TEST_RETRYING_CONSUMERS``, for tests of bad options.

Python's JSON reader takes ``NaN`` and ``Infinity``, and ``1e400`` is infinity.
"""

import json
import os

from project.settings import *  # noqa: F403

RETRYING_CONSUMERS = json.loads(os.environ["TEST_RETRYING_CONSUMERS"])
