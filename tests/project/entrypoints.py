"""Running the project's real entry points as child processes, and reading them."""

from __future__ import annotations

import os
import subprocess
import sys

from project.devrun import BASE_DIR


def child_env(**env: str) -> dict[str, str]:
    """This process's environment changed by ``env``; an empty value removes."""
    full_env = dict(os.environ)
    for key, value in env.items():
        if value:
            full_env[key] = value
        else:
            full_env.pop(key, None)
    return full_env


def run(
    args: list[str], timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``python args...`` in the project folder and wait for it."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=BASE_DIR,
        env=child_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], words: str) -> None:
    """The process said ``error: ...words...`` on one line and exited with 2."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert words in lines[0]
