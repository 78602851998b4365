"""Settings of every bench process: the project's, with the bench's ASGI app.

The environment (``bench.common.Bench.env``) sets production mode (no DEBUG, which
would keep every query in memory), the private Redis, the scratch database and
quiet logs. Library options stay at their defaults.
"""

import os

from project.settings import *  # noqa: F403

ASGI_APPLICATION = "bench.app.application"

# Experiment knob, off by default: BENCH_CONN_MAX_AGE=N sets how long bench
# processes keep a database connection (the project's DATABASE_CONN_MAX_AGE,
# 60 s by default, otherwise).
if os.environ.get("BENCH_CONN_MAX_AGE"):
    DATABASES["default"]["CONN_MAX_AGE"] = int(os.environ["BENCH_CONN_MAX_AGE"])  # noqa: F405
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True  # noqa: F405
