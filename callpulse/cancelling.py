"""A cancel stays a cancel: the guard every loop that logs errors and goes on needs.

redis-py (and other libraries) may turn a cancel that lands inside a command into an error of their own. A loop
that logs errors and carries on would then never end: its task is marked cancelling (`Task.cancelling()`), but
nothing raises `CancelledError` again until someone cancels a second time. Call `reraise_if_cancelling()` in the
handler that swallows the error.
"""

from __future__ import annotations

import asyncio


def reraise_if_cancelling() -> None:
    """Raise `CancelledError` when the running task was asked to stop (a cancel some library swallowed)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
