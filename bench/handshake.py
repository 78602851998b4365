"""Handshakes under another user's crowd of sockets.

    python -m bench.handshake --runs 3 --crowd 500 --samples 20

One daphne (``bench.app``) on SQLite. User "crowd" opens ``--crowd`` websockets
(one client process) and subscribes each to ``"mine"`` (``--tasks`` tasks of
theirs in the store, so their stats cost real queries). With the crowd open and
settled, user "newcomer" opens ``--samples`` websockets one after another; each
sample is the time from the TCP connect to the ``hello`` frame. daphne's CPU
share over the sampling window is measured too. The per-user socket cap is
raised to ``--cap`` (default: the crowd's size) so that the crowd is all open:
the cap is a second line of defence, not what this measures.

The helper modes ``setup`` and ``crowd`` are run as child processes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import websockets

HERE = Path(__file__).resolve()


# Child: users, sessions and tasks ----------------------------------------------


def setup(tasks: int) -> dict[str, Any]:
    """Two users with sessions; ``tasks`` queued tasks owned by "crowd"."""
    import django

    django.setup()
    from django.contrib.auth import (
        BACKEND_SESSION_KEY,
        HASH_SESSION_KEY,
        SESSION_KEY,
        get_user_model,
    )
    from django.contrib.sessions.backends.db import SessionStore

    from retrying_consumers.storage import store

    sessions = {}
    for name in ("crowd", "newcomer"):
        user = get_user_model().objects.create_user(name, password=None)
        session = SessionStore()
        session[SESSION_KEY] = str(user.pk)
        session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        session.create()
        sessions[name] = session.session_key
        if name == "crowd":
            for n in range(tasks):
                store.create_task(
                    channel="bench",
                    type="bench.noop",
                    payload={"n": n},
                    ring_timeout=30,
                    owner_id=user.pk,
                )
    return sessions


# Child: the crowd ---------------------------------------------------------------


async def open_socket(args: argparse.Namespace, session: str) -> Any:
    return await websockets.connect(
        args.url,
        additional_headers={"Cookie": f"sessionid={session}", "Origin": args.origin},
        ping_interval=None,
        open_timeout=120,
        max_queue=None,
    )


async def crowd_member(args: argparse.Namespace, gate: asyncio.Semaphore) -> Any:
    async with gate:
        ws = await open_socket(args, args.session)
        await ws.recv()  # hello
        await ws.send(json.dumps({"action": "subscribe", "scope": "mine"}))
        while json.loads(await ws.recv()).get("type") != "snapshot":
            pass
        return ws


async def drain(ws: Any) -> None:
    try:
        async for _ in ws:
            pass
    except websockets.ConnectionClosed:
        return


async def crowd(args: argparse.Namespace) -> None:
    gate = asyncio.Semaphore(50)
    results = await asyncio.gather(
        *(crowd_member(args, gate) for _ in range(args.clients)),
        return_exceptions=True,
    )
    sockets = [r for r in results if not isinstance(r, BaseException)]
    errors = [repr(r) for r in results if isinstance(r, BaseException)]
    print(json.dumps({"ready": len(sockets), "errors": errors[:3]}), flush=True)
    # Read every frame (stats keep coming) until the parent stops us.
    await asyncio.gather(*(drain(ws) for ws in sockets))


# The bench ------------------------------------------------------------------------


async def sample_handshakes(
    url: str, origin: str, session: str, samples: int
) -> tuple[list[float], int]:
    """Seconds from connect to hello for ``samples`` handshakes in a row, and
    how many failed (daphne drops a handshake it cannot finish in 5 s)."""
    times, failed = [], 0
    for _ in range(samples):
        started = time.perf_counter()
        try:
            ws = await websockets.connect(
                url,
                additional_headers={"Cookie": f"sessionid={session}", "Origin": origin},
                ping_interval=None,
                open_timeout=60,
            )
            hello = json.loads(await ws.recv())
            assert hello["type"] == "hello", hello
        except (OSError, websockets.WebSocketException):
            failed += 1
        else:
            times.append(time.perf_counter() - started)
            await ws.close()
        await asyncio.sleep(0.2)
    return times, failed


def run_setup(env: dict[str, str], tasks: int) -> dict[str, str]:
    """Run the ``setup`` mode (this file as a script, so that the bench also
    runs against an older checkout on ``PYTHONPATH``)."""
    from bench.common import PYTHON
    from project.devrun import BASE_DIR

    result = subprocess.run(
        [PYTHON, str(HERE), "setup", "--tasks", str(tasks)],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    answer: dict[str, str] = json.loads(result.stdout.strip().splitlines()[-1])
    return answer


def one_run(
    args: argparse.Namespace, env: dict[str, str], port: int, sessions: dict[str, str]
) -> dict[str, Any]:
    import psutil  # type: ignore[import-untyped]

    from bench.common import PYTHON
    from project.devrun import BASE_DIR

    url, origin = f"ws://127.0.0.1:{port}/ws/tasks/", f"http://127.0.0.1:{port}"
    child = subprocess.Popen(
        [
            *(PYTHON, str(HERE), "crowd", "--url", url, "--origin", origin),
            *("--session", sessions["crowd"], "--clients", str(args.crowd)),
        ],
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert child.stdout is not None
        ready = json.loads(child.stdout.readline()) if args.crowd else {"ready": 0}
        time.sleep(args.settle)  # the crowd's stats loops are running now
        daphne = psutil.Process(args.daphne_pid)
        daphne.cpu_percent()
        times, failed = asyncio.run(
            sample_handshakes(url, origin, sessions["newcomer"], args.samples)
        )
        cpu = daphne.cpu_percent()
    finally:
        child.kill()
        child.wait()
    return {"crowd": ready, "times": times, "failed": failed, "cpu": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.handshake", description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--crowd", type=int, default=500)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--settle", type=float, default=5.0, help="seconds")
    parser.add_argument("--cap", type=int, help="sockets per user (default: crowd)")
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args()

    from bench.common import (
        Bench,
        Series,
        percentile,
        print_table,
        raise_fd_limit,
        stopping,
    )
    from bench.progress import start_daphne

    limit = raise_fd_limit()
    with Bench(capacity=100, keep=args.keep_logs) as bench:
        cap = str(args.cap or max(args.crowd, 1))
        env = bench.env(bench.sqlite(), REALTIME_MAX_SOCKETS_PER_USER=cap)
        sessions = run_setup(env, args.tasks)
        daphne, port = start_daphne(bench, env)
        args.daphne_pid = daphne.pid
        p50, p99, worst, cpu, failed = (Series() for _ in range(5))
        with stopping([daphne]):
            for run in range(1, args.runs + 1):
                answer = one_run(args, env, port, sessions)
                times = [t * 1000 for t in answer["times"]]
                p50.add(percentile(times, 50) if times else None)
                p99.add(percentile(times, 99) if times else None)
                worst.add(max(times, default=None))
                cpu.add(answer["cpu"])
                failed.add(answer["failed"])
                print(
                    f"run {run}/{args.runs}: crowd {answer['crowd']}, handshake "
                    f"p50 {percentile(times, 50):.0f} ms, "
                    f"max {max(times, default=float('nan')):.0f} ms, "
                    f"{answer['failed']} failed, daphne CPU {answer['cpu']:.0f}%",
                    flush=True,
                )
    print_table(
        f"Handshake of a new user while another user's {args.crowd} sockets are "
        f"subscribed to 'mine' ({args.tasks} tasks), one daphne, SQLite; "
        f"{args.samples} handshakes per run, median [min-max] of {args.runs} "
        f"run(s); open-file limit {limit}",
        ["crowd", "handshake p50 ms", "p99 ms", "max ms", "failed", "daphne CPU %"],
        [
            [
                str(args.crowd),
                *(p50.cell(), p99.cell(), worst.cell()),
                *(failed.cell("{:.0f}"), cpu.cell("{:.0f}")),
            ]
        ],
    )


def child_main() -> None:
    mode = sys.argv[1]
    parser = argparse.ArgumentParser(prog=f"bench.handshake {mode}")
    if mode == "setup":
        parser.add_argument("--tasks", type=int, default=300)
        args = parser.parse_args(sys.argv[2:])
        print(json.dumps(setup(args.tasks)), flush=True)
        return
    for name in ("--url", "--origin", "--session"):
        parser.add_argument(name, required=True)
    parser.add_argument("--clients", type=int, default=500)
    args = parser.parse_args(sys.argv[2:])
    from bench.common import raise_fd_limit

    raise_fd_limit()
    asyncio.run(crowd(args))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("setup", "crowd"):
        sys.path[0] = os.getcwd()  # the project, not bench/ itself
        child_main()
    else:
        main()
