"""``manage.py runworker``: Channels' command, run by the retrying worker.

Same arguments as Channels' own, plus ``--concurrency`` and ``--grace-period``.
The worker takes only as many messages as it can run, keeps going past poison
messages, rings due and lost tasks, and stops gracefully on SIGTERM/SIGINT (see
``retrying_consumers.worker``). An unreachable Redis is one line and exit status 2
after ``REDIS_CONNECT_TIMEOUT`` seconds; so are a database that does not answer or
lacks the library's migrations, and a bad argument.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
from typing import Any

from channels.management.commands import runworker
from channels.routing import get_default_application
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError

from retrying_consumers.core.conf import library_settings
from retrying_consumers.producing.producer import CHANNEL_NAME
from retrying_consumers.running.startup import (
    StartupError,
    check_database,
    fail,
    wait_for_redis,
)
from retrying_consumers.running.worker import RetryingWorker, WorkerConfig

logger = logging.getLogger("retrying_consumers.worker")


def positive(kind: type) -> Any:
    """An argparse type: a finite ``kind`` (int or float) more than 0."""
    noun = "a whole number" if kind is int else "a number"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {noun}; expected {noun} more than 0"
            ) from None
        # float() takes "nan" and "inf"; an infinite grace period never ends.
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a finite number; expected {noun} more than 0"
            )
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be more than 0")
        return value

    return parse


class Command(runworker.Command):
    help = "Run a retrying worker for the given channels."

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> Any:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        if parser.called_from_command_line:
            # One line, like every other start-up mistake, not the usage block.
            usage = f"see {os.path.basename(prog_name)} {subcommand} --help"
            parser.error = lambda message: fail(f"{message} ({usage})")
        return parser

    def add_arguments(self, parser: Any) -> None:
        super().add_arguments(parser)
        lib = library_settings()
        parser.add_argument(
            "--concurrency",
            type=positive(int),
            default=lib.worker_concurrency,
            help="Messages run at once by this process (default %(default)s).",
        )
        parser.add_argument(
            "--grace-period",
            type=positive(float),
            default=lib.grace_period,
            help="Seconds the attempts in flight get after SIGTERM "
            "(default %(default)s).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        bad = [c for c in options["channels"] if not CHANNEL_NAME.fullmatch(c)]
        if bad:
            fail(
                f"invalid channel name(s): {', '.join(bad)}; expected ASCII "
                "letters, digits, '-', '_' and '.', at most 99 of them"
            )
        try:
            check_database()
            redis_url = getattr(settings, "REDIS_URL", None)
            if redis_url:
                timeout = getattr(settings, "REDIS_CONNECT_TIMEOUT", 10)
                wait_for_redis(redis_url, timeout)
        except StartupError as err:
            fail(str(err))
        layer = self._layer(options["layer"])
        config = WorkerConfig(
            concurrency=options["concurrency"],
            grace_period=options["grace_period"],
            scheduler_interval=library_settings().scheduler_interval,
        )
        worker = RetryingWorker(
            get_default_application(), options["channels"], layer, config
        )
        try:
            worker.run()
        except ImproperlyConfigured as err:  # found once the loop runs
            fail(str(err))

    def _layer(self, alias: str) -> Any:
        from channels.layers import get_channel_layer

        layer = get_channel_layer(alias)
        if layer is None:
            raise CommandError("You do not have any CHANNEL_LAYERS configured.")
        return layer
