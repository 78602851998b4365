"""Running one measured run of each system, from process start to process stop.

Every run starts from a flushed Redis (and, for ours, an empty store), starts the
system's worker processes, warms them up with a few tasks, measures, and stops
them. The run's numbers come from ``bench.drive`` (ours) or ``bench.produce``
(the compared systems), each in its own process.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import PYTHON, Bench, Database, Proc, drive, start_workers, stopping
from project.devrun import BASE_DIR

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
    spy = None
    if profile is not None:
        time.sleep(3)  # py-spy attaches to a running interpreter
        spy = Proc(
            "py-spy",
            [
                _bin("py-spy"),
                "record",
                "--pid",
                str(procs[0].pid),
                "--format",
                "raw",
                "--rate",
                "250",
                "--output",
                str(profile),
                "--nonblocking",
            ],
            env,
            bench.logs,
        )
    answer = _drive_workers(
        bench, env, procs, ["run", *(drive_args or [])], tasks, timeout
    )
    if spy is not None:
        # py-spy writes its file once the process it samples has exited.
        try:
            spy.process.wait(30)
        finally:
            spy.stop()
    return answer


def run_ours_drain(
    bench: Bench,
    db: Database,
    *,
    workers: int,
    concurrency: int,
    tasks: int,
    timeout: float,
    producer: str = "enqueue",
) -> dict[str, Any]:
    """The workers alone: enqueue everything first, then start the workers.

    Time runs from the first claim to the last finish, so neither the producer
    nor the workers' start-up is in it. A diagnostic beside ``run_ours``.
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
    answer = _drive_workers(bench, env, procs, ["drain"], tasks, timeout)
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


def compared_command(system: str, workers: int, tag: str) -> list[list[str]]:
    """The worker command(s) of a compared system."""
    if system == "stock":
        return [[PYTHON, "-m", "bench.stock_worker"] for _ in range(workers)]
    if system == "celery":
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
                "1",
                "--worker-shutdown-timeout",
                "5000",
            ]
        ]
    raise ValueError(system)


def run_compared(
    bench: Bench, system: str, *, workers: int, tasks: int, timeout: float
) -> dict[str, Any]:
    """One run of stock Channels, Celery or Dramatiq with ``workers`` processes."""
    bench.flush_redis()
    env = bench.env()
    procs = [
        Proc(f"{system}-{n}", args, env, bench.logs)
        for n, args in enumerate(compared_command(system, workers, system), 1)
    ]
    with stopping(procs):
        time.sleep(0.5)
        with (bench.logs / "produce.log").open("ab") as log:
            result = subprocess.run(
                [
                    PYTHON,
                    "-m",
                    "bench.produce",
                    system,
                    "--tasks",
                    str(tasks),
                    "--timeout",
                    str(timeout),
                ],
                cwd=BASE_DIR,
                env=env,
                stdout=subprocess.PIPE,
                stderr=log,
                timeout=timeout + 180,
            )
        if result.returncode:
            tail = (bench.logs / "produce.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"bench.produce {system} failed:\n{tail}")
        answer: dict[str, Any] = json.loads(result.stdout.decode().splitlines()[-1])
    return answer
