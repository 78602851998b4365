"""Scenario 4, progress to the browser: one chatty task, N websocket clients.

    python -m bench.progress --runs 3 --clients 1,100,1000 --seconds 5

One daphne (``bench.app``) and one ``runworker``. A ``bench.progress`` task reports
progress ``--rate`` times a second for ``--seconds``, each report's message being
the wall-clock time it was made. ``--clients`` real websocket clients (the
``websockets`` library, in ``--client-procs`` processes), logged in as a staff
user through a Django session, subscribe to the task before it starts; each
``update`` frame's age is arrival time minus that report time.

Progress is coalesced twice on its way (PROGRESS_INTERVAL in the worker and
FLUSH_INTERVAL in the websocket consumer, 0.1 s each), so what arrives is about
10 updates a second per client, each carrying the latest report.
"""

from __future__ import annotations

import argparse
import json
import select
import subprocess
import uuid
from typing import Any

from bench.common import (
    PYTHON,
    Bench,
    Proc,
    Series,
    drive,
    percentile,
    print_table,
    raise_fd_limit,
    start_workers,
    stopping,
    wait_until,
)
from project.devrun import BASE_DIR
from retrying_consumers.testing.redis import free_port


def port_open(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def start_daphne(bench: Bench, env: dict[str, str]) -> tuple[Proc, int]:
    port = free_port()
    proc = Proc(
        "daphne",
        [
            PYTHON,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "bench.app:application",
        ],
        env,
        bench.logs,
    )
    wait_until(lambda: port_open(port) or not proc.alive(), 30, "daphne to listen", 0.1)
    if not proc.alive():
        raise RuntimeError(f"daphne exited:\n{proc.output()}")
    return proc, port


def read_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise TimeoutError("a client process did not answer in time")
    return proc.stdout.readline().decode()


def one_run(
    bench: Bench, env: dict[str, str], port: int, clients: int, args: argparse.Namespace
) -> dict[str, Any]:
    go_key = f"bench:go:{uuid.uuid4().hex}"
    setup = drive(
        env,
        [
            "progress-setup",
            "--go-key",
            go_key,
            "--rate",
            str(args.rate),
            "--seconds",
            str(args.seconds),
        ],
        120,
        bench.logs,
    )
    procs_n = max(1, min(args.client_procs, clients))
    shares = [clients // procs_n + (i < clients % procs_n) for i in range(procs_n)]
    children = [
        subprocess.Popen(
            [
                PYTHON,
                "-m",
                "bench.ws_clients",
                "--url",
                f"ws://127.0.0.1:{port}/ws/tasks/",
                "--origin",
                f"http://127.0.0.1:{port}",
                "--session",
                setup["session"],
                "--task",
                setup["task_id"],
                "--clients",
                str(share),
                "--deadline",
                str(args.seconds + 60),
            ],
            cwd=BASE_DIR,
            env=env,
            stdout=subprocess.PIPE,
            stderr=(bench.logs / "ws_clients.log").open("ab"),
        )
        for share in shares
    ]
    try:
        connected = 0
        for child in children:
            line = read_line(child, 180)
            if not line.startswith("READY"):
                raise RuntimeError(f"client process said {line!r}")
            connected += int(line.split()[1])
        bench.redis_client().set(go_key, "1")
        answers = []
        for child in children:
            out, _ = child.communicate(timeout=args.seconds + 120)
            answers.append(json.loads(out.decode().strip().splitlines()[-1]))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    latencies = [v for a in answers for v in a["latencies_ms"]]
    updates = [u for a in answers for u in a["updates"]]
    return {
        "connected": connected,
        "latencies": latencies,
        "updates_per_s": (sum(updates) / len(updates) / args.seconds)
        if updates
        else 0.0,
        "errors": [e for a in answers for e in a["errors"]][:3],
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.progress", description=__doc__)
    parser.add_argument("--clients", default="1,100,1000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=float, default=100.0, help="reports per second")
    parser.add_argument(
        "--seconds", type=float, default=5.0, help="reporting time per run"
    )
    parser.add_argument(
        "--client-procs",
        type=int,
        default=2,
        help="processes the websocket clients are spread over",
    )
    parser.add_argument(
        "--postgres", metavar="URL", help="use PostgreSQL instead of SQLite"
    )
    parser.add_argument("--capacity", type=int, default=100)
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args()
    limit = raise_fd_limit()
    counts = [int(c) for c in args.clients.split(",")]
    table = []
    short: list[str] = []  # runs where not every client connected
    with Bench(capacity=args.capacity, keep=args.keep_logs) as bench:
        db = bench.postgres(args.postgres) if args.postgres else bench.sqlite()
        # All clients are one user: the per-user socket cap (a defence against
        # one account's flood, not what this measures) is raised to hold them.
        env = bench.env(db, REALTIME_MAX_SOCKETS_PER_USER=str(max(counts)))
        drive(env, ["reset"], 120, bench.logs)
        daphne, port = start_daphne(bench, env)
        workers = start_workers(bench, env, 1, 4, "progress")
        with stopping([*workers, daphne]):
            for clients in counts:
                p50, p99, worst, rate = Series(), Series(), Series(), Series()
                connected = 0
                for run in range(1, args.runs + 1):
                    print(f"run {run}/{args.runs}: {clients} client(s) ...", flush=True)
                    answer = one_run(bench, env, port, clients, args)
                    lat = answer["latencies"]
                    connected = answer["connected"]
                    if connected < clients:
                        short.append(f"{connected} of {clients} (run {run})")
                    p50.add(percentile(lat, 50))
                    p99.add(percentile(lat, 99))
                    worst.add(max(lat) if lat else None)
                    rate.add(answer["updates_per_s"])
                    print(
                        f"  connected {connected}, {len(lat)} samples, p50 "
                        f"{percentile(lat, 50):.1f} ms, "
                        f"p99 {percentile(lat, 99):.1f} ms"
                        + (f", errors {answer['errors']}" if answer["errors"] else ""),
                        flush=True,
                    )
                table.append(
                    [
                        str(clients),
                        str(connected),
                        rate.cell(),
                        p50.cell(),
                        p99.cell(),
                        worst.cell(),
                    ]
                )
    print_table(
        f"Progress: {args.rate:g} reports/s for {args.seconds:g} s, one daphne, "
        f"{db.label}; age of the progress at arrival; median [min-max] of "
        f"{args.runs} run(s); open-file limit {limit}",
        [
            "clients",
            "connected (last run)",
            "updates/s per client",
            "p50 ms",
            "p99 ms",
            "max ms",
        ],
        table,
    )
    if short:
        raise SystemExit(f"not every client connected: {', '.join(short)}")


if __name__ == "__main__":
    main()
