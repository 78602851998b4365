"""Running one measured run of each system, from process start to process stop.

Every run starts from a flushed Redis (and, for ours, an empty store), starts the
system's worker processes, warms them up with a few tasks, measures, and stops
them. The run's numbers come from ``bench.drive`` (ours) or ``bench.produce``
(the compared systems), each in its own process.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import (
    PYTHON,
    Bench,
    Database,
    Proc,
    drive,
    run_module,
    start_workers,
    stopping,
)

# The compared systems' commands, installed beside the interpreter running the
# bench (the checkout's virtualenv may not be the one).
VENV_BIN = Path(PYTHON).parent


def _bin(name: str) -> str:
    local = VENV_BIN / name
    return str(local) if local.exists() else name


def run_ours(
    bench: Bench,
    db: Database,
    *,
    workers: int,
    concurrency: int,
    tasks: int,
    timeout: float,
    drive_args: list[str] | None = None,
    worker_prefix: list[str] | None = None,
    profile: Path | None = None,
) -> dict[str, Any]:
    """One run of the retry layer: ``workers`` runworker processes, ``enqueue``.

    With ``profile``, py-spy samples the first worker for the whole run and writes
    collapsed stacks there (see ``bench.profile_summary``).
    """
    bench.flush_redis()
    env = bench.env(db)
    drive(env, ["reset"], 120, bench.logs)
    procs = start_workers(
        bench, env, workers, concurrency, f"ours-{db.label}", worker_prefix
    )
    spy = _spy(bench, env, procs[0], profile)
    answer = _drive_workers(
        bench, env, procs, ["run", *(drive_args or [])], tasks, timeout
    )
    _spy_done(spy)
    return answer


def _spy(
    bench: Bench,
    env: dict[str, str],
    proc: Proc,
    to: Path | None,
    after: float = 3.0,
) -> Proc | None:
    """py-spy sampling ``proc`` into ``to`` (collapsed stacks), if ``to``,
    from ``after`` seconds on (it attaches to a running interpreter)."""
    if to is None:
        return None
    time.sleep(after)
    return Proc(
        "py-spy",
        [
            _bin("py-spy"),
            "record",
            "--pid",
            str(proc.pid),
            "--format",
            "raw",
            "--rate",
            "250",
            "--output",
            str(to),
            "--nonblocking",
        ],
        env,
        bench.logs,
    )


def _spy_done(spy: Proc | None) -> None:
    if spy is not None:
        # py-spy writes its file once the process it samples has exited.
        try:
            spy.process.wait(30)
        finally:
            spy.stop()


def run_ours_drain(
    bench: Bench,
    db: Database,
    *,
    workers: int,
    concurrency: int,
    tasks: int,
    timeout: float,
    producer: str = "enqueue",
    profile: Path | None = None,
) -> dict[str, Any]:
    """The workers alone: enqueue everything first, then start the workers.

    Time runs from the first claim to the last finish, so neither the producer
    nor the workers' start-up is in it. With ``profile``, py-spy samples the
    first worker (as in :func:`run_ours`).
    """
    bench.flush_redis()
    env = bench.env(db)
    drive(env, ["reset"], 120, bench.logs)
    enqueued = drive(
        env,
        ["enqueue-only", "--tasks", str(tasks), "--producer", producer],
        timeout,
        bench.logs,
    )
    procs = start_workers(bench, env, workers, concurrency, f"drain-{db.label}")
    # The drain starts as soon as the workers are up: attach early.
    spy = _spy(bench, env, procs[0], profile, after=0.5)
    answer = _drive_workers(bench, env, procs, ["drain"], tasks, timeout)
    _spy_done(spy)
    answer["enqueue_s"] = enqueued["enqueue_s"]
    return answer


def _drive_workers(
    bench: Bench,
    env: dict[str, str],
    procs: list[Proc],
    command: list[str],
    tasks: int,
    timeout: float,
) -> dict[str, Any]:
    """``bench.drive`` ``command`` while ``procs`` run; stop them after."""
    with stopping(procs):
        answer = drive(
            env,
            [
                command[0],
                "--tasks",
                str(tasks),
                "--workers",
                str(len(procs)),
                "--timeout",
                str(timeout),
                *command[1:],
            ],
            timeout + 120,
            bench.logs,
        )
        answer["worker_pids"] = [p.pid for p in procs]
        dead = [p.name for p in procs if not p.alive()]
        if dead:
            raise RuntimeError(f"worker(s) died during the run: {dead}")
    return answer


def each_run_of_ours(
    bench: Bench, db: Database, args: Any, drive_args: list[str]
) -> Iterator[dict[str, Any]]:
    """``args.runs`` runs of ours on ``db`` (scenarios with fixed workers)."""
    for run in range(1, args.runs + 1):
        print(f"run {run}/{args.runs}: ours {db.label} x{args.workers} ...", flush=True)
        yield run_ours(
            bench,
            db,
            workers=args.workers,
            concurrency=args.concurrency,
            tasks=args.tasks,
            timeout=args.timeout,
            drive_args=drive_args,
        )


#: The compared systems, each in the configuration its row names.
COMPARED = [
    "stock",
    "celery",
    "celery-durable",
    "dramatiq",
    "django-tasks-db",
    "procrastinate",
]
#: The ones that keep their tasks in the database (measured on PostgreSQL).
DATABASE_PEERS = {"django-tasks-db", "procrastinate"}


def compared_command(system: str, workers: int, tag: str) -> list[list[str]]:
    """The worker command(s) of a compared system.

    Celery and Dramatiq run ``workers`` pool processes under one master, with
    their other options at their defaults (Dramatiq's 8 threads per process);
    the others run ``workers`` processes of their own.
    """
    if system == "stock":
        return [[PYTHON, "-m", "bench.stock_worker"] for _ in range(workers)]
    if system in ("celery", "celery-durable"):
        return [
            [
                _bin("celery"),
                "-A",
                "bench.celery_app",
                "worker",
                "--pool",
                "prefork",
                "--concurrency",
                str(workers),
                "--loglevel",
                "WARNING",
                "--hostname",
                f"{tag}@%h",
            ]
        ]
    if system == "dramatiq":
        return [
            [
                _bin("dramatiq"),
                "bench.dramatiq_app",
                "--processes",
                str(workers),
                "--threads",
                "8",
                "--worker-shutdown-timeout",
                "5000",
            ]
        ]
    if system == "django-tasks-db":
        return [[PYTHON, "manage.py", "db_worker"] for _ in range(workers)]
    if system == "procrastinate":
        return [
            [PYTHON, "manage.py", "procrastinate", "worker"] for _ in range(workers)
        ]
    raise ValueError(system)


def compared_env(bench: Bench, system: str, db: Database | None) -> dict[str, str]:
    """The environment of a compared system's workers and producer."""
    if system in DATABASE_PEERS:
        if db is None:
            raise ValueError(f"{system} needs a database")
        return bench.env(db, DJANGO_SETTINGS_MODULE="bench.peer_settings")
    if system == "celery-durable":
        return bench.env(BENCH_CELERY_DURABLE="1")
    return bench.env()


def produce(
    bench: Bench,
    system: str,
    env: dict[str, str],
    mode: str,
    tasks: int,
    timeout: float,
) -> dict[str, Any]:
    """``python -m bench.produce`` for ``system`` in ``mode``; its JSON answer."""
    return run_module(
        "bench.produce",
        env,
        [
            system.removesuffix("-durable"),
            "--mode",
            mode,
            "--tasks",
            str(tasks),
            "--timeout",
            str(timeout),
        ],
        timeout + 180,
        bench.logs,
    )


def _start_compared(
    bench: Bench, system: str, env: dict[str, str], workers: int
) -> list[Proc]:
    return [
        Proc(f"{system}-{n}", args, env, bench.logs)
        for n, args in enumerate(compared_command(system, workers, system), 1)
    ]


def run_compared(
    bench: Bench,
    system: str,
    *,
    workers: int,
    tasks: int,
    timeout: float,
    db: Database | None = None,
) -> dict[str, Any]:
    """One end-to-end run of a compared system with ``workers`` processes."""
    bench.flush_redis()
    env = compared_env(bench, system, db)
    with stopping(_start_compared(bench, system, env, workers)):
        time.sleep(0.5)
        return produce(bench, system, env, "e2e", tasks, timeout)


def run_compared_drain(
    bench: Bench,
    system: str,
    *,
    workers: int,
    tasks: int,
    timeout: float,
    db: Database | None = None,
) -> dict[str, Any]:
    """A compared system's producer alone, then its workers draining the backlog."""
    bench.flush_redis()
    env = compared_env(bench, system, db)
    answer = produce(bench, system, env, "enqueue", tasks, timeout)
    procs = _start_compared(bench, system, env, workers)
    with stopping(procs):
        drained = produce(bench, system, env, "wait", tasks, timeout)
        dead = [p.name for p in procs if not p.alive()]
        if dead:
            raise RuntimeError(f"worker(s) died during the run: {dead}")
    return {**drained, "enqueue_s": answer["enqueue_s"]}
