"""One websocket floods the server with subscribe frames.

    python -m bench.flood --runs 3 --rate 1000 --seconds 10

One daphne (``bench.app``) on SQLite; user "crowd" has ``--tasks`` tasks. One
websocket of theirs sends ``{"action": "subscribe", "scope": "mine"}`` ``--rate``
times a second for ``--seconds``, reading whatever comes back meanwhile. The
figure is daphne's CPU time (user + system) from the first frame until daphne has
answered everything it is going to answer (no frame for 2 s), and how many
frames were answered with a snapshot.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import websockets

HERE = Path(__file__).resolve()
QUIET = 2.0  # seconds without a frame that end a run


async def flood(
    url: str, origin: str, session: str, rate: float, seconds: float
) -> dict[str, int]:
    ws = await websockets.connect(
        url,
        additional_headers={"Cookie": f"sessionid={session}", "Origin": origin},
        ping_interval=None,
        open_timeout=60,
        max_queue=None,
    )
    await ws.recv()  # hello
    counts: dict[str, int] = {}

    async def read() -> None:
        while True:
            try:
                frame = json.loads(await asyncio.wait_for(ws.recv(), QUIET))
            except (TimeoutError, websockets.ConnectionClosed):
                return
            kind = frame.get("code") or frame.get("type")
            counts[kind] = counts.get(kind, 0) + 1

    reader = asyncio.create_task(read())
    frame = json.dumps({"action": "subscribe", "scope": "mine"})
    step, sent, started = 0.01, 0, time.monotonic()
    while time.monotonic() - started < seconds:
        due = int((time.monotonic() - started) * rate) - sent
        for _ in range(due):
            await ws.send(frame)
        sent += due
        await asyncio.sleep(step)
    await reader
    await ws.close()
    return {"sent": sent, **counts}


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.flood", description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args()
    import psutil  # type: ignore[import-untyped]

    try:
        from bench.handshake import run_setup
    except ImportError:  # run as a file against an older checkout
        sys.path.insert(0, str(HERE.parent))
        from handshake import run_setup  # type: ignore[import-not-found,no-redef]

    from bench.common import Bench, Series, print_table, stopping
    from bench.progress import start_daphne

    with Bench(capacity=100, keep=args.keep_logs) as bench:
        env = bench.env(bench.sqlite())
        sessions = run_setup(env, args.tasks)
        daphne, port = start_daphne(bench, env)
        url, origin = f"ws://127.0.0.1:{port}/ws/tasks/", f"http://127.0.0.1:{port}"
        cpu, answered = Series(), Series()
        with stopping([daphne]):
            proc = psutil.Process(daphne.pid)
            for run in range(1, args.runs + 1):
                before = proc.cpu_times()
                counts: dict[str, Any] = asyncio.run(
                    flood(url, origin, sessions["crowd"], args.rate, args.seconds)
                )
                after = proc.cpu_times()
                used = (after.user - before.user) + (after.system - before.system)
                cpu.add(used)
                answered.add(counts.get("snapshot", 0))
                print(f"run {run}/{args.runs}: {counts}, daphne CPU {used:.1f} s")
    print_table(
        f"One websocket sends {args.rate:g} subscribe frames/s for "
        f"{args.seconds:g} s, one daphne, SQLite; median [min-max] of "
        f"{args.runs} run(s)",
        ["frames sent", "answered with a snapshot", "daphne CPU s"],
        [[f"{args.rate * args.seconds:.0f}", answered.cell("{:.0f}"), cpu.cell()]],
    )


if __name__ == "__main__":
    main()
