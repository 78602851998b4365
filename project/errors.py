"""Turning configuration errors into one line instead of a traceback.

The mechanism is the library's (``retrying_consumers.startup``), so that
``runworker`` in any project prints the same lines; re-exported here for the
project's entry points.
"""

from retrying_consumers.running.startup import exit_on_bad_config, fail

__all__ = ["exit_on_bad_config", "fail"]
