"""Before pytest-timeout fails a test, print where every unfinished asyncio task waits.

pytest-timeout's own dump shows threads, and a hung async test shows only its event loop in `select`; the task that
never ends, and what it awaits, are what one needs to read. A timer thread prints each pending task's stack to
stderr shortly before the timeout (pytest shows it under the failed test's captured stderr).
"""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
from typing import Any

AHEAD_S = 5.0  # how long before the timeout the tasks are printed


def pending_tasks() -> list[asyncio.Task[Any]]:
    """Every asyncio task not yet done, in any loop (found through the garbage collector: this runs off the loop)."""
    return [o for o in gc.get_objects() if isinstance(o, asyncio.Task) and not o.done()]


def print_pending_tasks(nodeid: str) -> None:
    """Print each pending task's name and stack, innermost await last."""
    tasks = pending_tasks()
    head = f"{len(tasks)} pending asyncio tasks of {nodeid}, {AHEAD_S:.0f} s before its timeout"
    print(f"\n--- {head} ---", file=sys.stderr)
    for task in tasks:
        print(f"task {task.get_name()}: {task.get_coro()!r}", file=sys.stderr)
        try:
            task.print_stack(limit=30, file=sys.stderr)
        except Exception as exc:  # a frame changed under us (the loop runs on): say so and go on
            print(f"  (stack not readable: {exc!r})", file=sys.stderr)
    sys.stderr.flush()


def arm(nodeid: str, timeout_s: float) -> threading.Timer | None:
    """Start the timer for a test with `timeout_s` (None when the timeout is too short to print ahead of it)."""
    if timeout_s <= 2 * AHEAD_S:
        return None
    timer = threading.Timer(timeout_s - AHEAD_S, print_pending_tasks, (nodeid,))
    timer.daemon = True
    timer.name = f"hangdump {nodeid}"
    timer.start()
    return timer
