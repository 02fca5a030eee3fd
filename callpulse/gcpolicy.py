"""Garbage collection for a process that holds a large, long-lived heap (the monitor's floor cache).

CPython's full collection walks every tracked object. At 10,000 agents the floor cache holds about 300,000, a
full collection takes 250-450 ms, and the allocations of refreshes and replies set one off every few seconds
(measured in the 10,000-agent bench: 10 in 25 s, 4.4 s in all, each one a pause of every request in flight).

So `keep()` freezes what is alive every `freeze_s` (gc.freeze: automatic collections leave it out, and it costs
nothing), and every `full_s` unfreezes everything, collects it once and freezes again: a cycle that became
garbage while frozen is freed at the next full collection, a minute late at most, never leaked. Objects that
are not in a cycle are freed by reference counting at once, frozen or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Iterator

FREEZE_S = 1.0
FULL_S = 60.0
_keeping = False  # whether keep() runs in this process (then `paused` freezes what its block leaves alive)

log = logging.getLogger(__name__)


def collect_all() -> int:
    """Collect every generation, the frozen objects included, then freeze what is left; returns what was freed."""
    gc.unfreeze()
    freed = gc.collect()
    gc.freeze()
    return freed


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """No automatic collection inside the block. For synchronous work that makes many objects outside cycles (a
    snapshot's rows and entries: reference counting frees them): measured at 10,000 agents, the collections it
    set off took 40-120 ms of a 500 ms full-floor read. A cycle made inside is collected after it, as usual.

    While `keep()` runs, what is alive at the end is frozen too, as `keep()` would within the second: else the
    first allocation after the block sets off the collections it held back, over all it made."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if _keeping:
            gc.freeze()
        if was_enabled:
            gc.enable()


async def keep(*, freeze_s: float = FREEZE_S, full_s: float = FULL_S) -> None:
    """Freeze the heap every `freeze_s` and collect all of it every `full_s`, until cancelled."""
    global _keeping
    last_full = time.monotonic()
    _keeping = True
    try:
        while True:
            await asyncio.sleep(freeze_s)
            if time.monotonic() - last_full < full_s:
                gc.freeze()
                continue
            t0 = time.perf_counter()
            freed = collect_all()
            last_full = time.monotonic()
            log.debug("full garbage collection: %d freed in %.0f ms", freed, (time.perf_counter() - t0) * 1000)
    finally:
        _keeping = False
        gc.unfreeze()  # what the process does next is collected as usual
