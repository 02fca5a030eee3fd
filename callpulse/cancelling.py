"""A cancel stays a cancel: the guard every loop that logs errors and goes on needs.

redis-py (and other libraries) may turn a cancel that lands inside a command into an error of their own. A loop
that logs errors and carries on would then never end: its task is marked cancelling (`Task.cancelling()`), but
nothing raises `CancelledError` again until someone cancels a second time. Call `reraise_if_cancelling()` in the
handler that swallows the error.

`together` runs steps alongside each other and leaves none running behind it, whatever happens.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any


def reraise_if_cancelling() -> None:
    """Raise `CancelledError` when the running task was asked to stop (a cancel some library swallowed)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def together(*steps: Awaitable[Any]) -> list[Any]:
    """The steps' results, run alongside each other. The first error is raised as it is (not as a group), and the
    steps still running are cancelled and have ended when it is: none goes on changing state behind the caller."""
    tasks = [asyncio.ensure_future(step) for step in steps]
    try:
        return await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
