"""Websocket clients for the progress scenario: ``python -m bench.ws_clients``.

Opens ``--clients`` connections to ``/ws/tasks/`` with the bench user's session,
subscribes each to one task, prints ``READY <connected>`` and then records, for
every progress report that reaches it, how old the report is on arrival: arrival
time minus the wall-clock time the handler wrote into the progress message
(coalescing means most reports never arrive; those that do are the samples).
Ends when the task is final (or at ``--deadline``) and prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from typing import Any

import websockets

from bench.common import raise_fd_limit

FINAL = {"succeeded", "dead", "cancelled"}


async def connect(args: argparse.Namespace, gate: asyncio.Semaphore) -> Any:
    async with gate:
        ws = await websockets.connect(
            args.url,
            additional_headers={
                "Cookie": f"sessionid={args.session}",
                "Origin": args.origin,
            },
            ping_interval=None,
            open_timeout=60,
        )
        hello = json.loads(await ws.recv())
        if hello.get("type") != "hello":
            raise RuntimeError(f"no hello: {hello}")
        await ws.send(
            json.dumps({"action": "subscribe", "tasks": [args.task], "id": 1})
        )
        while True:
            frame = json.loads(await ws.recv())
            if frame.get("type") == "snapshot":
                return ws
            if frame.get("type") == "error":
                raise RuntimeError(f"subscribe refused: {frame}")


async def listen(ws: Any, deadline: float, latencies: list[float]) -> int:
    updates = 0
    seen = ""
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return updates
            frame = json.loads(await asyncio.wait_for(ws.recv(), left))
            arrived = time.time()
            if frame.get("type") != "update":
                continue
            updates += 1
            final = False
            for task in frame["tasks"]:
                message = task["progress"]["message"]
                # A sample is a report's first arrival; frames with no report
                # (the attempt starting) or an old one (the final state) are not.
                if message != seen:
                    seen = message
                    with contextlib.suppress(TypeError, ValueError):
                        latencies.append((arrived - float(message)) * 1000)
                final = final or task["status"] in FINAL
            if final:
                return updates
    except (TimeoutError, websockets.ConnectionClosed):
        return updates
    finally:
        await ws.close()


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    gate = asyncio.Semaphore(50)  # handshakes at once
    results = await asyncio.gather(
        *(connect(args, gate) for _ in range(args.clients)), return_exceptions=True
    )
    sockets = [r for r in results if not isinstance(r, BaseException)]
    errors = [repr(r) for r in results if isinstance(r, BaseException)]
    print(f"READY {len(sockets)}", flush=True)
    latencies: list[float] = []
    deadline = time.monotonic() + args.deadline
    updates = await asyncio.gather(*(listen(ws, deadline, latencies) for ws in sockets))
    return {
        "connected": len(sockets),
        "errors": errors[:3],
        "updates": list(updates),
        "latencies_ms": latencies,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.ws_clients")
    parser.add_argument("--url", required=True)
    parser.add_argument("--origin", required=True)
    parser.add_argument("--session", required=True)
    parser.add_argument("--task", required=True)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--deadline", type=float, default=120)
    args = parser.parse_args()
    raise_fd_limit()
    answer = asyncio.run(main_async(args))
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
