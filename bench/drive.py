"""The Django side of a scenario, run as ``python -m bench.drive COMMAND``.

It runs in its own process with the bench's environment (one database per
process, so SQLite and PostgreSQL can be measured in one invocation), uses only
the library's public API to enqueue, reads the store to know when every task has
succeeded, and prints one JSON line for the orchestrator.

Commands:

``reset``           empty the store (tasks, attempts, worker records)
``run``             wait for the workers, warm up, enqueue ``--tasks`` tasks (in a
                    burst, or at ``--rate`` per second) and wait until all succeeded
``progress-setup``  a staff user, its session key, and one progress task
``enqueue-only``    enqueue ``--tasks`` no-op tasks with no worker running
``drain``           wait until they all succeeded; time from the first claim to
                    the last finish (the workers' rate, without the producer)
``growth``          enqueue in chunks until ``--tasks``, timing each chunk and
                    sampling the workers' RSS
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
django.setup()

from django.db import connection  # noqa: E402
from django.db.models import Max  # noqa: E402

from bench.common import CPU_PARTS, PRODUCER_PARTS  # noqa: E402
from retrying_consumers import aenqueue, enqueue, enqueue_many  # noqa: E402
from retrying_consumers.models import (  # noqa: E402
    AttemptRecord,
    Status,
    TaskRecord,
    WorkerRecord,
)

CHANNEL = "bench"
BATCH = 1000  # tasks per enqueue_many call
PRODUCERS = ["enqueue", "aenqueue", "enqueue_many"]
POLL = 0.2  # the end time is read from the store, so polling can be slow
# Transactions the bench itself commits while measuring (two COUNTs per poll),
# taken out of the PostgreSQL figures.
own_transactions = 0


def reset() -> dict[str, Any]:
    AttemptRecord.objects.all().delete()
    TaskRecord.objects.all().delete()
    WorkerRecord.objects.all().delete()
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")
    return {"ok": True}


def wait_for_workers(count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while WorkerRecord.objects.count() < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {WorkerRecord.objects.count()} of {count} workers")
        time.sleep(0.1)


def finished(before: int) -> tuple[int, int]:
    """(succeeded, dead or cancelled) beyond the ``before`` already succeeded."""
    global own_transactions
    own_transactions += 2
    succeeded = TaskRecord.objects.filter(status=Status.SUCCEEDED).count() - before
    failed = TaskRecord.objects.filter(
        status__in=[Status.DEAD, Status.CANCELLED]
    ).count()
    return succeeded, failed


def wait_all(before: int, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        succeeded, failed = finished(before)
        if failed:
            raise SystemExit(f"{failed} task(s) ended dead or cancelled")
        if succeeded >= count:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out: {succeeded} of {count} succeeded")
        time.sleep(POLL)


def produce(
    type: str, count: int, payload: dict[str, Any], producer: str, rate: float
) -> tuple[list[Any], list[float]]:
    """Enqueue ``count`` tasks; return their ids and the time of each call."""
    if producer == "aenqueue":
        return asyncio.run(_aproduce(type, count, payload, rate))
    ids, calls = [], []
    if producer == "enqueue_many":  # in calls of BATCH tasks, as fast as it goes
        for first in range(0, count, BATCH):
            size = min(BATCH, count - first)
            calls += [time.time()] * size
            ids += enqueue_many(CHANNEL, type, [payload] * size)
        return ids, calls
    start = time.monotonic()
    for i in range(count):
        if rate:
            time.sleep(max(0.0, start + i / rate - time.monotonic()))
        calls.append(time.time())
        ids.append(enqueue(CHANNEL, type, payload))
    return ids, calls


async def _aproduce(
    type: str, count: int, payload: dict[str, Any], rate: float
) -> tuple[list[Any], list[float]]:
    ids, calls = [], []
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(count):
        if rate:
            await asyncio.sleep(max(0.0, start + i / rate - loop.time()))
        calls.append(time.time())
        ids.append(await aenqueue(CHANNEL, type, payload))
    return ids, calls


def chunks(items: list[Any], size: int = 500) -> Iterable[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def last_finished(ids: list[Any]) -> float:
    ends = [
        TaskRecord.objects.filter(pk__in=part).aggregate(m=Max("finished_at"))["m"]
        for part in chunks(ids)
    ]
    return max(e for e in ends if e is not None).timestamp()


def pg_counters() -> dict[str, int] | None:
    """Transactions and rows of this database so far (PostgreSQL only)."""
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_force_next_flush()")
        cursor.execute(
            "SELECT xact_commit, tup_inserted, tup_updated, tup_fetched, tup_returned"
            " FROM pg_stat_database WHERE datname = current_database()"
        )
        row = cursor.fetchone()
    names = [
        "xact_commit",
        "tup_inserted",
        "tup_updated",
        "tup_fetched",
        "tup_returned",
    ]
    return dict(zip(names, row, strict=True))


def redis_commands() -> dict[str, int]:
    """Calls of each Redis command so far (the bench's private Redis)."""
    import redis

    client = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
    stats = client.info("commandstats")
    client.close()
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


def per_task(
    before: dict[str, int], after: dict[str, int], tasks: int
) -> dict[str, float]:
    return {
        k: round((v - before.get(k, 0)) / tasks, 2)
        for k, v in sorted(after.items())
        if v - before.get(k, 0) and k not in {"info"}
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    global own_transactions
    wait_for_workers(args.workers, 60)
    payload = json.loads(args.payload)
    if args.warmup:
        before = TaskRecord.objects.filter(status=Status.SUCCEEDED).count()
        produce("bench.noop", args.warmup, {}, "enqueue", 0)
        wait_all(before, args.warmup, 60)
    before = TaskRecord.objects.filter(status=Status.SUCCEEDED).count()
    time.sleep(1.5)  # stats of the warm-up settle before the counters are read
    pg_before = pg_counters()
    redis_before = redis_commands()
    own_transactions = 0
    sched_before = schedstat()
    cpu_before = cpu_by_program()
    started = time.time()
    ids, calls = produce(args.type, args.tasks, payload, args.producer, args.rate)
    enqueued = time.time()
    sched_after = schedstat()
    wait_all(before, args.tasks, args.timeout)
    polled = time.time()
    cpu_after = cpu_by_program()
    redis_after = redis_commands()
    answer: dict[str, Any] = {
        "tasks": args.tasks,
        "enqueue_s": enqueued - started,
        "total_s": last_finished(ids) - started,
        "polled_s": polled - started,
        "redis_per_task": per_task(redis_before, redis_after, args.tasks),
        "duplicates": attempts_beyond_one(ids),
        "producer_sched_s": [
            b - a for a, b in zip(sched_before, sched_after, strict=True)
        ],
        "cpu_s": {
            k: round(v - cpu_before.get(k, 0.0), 2)
            for k, v in sorted(cpu_after.items())
            if v - cpu_before.get(k, 0.0) > 0.05
        },
    }
    if pg_before is not None:
        time.sleep(1.0)  # the workers' stats reach pg_stat_database at idle
        after = pg_counters() or {}
        after["xact_commit"] -= own_transactions + 2  # the polls, pg_counters
        answer["pg_per_task"] = {
            k: (after[k] - v) / args.tasks for k, v in pg_before.items()
        }
    if args.collect == "stamp":
        answer["latencies_ms"] = stamp_latencies(ids, calls)
    elif args.collect == "retry":
        answer["lateness_ms"] = retry_lateness(ids)
    return answer


def schedstat() -> tuple[float, float]:
    """Seconds this process's threads have run on a CPU, and waited for one."""
    on_cpu = waited = 0
    for path in Path("/proc/self/task").glob("*/schedstat"):
        fields = path.read_text().split()
        on_cpu += int(fields[0])
        waited += int(fields[1])
    return on_cpu / 1e9, waited / 1e9


def cpu_by_program() -> dict[str, float]:
    """CPU seconds used so far by every process on the machine, by program."""
    tick = os.sysconf("SC_CLK_TCK")
    backends: dict[int, str] = {}
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pid, CASE WHEN pid = pg_backend_pid() THEN 'producer' "
                "WHEN backend_type = 'client backend' THEN 'workers' "
                "ELSE backend_type END FROM pg_stat_activity"
            )
            backends = dict(cursor.fetchall())
    used: dict[str, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            argv = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        comm = text[text.index("(") + 1 : text.rindex(")")]
        words = [a.decode(errors="replace") for a in argv]
        if int(stat.parent.name) in backends:
            comm = f"postgres ({backends[int(stat.parent.name)]})"
        elif "runworker" in words:
            comm = "runworker"
        elif any(w.endswith("drive.py") or w == "bench.drive" for w in words):
            comm = "producer"
        used[comm] = used.get(comm, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return used


def attempts_beyond_one(ids: list[Any]) -> int:
    """Executions beyond one per task (0 unless a task failed or was re-run)."""
    return sum(
        AttemptRecord.objects.filter(task_id__in=part).count() - len(part)
        for part in chunks(ids)
    )


def enqueue_only(args: argparse.Namespace) -> dict[str, Any]:
    started = time.time()
    produce("bench.noop", args.tasks, {}, args.producer, 0)
    return {"tasks": args.tasks, "enqueue_s": time.time() - started}


def drain(args: argparse.Namespace) -> dict[str, Any]:
    from django.db.models import Min

    wait_for_workers(args.workers, 60)
    wait_all(0, args.tasks, args.timeout)
    first = AttemptRecord.objects.aggregate(m=Min("started_at"))["m"].timestamp()
    last = TaskRecord.objects.aggregate(m=Max("finished_at"))["m"].timestamp()
    return {"tasks": args.tasks, "total_s": last - first}


def stamp_latencies(ids: list[Any], calls: list[float]) -> list[float]:
    """Enqueue call to handler start, in ms (the handler stored its start)."""
    started: dict[Any, float] = {}
    for part in chunks(ids):
        for pk, result in TaskRecord.objects.filter(pk__in=part).values_list(
            "pk", "result"
        ):
            started[pk] = result["started"]
    return [(started[pk] - call) * 1000 for pk, call in zip(ids, calls, strict=True)]


def retry_lateness(ids: list[Any]) -> list[float]:
    """Start of each retry minus the time it was scheduled for, in ms."""
    by_task: dict[Any, dict[int, AttemptRecord]] = {}
    for part in chunks(ids):
        for attempt in AttemptRecord.objects.filter(task_id__in=part):
            by_task.setdefault(attempt.task_id, {})[attempt.number] = attempt
    late = []
    for attempts in by_task.values():
        for number, attempt in attempts.items():
            before = attempts.get(number - 1)
            if before is not None and before.next_attempt_at is not None:
                late.append(
                    (attempt.started_at - before.next_attempt_at).total_seconds() * 1000
                )
    return late


def progress_setup(args: argparse.Namespace) -> dict[str, Any]:
    from django.contrib.auth import (
        BACKEND_SESSION_KEY,
        HASH_SESSION_KEY,
        SESSION_KEY,
        get_user_model,
    )
    from django.contrib.sessions.backends.db import SessionStore

    users = get_user_model()
    user = users.objects.filter(username="bench").first()
    if user is None:
        user = users.objects.create_superuser("bench", "", None)
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    task_id = enqueue(
        CHANNEL,
        "bench.progress",
        {"go_key": args.go_key, "rate": args.rate, "seconds": args.seconds},
        user=user,
    )
    return {"session": session.session_key, "task_id": str(task_id)}


def growth(args: argparse.Namespace) -> dict[str, Any]:
    import psutil  # type: ignore[import-untyped]

    wait_for_workers(args.workers, 60)
    workers = [
        psutil.Process(pid)
        for pid in WorkerRecord.objects.values_list("pid", flat=True)
    ]
    marks = sorted(args.rss_at)
    rss: list[dict[str, Any]] = [
        {"after": 0, "rss_mb": [w.memory_info().rss / 2**20 for w in workers]}
    ]
    chunk_times = []
    done = 0
    while done < args.tasks:
        size = min(args.chunk, args.tasks - done)
        in_store = TaskRecord.objects.count()
        before = TaskRecord.objects.filter(status=Status.SUCCEEDED).count()
        cpu_before = cpu_by_program()
        started = time.time()
        ids, _ = produce("bench.noop", size, {}, "enqueue", 0)
        cpu_enqueued = cpu_by_program()  # before the polls, which the bench adds
        wait_all(before, size, args.timeout)
        elapsed = last_finished(ids) - started
        cpu_after = cpu_by_program()
        chunk_times.append(
            {
                "in_store": in_store,
                "tasks": size,
                "ms_per_task": elapsed * 1000 / size,
                "cpu_ms_per_task": {
                    part: (
                        (cpu_enqueued if part in PRODUCER_PARTS else cpu_after).get(
                            part, 0.0
                        )
                        - cpu_before.get(part, 0.0)
                    )
                    * 1000
                    / size
                    for part in CPU_PARTS
                },
            }
        )
        done += size
        while marks and done >= marks[0]:
            marks.pop(0)
            rss.append(
                {
                    "after": done,
                    "rss_mb": [w.memory_info().rss / 2**20 for w in workers],
                }
            )
        print(json.dumps({"progress": done}), file=sys.stderr, flush=True)
    return {"chunks": chunk_times, "rss": rss}


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.drive")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("reset")
    p = sub.add_parser("run")
    p.add_argument("--type", default="bench.noop")
    p.add_argument("--tasks", type=int, required=True)
    p.add_argument("--workers", type=int, required=True)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--payload", default="{}")
    p.add_argument("--producer", choices=PRODUCERS, default="enqueue")
    p.add_argument("--rate", type=float, default=0.0, help="tasks/s; 0: a burst")
    p.add_argument("--collect", choices=["none", "stamp", "retry"], default="none")
    p.add_argument("--timeout", type=float, default=900)
    p = sub.add_parser("enqueue-only")
    p.add_argument("--tasks", type=int, required=True)
    p.add_argument("--producer", choices=PRODUCERS, default="enqueue")
    p = sub.add_parser("drain")
    p.add_argument("--tasks", type=int, required=True)
    p.add_argument("--workers", type=int, required=True)
    p.add_argument("--timeout", type=float, default=900)
    p = sub.add_parser("progress-setup")
    p.add_argument("--go-key", required=True)
    p.add_argument("--rate", type=float, default=100)
    p.add_argument("--seconds", type=float, default=5)
    p = sub.add_parser("growth")
    p.add_argument("--tasks", type=int, required=True)
    p.add_argument("--chunk", type=int, default=1000)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument(
        "--rss-at", type=lambda s: [int(x) for x in s.split(",")], default=[]
    )
    p.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()
    command: Callable[[], dict[str, Any]] = {
        "reset": reset,
        "run": lambda: run(args),
        "enqueue-only": lambda: enqueue_only(args),
        "drain": lambda: drain(args),
        "progress-setup": lambda: progress_setup(args),
        "growth": lambda: growth(args),
    }[args.command]
    print(json.dumps(command()), flush=True)


if __name__ == "__main__":
    main()
