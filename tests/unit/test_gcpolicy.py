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


def test_no_automatic_collection_runs_inside_paused_and_collection_is_on_again_after_it() -> None:
    collections: list[str] = []

    def note(phase: str, info: dict[str, int]) -> None:
        collections.append(phase)

    gc.callbacks.append(note)
    try:
        with gcpolicy.paused():
            assert not gc.isenabled()
            for _ in range(50_000):  # far past gen 0's threshold: a collection would run if enabled
                Node()
        assert collections == []
    finally:
        gc.callbacks.remove(note)
    assert gc.isenabled()


def test_a_cycle_made_inside_paused_is_freed_by_a_collection_after_it() -> None:
    with gcpolicy.paused():
        ref = _cycle()
    gc.collect()
    assert ref() is None


async def test_while_keep_runs_paused_freezes_what_its_block_leaves_alive() -> None:
    task = asyncio.create_task(gcpolicy.keep(freeze_s=60, full_s=600))
    await asyncio.sleep(0)  # keep() has started
    try:
        gc.unfreeze()
        with gcpolicy.paused():
            kept = [Node() for _ in range(1000)]
        assert gc.get_freeze_count() >= len(kept)  # the next collection will not walk them
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    with gcpolicy.paused():  # keep() has ended: nothing is frozen by a block any more
        Node()
    assert gc.get_freeze_count() == 0
