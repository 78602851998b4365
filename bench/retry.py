"""Scenario 2, the retry path: tasks that fail twice, then succeed, 50 ms apart.

    python -m bench.retry --runs 3 --tasks 1000

Each ``bench.flaky`` task raises on attempts 1 and 2 (policy
``RetryPolicy(max_attempts=5, wait=wait_fixed(0.05))``) and succeeds on attempt 3.
Reports the time from the first ``enqueue`` until all succeeded, and each retry's
lateness: the stored start of attempt k+1 minus the next-attempt time stored
with attempt k (both read from the store's attempt records).
"""

from __future__ import annotations

import argparse

from bench.common import Bench, Series, common_args, percentile, print_table
from bench.systems import each_run_of_ours


def main() -> None:
    parser = common_args(
        argparse.ArgumentParser(prog="bench.retry", description=__doc__), tasks=1000
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="enqueue this many tasks per second (default 0: all at once)",
    )
    args = parser.parse_args()
    table = []
    with Bench(capacity=args.capacity, keep=args.keep_logs) as bench:
        for db in bench.databases(args.postgres, sqlite=not args.no_sqlite):
            total, p50, p99, worst = Series(), Series(), Series(), Series()
            retries = 0
            for answer in each_run_of_ours(
                bench,
                db,
                args,
                [
                    "--type",
                    "bench.flaky",
                    "--payload",
                    '{"fail_times": 2}',
                    "--collect",
                    "retry",
                    "--rate",
                    str(args.rate),
                ],
            ):
                late = answer["lateness_ms"]
                retries = len(late)
                total.add(answer["total_s"])
                p50.add(percentile(late, 50))
                p99.add(percentile(late, 99))
                worst.add(max(late) if late else None)
                print(
                    f"  total {answer['total_s']:.2f} s, lateness p50 "
                    f"{percentile(late, 50):.1f} ms p99 {percentile(late, 99):.1f} ms",
                    flush=True,
                )
            table.append(
                [
                    db.label,
                    str(args.workers),
                    total.cell("{:.2f}"),
                    p50.cell(),
                    p99.cell(),
                    worst.cell(),
                    str(retries),
                ]
            )
    print_table(
        f"Retry path: {args.tasks} tasks failing twice then succeeding, 50 ms backoff; "
        f"median [min-max] of {args.runs} run(s)",
        [
            "store",
            "workers",
            "all succeeded, s",
            "lateness p50 ms",
            "lateness p99 ms",
            "lateness max ms",
            "retries (last run)",
        ],
        table,
    )


if __name__ == "__main__":
    main()
