"""Background loops (the monitor's floor cache refresh and read ahead, the worker's alert checks and sweep): errors
are logged and the loop goes on, but a cancel is never lost, even when a library turns it into an error of its
own (callpulse/cancelling.py)."""

from __future__ import annotations

import asyncio

import pytest
import redis.exceptions

from monitor.server import _logged
from streams.app import AlertChecks
from tests.helpers import stop_task


async def _fails_with(exc: BaseException) -> None:
    raise exc


async def _loses_its_cancel(started: asyncio.Event, *, raising: BaseException | None) -> int:
    """A step that loses a cancel landing inside it: raises `raising` instead (what redis-py may do inside a
    command), or with None returns as if nothing happened (a library catching CancelledError whole)."""
    started.set()
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        if raising is not None:
            raise raising from None
    return 1


async def _turns_cancel_into_connection_error(started: asyncio.Event) -> None:
    await _loses_its_cancel(started, raising=redis.exceptions.ConnectionError("Connection closed by server."))


async def _ends_on_one_cancel(task: asyncio.Task[None], what: str) -> None:
    """Cancel `task` once; it must end with CancelledError (a second cancel ends a loop that lost the first, so
    the test fails rather than hangs)."""
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=5)
    if not done:
        task.cancel()
    assert done, f"{what} went on after its cancel"
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_an_error_of_a_step_is_logged_and_the_loop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    await _logged("floor cache refresh", _fails_with(redis.exceptions.ResponseError("NOSCRIPT")))
    await _logged("floor cache refresh", _fails_with(ValueError("bad row")))
    assert [r.getMessage() for r in caplog.records] == [
        "floor cache refresh failed: Redis refused a read",
        "floor cache refresh failed",
    ]


async def test_a_cancel_a_library_turned_into_its_own_error_still_ends_the_loop() -> None:
    started = asyncio.Event()

    async def loop() -> None:
        await _logged("floor cache refresh", _turns_cancel_into_connection_error(started))
        for _ in range(3):  # steps that end at once: a loop that lost the cancel ends here, and the test fails
            await _logged("floor cache refresh", asyncio.sleep(0))

    task = asyncio.create_task(loop())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_cancel_a_step_swallowed_whole_still_ends_the_loop() -> None:
    started = asyncio.Event()

    async def loop() -> None:
        await _logged("floor cache refresh", _loses_its_cancel(started, raising=None))
        while True:  # a loop that lost the cancel sleeps on here, and the test fails
            await asyncio.Event().wait()

    task = asyncio.create_task(loop())
    await started.wait()
    await _ends_on_one_cancel(task, "the loop")


class _CheckThatLosesItsCancel:
    """An alert engine whose check is cancelled inside a Redis command that redis-py turns into its own error."""

    states_matter = False

    def __init__(self) -> None:
        self.started = asyncio.Event()

    async def check_agents(self, agents: set[str]) -> None:
        await _turns_cancel_into_connection_error(self.started)


async def test_the_workers_alert_checks_end_on_a_cancel_a_library_turned_into_its_own_error() -> None:
    engine = _CheckThatLosesItsCancel()
    checks = AlertChecks(engine)  # type: ignore[arg-type]
    task = asyncio.create_task(checks.run())
    checks.changed({"a1"})
    await engine.started.wait()
    await _ends_on_one_cancel(task, "the alert checks")


async def test_stopping_a_test_helper_loop_outlasts_a_cancel_it_swallowed_whole() -> None:
    """`tests.helpers.stop_task`, which the fault tests' background watches stop with. The committed-offset
    watch, stopped with one cancel and an unbounded await, kept fault row 4 waiting until pytest-timeout in CI: its
    loop logs errors and polls on, so a cancel lost on the way (turned into a library's error, or swallowed whole)
    left it running."""
    started = asyncio.Event()
    turns = 0

    async def watch() -> None:
        nonlocal turns
        while True:  # a poll that loses its first cancel, then polls on like the committed-offset watch
            turns += 1
            await _loses_its_cancel(started, raising=None) if turns == 1 else await asyncio.sleep(0.01)

    task = asyncio.create_task(watch())
    await started.wait()
    await stop_task(task, "the watch")
    assert task.cancelled() and turns > 1, "the first cancel was lost, and a later one ended the loop"
