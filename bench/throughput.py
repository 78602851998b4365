"""Scenario 1, throughput: no-op tasks end to end, beside the alternatives.

    python -m bench.throughput --runs 3 --tasks 10000 \
        --postgres postgres://postgres@127.0.0.1:5432/bench

Ours: ``enqueue`` in a burst from one process, 1 and 2 ``manage.py runworker``
processes, until every task is ``succeeded`` in the store (SQLite, and PostgreSQL
with ``--postgres``). In the same invocation, against the same Redis: stock
Channels (``channels.worker.Worker``, a plain consumer, 1 and 2 processes), Celery
(prefork, concurrency 2, results ignored) and Dramatiq (2 processes, 1 thread each).
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.common import Bench, Series, common_args, print_table, ratio
from bench.systems import run_compared, run_ours, run_ours_drain

SYSTEMS = ["ours", "stock", "celery", "dramatiq"]


def main() -> None:
    parser = common_args(
        argparse.ArgumentParser(prog="bench.throughput", description=__doc__),
        tasks=10_000,
    )
    parser.add_argument(
        "--workers", default="1,2", help="worker processes of ours and stock"
    )
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument(
        "--ours-concurrency",
        default="",
        help="comma list of runworker --concurrency values to run ours with, "
        "each its own row (default: --concurrency)",
    )
    parser.add_argument(
        "--producer", choices=["enqueue", "aenqueue", "enqueue_many"], default="enqueue"
    )
    parser.add_argument(
        "--drain",
        action="store_true",
        help="also time ours' workers alone: everything enqueued first, then the "
        "workers started; from first claim to last finish (a diagnostic)",
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        type=Path,
        help="sample the first worker of each run of ours with py-spy into DIR "
        "(collapsed stacks; summarise with python -m bench.profile_summary)",
    )
    args = parser.parse_args()
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    systems = args.systems.split(",")
    counts = [int(w) for w in args.workers.split(",")]
    slots = [
        int(c) for c in (args.ours_concurrency or str(args.concurrency)).split(",")
    ]

    rows: dict[tuple[str, str, int, int], dict[str, Any]] = defaultdict(
        lambda: {"rate": Series(), "total": Series(), "enqueue": Series(), "extra": {}}
    )
    with Bench(capacity=args.capacity, keep=args.keep_logs) as bench:
        dbs = bench.databases(args.postgres, sqlite=not args.no_sqlite)
        plan: list[tuple[str, str, int, int]] = []
        if "ours" in systems:
            plan += [
                ("ours", db.label, w, c) for db in dbs for c in slots for w in counts
            ]
            if args.drain:
                plan += [
                    ("drain", db.label, w, c)
                    for db in dbs
                    for c in slots
                    for w in counts
                ]
        if "stock" in systems:
            plan += [("stock", "-", w, 0) for w in counts]
        if "celery" in systems:
            plan.append(("celery", "-", 2, 0))
        if "dramatiq" in systems:
            plan.append(("dramatiq", "-", 2, 0))
        by_label = {db.label: db for db in dbs}
        # Runs interleave the systems, so a noisy minute hurts all of them alike.
        for run in range(1, args.runs + 1):
            for system, label, workers, conc in plan:
                print(
                    f"run {run}/{args.runs}: {system} {label} x{workers}"
                    + (f" c={conc}" if conc else "")
                    + " ...",
                    flush=True,
                )
                ours = {
                    "workers": workers,
                    "concurrency": conc,
                    "tasks": args.tasks,
                    "timeout": args.timeout,
                }
                try:
                    if system == "drain":
                        answer = run_ours_drain(
                            bench, by_label[label], producer=args.producer, **ours
                        )
                    elif system == "ours":
                        answer = run_ours(
                            bench,
                            by_label[label],
                            drive_args=["--producer", args.producer],
                            **ours,
                            profile=args.profile
                            / f"ours-{label}-x{workers}-c{conc}-run{run}.txt"
                            if args.profile
                            else None,
                        )
                    else:
                        answer = run_compared(
                            bench,
                            system,
                            workers=workers,
                            tasks=args.tasks,
                            timeout=args.timeout,
                        )
                except Exception as err:  # one failed run must not hide the others
                    print(f"  FAILED: {err}", flush=True)
                    rows[(system, label, workers, conc)]["extra"]["failed"] = True
                    continue
                row = rows[(system, label, workers, conc)]
                row["rate"].add(answer["tasks"] / answer["total_s"])
                row["total"].add(answer["total_s"])
                row["enqueue"].add(answer["enqueue_s"])
                row["extra"].update(
                    redis=answer.get("redis_per_task"),
                    pg=answer.get("pg_per_task"),
                    dupes=answer.get("duplicates"),
                )
                print(
                    f"  {answer['tasks'] / answer['total_s']:.0f} tasks/s "
                    f"(enqueue {answer['enqueue_s']:.2f} s, "
                    f"total {answer['total_s']:.2f} s)" + producer_cpu(answer),
                    flush=True,
                )
    report(args, plan, rows)


def producer_cpu(answer: dict[str, Any]) -> str:
    """The producer's time on a CPU and waiting for one, while it enqueued."""
    if "producer_sched_s" not in answer:
        return ""
    on_cpu, waited = answer["producer_sched_s"]
    return (
        f"; producer on CPU {on_cpu:.2f} s, waiting for a CPU {waited:.2f} s; "
        f"CPU s by program {answer.get('cpu_s')}"
    )


NAMES = {
    "ours": "retrying_consumers runworker",
    "drain": "ours, workers alone (drain)",
    "stock": "stock Channels Worker",
    "celery": "Celery 5 prefork",
    "dramatiq": "Dramatiq",
}


def name(key: tuple[str, str, int, int]) -> str:
    return NAMES[key[0]] + (f" --concurrency {key[3]}" if key[3] else "")


def report(args: argparse.Namespace, plan: list[Any], rows: dict[Any, Any]) -> None:
    table = []
    for key in plan:
        _, label, workers, _ = key
        row = rows[key]
        redis = row["extra"].get("redis") or {}
        pg = row["extra"].get("pg")
        table.append(
            [
                name(key),
                label,
                str(workers),
                row["rate"].cell("{:.0f}")
                + (" (FAILED runs)" if row["extra"].get("failed") else ""),
                row["total"].cell("{:.2f}"),
                row["enqueue"].cell("{:.2f}"),
                f"{sum(redis.values()):.1f}" if redis else "-",
                f"{pg['xact_commit']:.1f}" if pg else "-",
                str(
                    row["extra"].get("dupes")
                    if row["extra"].get("dupes") is not None
                    else "-"
                ),
            ]
        )
    print_table(
        f"Throughput: {args.tasks} no-op tasks, enqueue until all done; "
        f"median [min-max] of {args.runs} run(s)",
        [
            "system",
            "store",
            "procs",
            "tasks/s",
            "total s",
            "enqueue s",
            "redis cmds/task",
            "pg xacts/task",
            "dupes (last run)",
        ],
        table,
    )
    median = {key: rows[key]["rate"].median for key in plan}

    def best(system: str, workers: int | None = None) -> list[Any]:
        return [
            k for k in plan if k[0] == system and (workers is None or k[2] == workers)
        ]

    ratios = []
    for ours in [k for k in plan if k[0] in ("ours", "drain")]:
        kind = "ours" if ours[0] == "ours" else "ours drain (diagnostic)"
        cells = [f"{kind} {ours[1]} x{ours[2]} c={ours[3]}"]
        others = [
            (best("stock", ours[2]) or [None])[0],
            (best("celery") or [None])[0],
            (best("dramatiq") or [None])[0],
        ]
        for other in others:
            cells.append(ratio(median[ours], median[other]) if other else "-")
        ratios.append(cells)
    if ratios:
        print_table(
            "Ratios of median throughput (ours / other; same invocation)",
            ["ours", "/ stock Channels (same procs)", "/ Celery", "/ Dramatiq"],
            ratios,
        )
    detail = [
        [
            name(k),
            k[1],
            str(k[2]),
            ", ".join(
                f"{c} {n}" for c, n in (rows[k]["extra"].get("redis") or {}).items()
            ),
        ]
        for k in plan
    ]
    print_table(
        "Redis commands per task (last run; bench bookkeeping excluded)",
        ["system", "store", "procs", "commands"],
        detail,
    )
    pg_rows = [
        [
            k[1],
            str(k[2]),
            str(k[3]),
            *(f"{rows[k]['extra']['pg'][c]:.1f}" for c in PG_COLUMNS),
        ]
        for k in plan
        if rows[k]["extra"].get("pg")
    ]
    if pg_rows:
        print_table(
            "PostgreSQL work per task (last run; pg_stat_database deltas over the "
            "measured window: enqueue and workers, the bench's polling taken out)",
            ["store", "procs", "concurrency", *PG_COLUMNS],
            pg_rows,
        )


# Rows fetched and returned are left out: the bench's own polling (COUNTs over
# the task table) dominates them.
PG_COLUMNS = ["xact_commit", "tup_inserted", "tup_updated"]


if __name__ == "__main__":
    main()
