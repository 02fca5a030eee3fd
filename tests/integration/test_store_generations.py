"""The root cause of wrong windows after a Redis wipe, pinned down on a real redis-server.

Customer and ticket states carry a version for the optimistic check. After a wipe the rebuild writes them again
from version 1, so a plan made from states cached before the wipe can meet a rebuilt state with the same version
and pass, although its contents differ: its state deltas are then computed against the wrong old state. The store's
generation (a new one per rebuild) makes such a plan fail, whatever the versions say.
"""

from __future__ import annotations

import orjson
import redis.asyncio as aioredis

from callpulse.embedded import EmbeddedRedis
from callpulse.settings import Settings
from monitor import snapshot
from streams.processor import Processor, Record
from streams.store import WindowStore, namespace
from tests import reference
from tests.integration.test_core_property import NOW, NOW_MS, Dead

SETTINGS = Settings(topic_prefix="gen-")
CREATED = {"event_id": "t1", "type": "ticket.created", "ts": NOW - 600, "ticket_id": "k1"}
REPLY = {"event_id": "t2", "type": "ticket.replied", "ts": NOW - 300, "ticket_id": "k1", "agent_id": "a1"}
# Another ticket, so a response counted twice moves the mean: (300 + 100) / 2, not (300 + 300 + 100) / 3.
OTHER = [
    {"event_id": "t3", "type": "ticket.created", "ts": NOW - 200, "ticket_id": "k2"},
    {"event_id": "t4", "type": "ticket.replied", "ts": NOW - 100, "ticket_id": "k2", "agent_id": "a1"},
]


def _record(event: dict, offset: int) -> Record:
    return Record("tickets", 0, offset, None, orjson.dumps(event))


def _processor(store: WindowStore, *, live: bool) -> Processor:
    processor = Processor(SETTINGS, store, Dead(), clock=lambda: NOW)
    processor.check_epoch = live
    return processor


async def _response_kpis(store: WindowStore) -> dict:
    rows = await store.read_windows(NOW_MS, SETTINGS.windows_s)
    return snapshot.build(rows, window_s=3600, settings=SETTINGS, now_ms=NOW_MS)["floor"]["kpis"]


async def test_a_plan_from_states_cached_before_a_wipe_is_refused_after_the_rebuild(
    redis_server: EmbeddedRedis,
) -> None:
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        store = WindowStore(client, namespace(SETTINGS.topic_prefix))
        await store.mark_initialised()
        live = _processor(store, live=True)
        await live.process([_record(CREATED, 0)])  # k1 is cached at version 1: created, no reply
        await client.flushall()  # Redis loses its data
        rebuild = _processor(store, live=False)
        replayed = [CREATED, REPLY, *OTHER]
        await rebuild.process([_record(e, i) for i, e in enumerate(replayed)])  # one batch: k1 at version 1 again
        await store.mark_initialised()
        outcome = await live.process([_record(REPLY, 1)])  # the live consumer reads the reply now
        floor = await _response_kpis(store)
    finally:
        await client.aclose()
    want = reference.expected(replayed, NOW, 3600, repeat_s=SETTINGS.repeat_window_s)["floor"]
    assert (outcome.applied, outcome.duplicates) == (0, 0)  # the same record as the replay's: counts nothing
    assert floor["response_seconds"] == want["response_seconds"] == 200.0


async def test_apply_refuses_a_plan_of_another_generation(redis_server: EmbeddedRedis) -> None:
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        store = WindowStore(client, namespace(SETTINGS.topic_prefix))
        first = await store.mark_initialised()
        await client.flushall()
        second = await store.mark_initialised()
        result = await store.apply({"ns": store.ns, "ce": True, "gen": first, "g": [], "s": [], "u": [], "m": [],
                                    "a": [], "te": 60, "tb": 60, "tm": 60, "pa": 0, "lb": []})  # fmt: skip
    finally:
        await client.aclose()
    assert first != second
    assert (result.ok, result.stale, result.generation) == (False, True, second)
