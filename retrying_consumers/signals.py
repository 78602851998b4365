"""Django signals sent as tasks move. Receivers get ``task`` (a TaskRecord).

``sender`` is the consumer class. Receivers run in the worker; one that raises is
logged and does not affect the task.
"""

from django.dispatch import Signal

#: An attempt was claimed and is about to run. Also: ``attempt``.
task_started = Signal()
#: An attempt failed and another is scheduled. Also: ``error``, ``decision``.
task_retrying = Signal()
#: The task succeeded. Also: ``result``.
task_succeeded = Signal()
#: The task ended dead (attempts exhausted or not retryable). Also: ``error``,
#: ``decision``.
task_dead = Signal()
#: The task was discarded by its policy. Also: ``error``, ``decision``.
task_discarded = Signal()
