"""``manage.py tasks``: inspect and act on task records from a shell.

Subcommands::

    tasks list     [filters] [--limit N]          tasks, newest first
                   (--type django.task.* : every Django task)
    tasks show     ID                             one task with every attempt
    tasks retry    ID... | --dead [filters]       retry now / re-drive dead tasks
    tasks cancel   ID... [--reason TEXT]          cancel unfinished tasks
    tasks purge    --status S --older-than AGE    delete old finished records
    tasks backlog                                 tasks per channel and status
    tasks workers                                 registered worker processes
    tasks limits                                  limits per type, running, waiting
    tasks schedules                               periodic tasks, next and last runs

Every subcommand prints a table, or JSON with ``--json``. Bad arguments and
unknown ids end with a message on standard error and a non-zero exit status.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Q
from django.utils import timezone

from retrying_consumers.core.exceptions import ConfigurationError, TaskNotFound
from retrying_consumers.management.describe import (
    attempt_data,
    show_text,
    task_data,
)
from retrying_consumers.management.tables import (
    clip,
    duration,
    parse_age,
    positive_int,
    table,
    when,
)
from retrying_consumers.models import ACTIVE, FINAL, Status, TaskRecord
from retrying_consumers.ops import audit, reports
from retrying_consumers.recurring import ticking
from retrying_consumers.storage import limits, retention, store

STATUSES = [str(status) for status in Status.values]
FINISHED = [str(status) for status in FINAL]


class Command(BaseCommand):
    """Inspect, retry, cancel and purge tasks; show the backlog and the workers."""

    help = "Inspect, retry, cancel and purge tasks; show the backlog and workers."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(
            dest="subcommand", metavar="subcommand", required=True
        )
        listing = sub.add_parser("list", help="List tasks, newest first.")
        _add_filters(listing, statuses=True)
        listing.add_argument("--limit", type=positive_int, default=50)
        show = sub.add_parser("show", help="Show one task with every attempt.")
        show.add_argument("task_id")
        retry = sub.add_parser(
            "retry", help="Run waiting tasks now; re-drive dead or cancelled ones."
        )
        retry.add_argument("task_ids", nargs="*", metavar="task_id")
        retry.add_argument(
            "--dead", action="store_true", help="Retry every dead task that matches."
        )
        _add_filters(retry, statuses=False)
        retry.add_argument("--dry-run", action="store_true")
        cancel = sub.add_parser("cancel", help="Cancel unfinished tasks.")
        cancel.add_argument("task_ids", nargs="+", metavar="task_id")
        cancel.add_argument("--reason", default="cancelled from the command line")
        purge = sub.add_parser("purge", help="Delete finished tasks older than AGE.")
        purge.add_argument("--status", action="append", choices=FINISHED, required=True)
        purge.add_argument(
            "--older-than",
            type=parse_age,
            required=True,
            metavar="AGE",
            help="Finished more than AGE ago: 90s, 15m, 12h, 30d, 2w.",
        )
        purge.add_argument("--dry-run", action="store_true")
        purge.add_argument("--batch-size", type=positive_int, default=500)
        sub.add_parser("backlog", help="Tasks per channel and status.")
        sub.add_parser(
            "limits", help="Declared limits per message type, running and waiting."
        )
        workers = sub.add_parser("workers", help="Registered worker processes.")
        workers.add_argument("--live", action="store_true", help="Only live ones.")
        sub.add_parser(
            "schedules", help="Periodic tasks with their next and last runs."
        )
        for subparser in sub.choices.values():
            subparser.add_argument(
                "--json", action="store_true", help="Print JSON for scripts."
            )

    def handle(self, *args: Any, **options: Any) -> None:
        """Run the chosen subcommand."""
        self.as_json = options["json"]
        getattr(self, f"do_{options['subcommand']}")(options)

    def emit(self, data: Any, text: str) -> None:
        """Print ``data`` as JSON with ``--json``, else ``text``."""
        self.stdout.write(
            json.dumps(data, indent=2, default=str) if self.as_json else text
        )

    # Subcommands ---------------------------------------------------------------

    def do_list(self, options: dict[str, Any]) -> None:
        """``tasks list``: the newest tasks that match the filters."""
        tasks = list(_filtered(options)[: options["limit"]])
        rows = [
            [
                str(t.id),
                t.status,
                t.channel,
                t.type,
                f"{t.attempt}/{t.max_attempts or '?'}",
                clip(f"{t.error_class}: {t.error_message}") if t.error_class else "",
                when(t.created_at),
            ]
            for t in tasks
        ]
        headers = ["id", "status", "channel", "type", "attempt", "error", "created"]
        self.emit(
            [task_data(t) for t in tasks],
            table(headers, rows) if tasks else "no tasks match",
        )

    def do_show(self, options: dict[str, Any]) -> None:
        """``tasks show ID``: one task, every attempt and its traceback."""
        task = _get(options["task_id"])
        attempts = list(task.attempts.order_by("number"))
        data = {**task_data(task), "attempts": [attempt_data(a) for a in attempts]}
        self.emit(data, show_text(task, attempts))

    def do_retry(self, options: dict[str, Any]) -> None:
        """``tasks retry``: run now, or re-drive dead and cancelled tasks."""
        ids = options["task_ids"]
        if bool(ids) == bool(options["dead"]):
            raise CommandError("give task ids, or --dead [filters], not both or none")
        filters = ("channel", "type", "error", "older_than", "newer_than")
        if ids and any(options[name] for name in filters):
            raise CommandError("filters select dead tasks: use them with --dead")
        if options["dead"]:
            ids = [
                str(pk)
                for pk in _filtered(options, ["dead"]).values_list("pk", flat=True)
            ]
        if options["dry_run"]:
            self.emit({"would_retry": ids}, f"would retry {len(ids)} task(s)")
            return
        self._each(ids, _retry_one, "retried")

    def do_cancel(self, options: dict[str, Any]) -> None:
        """``tasks cancel``: end unfinished tasks as cancelled."""
        reason = options["reason"]
        self._each(options["task_ids"], lambda i: _cancel_one(i, reason), "cancelled")

    def do_purge(self, options: dict[str, Any]) -> None:
        """``tasks purge``: delete old finished tasks of the given statuses."""
        age = options["older_than"]
        counts: dict[str, int] = {}
        for status in dict.fromkeys(options["status"]):
            if options["dry_run"]:
                counts[status] = retention.count_purgeable(status, age)
            else:
                counts[status] = retention.purge(
                    status, age, batch_size=options["batch_size"]
                )
        verb = "would delete" if options["dry_run"] else "deleted"
        rows = [[s, duration(age.total_seconds()), n] for s, n in counts.items()]
        self.emit(
            {"dry_run": options["dry_run"], "deleted": counts},
            table(["status", "older than", verb], rows),
        )

    def do_limits(self, options: dict[str, Any]) -> None:
        """``tasks limits``: max_running and rate_limit of the routed consumers."""
        found = limits.declared_limits()
        rows = [
            [
                info.channel,
                info.type,
                "-" if info.max_running is None else info.max_running,
                info.rate_limit or "-",
                info.running,
                info.waiting,
            ]
            for info in found
        ]
        headers = ["channel", "type", "max running", "rate", "running", "waiting"]
        self.emit(
            [dataclasses.asdict(info) for info in found],
            table(headers, rows) if found else "no consumer declares a limit",
        )

    def do_backlog(self, options: dict[str, Any]) -> None:
        """``tasks backlog``: tasks per channel and status, and what is overdue."""
        entries = reports.backlog()
        headers = ["channel", *STATUSES, "overdue", "most overdue"]
        rows = [
            [
                e.channel,
                *(e.counts[s] for s in STATUSES),
                e.overdue,
                duration(e.most_overdue_seconds),
            ]
            for e in entries
        ]
        self.emit(
            [e.as_dict() for e in entries],
            table(headers, rows) if entries else "no tasks stored",
        )

    def do_workers(self, options: dict[str, Any]) -> None:
        """``tasks workers``: the registered worker processes."""
        found = [w for w in reports.workers() if w.live or not options["live"]]
        headers = ["worker", "state", "channels", "running", "heartbeat", "started"]
        rows = [
            [
                w.id,
                "live" if w.live else "silent",
                ",".join(w.channels),
                f"{len(w.running)}/{w.concurrency}",
                f"{duration(w.heartbeat_age)} ago",
                when(w.started_at),
            ]
            for w in found
        ]
        self.emit(
            [w.as_dict() for w in found],
            table(headers, rows) if found else "no workers registered",
        )

    def do_schedules(self, options: dict[str, Any]) -> None:
        """``tasks schedules``: periodic tasks, their next run and their last."""
        try:
            states = ticking.schedule_states()
        except ConfigurationError as err:
            raise CommandError(str(err)) from None
        headers = ["name", "target", "when", "timezone", "catch up", "next run"]
        headers += ["last run", "last task", "status"]
        rows = [
            [
                s.schedule.name,
                s.schedule.target,
                s.schedule.expression,
                s.schedule.timezone,
                s.schedule.catch_up,
                when(s.next_run),
                when(s.last_tick),
                str(s.last_task_id) if s.last_task_id else "-",
                s.last_status or "-",
            ]
            for s in states
        ]
        self.emit(
            [s.as_dict() for s in states],
            table(headers, rows) if states else "no periodic tasks declared",
        )

    def _each(self, ids: list[str], act: Any, done_word: str) -> None:
        """Apply ``act`` to every id; report all, then fail if any was refused."""
        done, refused = [], []
        for task_id in ids:
            try:
                done.append(act(task_id))
            except (TaskNotFound, ValueError) as err:
                refused.append({"id": task_id, "error": str(err)})
        rows = [[str(t.id), t.status, t.channel, t.type] for t in done]
        self.emit(
            {done_word: [task_data(t) for t in done], "refused": refused},
            table(["id", "status", "channel", "type"], rows)
            if done
            else f"no tasks {done_word}",
        )
        if refused:
            lines = "; ".join(r["error"] for r in refused[:5])
            more = f" (and {len(refused) - 5} more)" if len(refused) > 5 else ""
            raise CommandError(f"{len(refused)} task(s) refused: {lines}{more}")


def _add_filters(parser: CommandParser, *, statuses: bool) -> None:
    if statuses:
        parser.add_argument(
            "--status", action="append", choices=STATUSES, help="Repeatable."
        )
    parser.add_argument("--channel", action="append", help="Repeatable.")
    parser.add_argument(
        "--type",
        action="append",
        help="Repeatable. A trailing * matches a prefix: 'django.task.*'.",
    )
    parser.add_argument(
        "--error", metavar="TEXT", help="Error class or message contains TEXT."
    )
    parser.add_argument(
        "--older-than", type=parse_age, metavar="AGE", help="Created before AGE ago."
    )
    parser.add_argument(
        "--newer-than", type=parse_age, metavar="AGE", help="Created within AGE."
    )


def _filtered(options: dict[str, Any], statuses: list[str] | None = None) -> Any:
    query = TaskRecord.objects.order_by("-created_at")
    statuses = statuses or options.get("status")
    if statuses:
        query = query.filter(status__in=statuses)
    if options["channel"]:
        query = query.filter(channel__in=options["channel"])
    if options["type"]:
        query = query.filter(_type_match(options["type"]))
    if options["error"]:
        text = options["error"]
        query = query.filter(
            Q(error_class__icontains=text) | Q(error_message__icontains=text)
        )
    now = timezone.now()
    if options["older_than"] is not None:
        query = query.filter(created_at__lt=now - options["older_than"])
    if options["newer_than"] is not None:
        query = query.filter(created_at__gte=now - options["newer_than"])
    return query


def _type_match(types: list[str]) -> Q:
    """Any of ``types``: exact, or a prefix when it ends with ``*``."""
    match = Q(type__in=[kind for kind in types if not kind.endswith("*")])
    for kind in types:
        if kind.endswith("*"):
            match |= Q(type__startswith=kind[:-1])
    return match


def _get(task_id: str) -> TaskRecord:
    try:
        return store.get_task(task_id)
    except TaskNotFound as err:
        raise CommandError(str(err)) from None


def _retry_one(task_id: str) -> TaskRecord:
    return audit.retry_now(task_id, audit.Actor.command_line())


def _cancel_one(task_id: str, reason: str) -> TaskRecord:
    task = store.get_task(task_id)
    if task.status not in ACTIVE:
        raise ValueError(f"task {task.id} is already {task.status}; nothing to cancel")
    task = audit.cancel(task_id, audit.Actor.command_line(), reason)
    if task.status != Status.CANCELLED:
        raise ValueError(f"task {task.id} ended {task.status} before it was cancelled")
    return task
