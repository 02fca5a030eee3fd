"""The heap policy of long-running processes: frozen objects are left out of collections, never leaked."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from callpulse import gcpolicy


class Node:
    """An object that can be part of a reference cycle (only the cycle collector frees it)."""

    def __init__(self) -> None:
        self.other: Node | None = None


def _cycle() -> weakref.ref[Node]:
    """A two-node cycle no one else refers to, alive until the cycle collector frees it; its weak reference."""
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()


def test_a_frozen_cycle_is_left_out_of_collections() -> None:
    gc.collect()
    ref = _cycle()
    gc.freeze()
    gc.collect()
    assert ref() is not None


def test_a_cycle_that_became_garbage_while_frozen_is_freed_by_the_next_full_collection() -> None:
    ref = _cycle()
    gc.freeze()
    gc.collect()
    assert ref() is not None
    gcpolicy.collect_all()
    assert ref() is None
    assert gc.get_freeze_count() > 0  # what is left stays frozen


async def test_keep_frees_cycles_on_its_full_collections() -> None:
    task = asyncio.create_task(gcpolicy.keep(freeze_s=0.01, full_s=0.05))
    try:
        ref = _cycle()
        await asyncio.sleep(0.02)  # one freeze at least: the cycle is frozen
        for _ in range(200):
            if ref() is None:
                break
            await asyncio.sleep(0.01)
        assert ref() is None
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert gc.get_freeze_count() == 0  # cancelled: the process's heap is collected as usual again
