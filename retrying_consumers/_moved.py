"""The library's old module paths, kept as aliases of the moved modules.

Until the modules were grouped into subpackages, ``retrying_consumers.store``,
``retrying_consumers.worker`` and the rest sat side by side. Those paths are in
users' settings (``"retrying_consumers.tasks_backend.ChannelsBackend"``, logging
formatters), imports and test patches, so each still imports: a finder at the
front of ``sys.meta_path`` answers for the old name with the module at its new
path, and ``sys.modules`` holds that one module object under both names (a
patch through either path patches both). No file stands at the old path.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from types import ModuleType

PACKAGE = __name__.rpartition(".")[0]

#: Old module name (under ``retrying_consumers``) -> its path now.
MOVED = {
    "exceptions": "core.exceptions",
    "conf": "core.conf",
    "policy": "core.policy",
    "payload": "core.payload",
    "sql": "storage.sql",
    "store": "storage.store",
    "writers": "storage.writers",
    "followups": "storage.followups",
    "limits": "storage.limits",
    "retention": "storage.retention",
    "health": "storage.health",
    "batching": "messaging.batching",
    "doorbell": "messaging.doorbell",
    "revoking": "messaging.revoking",
    "events": "live.events",
    "progress": "live.progress",
    "producer": "producing.producer",
    "schedules": "recurring.schedules",
    "ticking": "recurring.ticking",
    "worker": "running.worker",
    "intake": "running.intake",
    "recovery": "running.recovery",
    "scheduling": "running.scheduling",
    "startup": "running.startup",
    "attempts": "running.attempts",
    "inplace": "running.inplace",
    "handlers": "running.handlers",
    "outcomes": "running.outcomes",
    "recording": "running.recording",
    "logs": "running.logs",
    "eager": "running.eager",
    "mixin": "running.mixin",
    "consumers": "running.consumers",
    "tasks_backend": "djangotasks.tasks_backend",
    "tasks_consumer": "djangotasks.tasks_consumer",
    "audit": "ops.audit",
    "deletion": "ops.deletion",
    "metrics": "ops.metrics",
    "notify": "ops.notify",
    "reports": "ops.reports",
    "logformat": "ops.logformat",
    "readonly_admin": "ops.readonly_admin",
    "audit_admin": "ops.audit_admin",
    "followups_admin": "ops.followups_admin",
    "schedule_admin": "ops.schedule_admin",
}


def new_name(old: str) -> str | None:
    """The module's full name now, if ``old`` is a moved module's full old name."""
    package, _, name = old.rpartition(".")
    if package != PACKAGE or name not in MOVED:
        return None
    return f"{PACKAGE}.{MOVED[name]}"


class _Alias(importlib.abc.Loader):
    """Loads an old name as the module at its new name."""

    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(self.target)
        self.own_spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # The import system has just set module.__spec__ to the alias's spec (and
        # sys.modules[old] to the module): the module keeps its own spec.
        module.__spec__ = self.own_spec


class MovedFinder(importlib.abc.MetaPathFinder):
    """Finds each old module path of the table, and nothing else."""

    def find_spec(
        self,
        fullname: str,
        path: object = None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        new = new_name(fullname)
        if new is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _Alias(new))


def install() -> None:
    """Put the finder first, once: ahead of an editable install's finder, which
    would look for the old name in its own source tree."""
    if not any(isinstance(finder, MovedFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, MovedFinder())
