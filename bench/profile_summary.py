"""Summarise py-spy's collapsed stacks: ``python -m bench.profile_summary FILE``.

Prints the share of samples spent inside (inclusive) and directly in (self) the
busiest functions, and inside a few groups that matter for the hot path: the
database, the channel layer, thread hops, logging.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

GROUPS = {
    "database (django.db, sqlite3, psycopg)": ("django/db/", "sqlite3", "psycopg"),
    "open/close DB connections": (
        "connect (django/db/backends/base/base.py",
        "close (django/db/backends/base/base.py",
        "close_old_connections",
    ),
    "channel layer (channels_redis, redis)": ("channels_redis/", "redis/"),
    "group_send": ("group_send (channels_redis",),
    "asgiref sync<->async hops": ("asgiref/sync.py",),
    "retrying_consumers": ("retrying_consumers/",),
    "msgpack / json": ("msgpack", "json/"),
    "logging": ("logging/",),
}


def frames(stack: str) -> list[str]:
    return stack.split(";")


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.profile_summary")
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    groups: Counter[str] = Counter()
    total = 0
    for path in args.files:
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack:
                continue
            n = int(count)
            total += n
            chain = frames(stack)
            for frame in set(chain):
                inclusive[frame] += n
            own[chain[-1]] += n
            for name, needles in GROUPS.items():
                if any(needle in stack for needle in needles):
                    groups[name] += n
    print(f"{total} samples (active threads, idle excluded)\n")
    print("groups (inclusive):")
    for name, n in groups.most_common():
        print(f"  {100 * n / total:5.1f}%  {name}")
    print("\ninclusive:")
    for frame, n in inclusive.most_common(args.top):
        print(f"  {100 * n / total:5.1f}%  {frame}")
    print("\nself:")
    for frame, n in own.most_common(args.top):
        print(f"  {100 * n / total:5.1f}%  {frame}")


if __name__ == "__main__":
    main()
