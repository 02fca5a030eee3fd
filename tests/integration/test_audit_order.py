"""The audit log lists actions newest first, also those taken in the same millisecond (monitor/audit.py)."""

from __future__ import annotations

import redis.asyncio as aioredis

from callpulse.embedded import EmbeddedRedis
from monitor import audit

NOW_MS = 1_767_225_600_000


async def test_actions_of_the_same_millisecond_list_newest_first(redis_server: EmbeddedRedis) -> None:
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        for n in range(50):  # one millisecond for all: only the members can order them
            entry = audit.new_entry("ack", "supervisor", "Dana", NOW_MS)
            entry["id"] = f"al{n}"
            async with client.pipeline(transaction=True) as pipe:
                audit.record(pipe, "cp:t.", entry, NOW_MS)
                await pipe.execute()
        listed = await audit.latest(client, "cp:t.", 50, now_ms=NOW_MS)
    finally:
        await client.aclose()
    assert [e["id"] for e in listed] == [f"al{n}" for n in reversed(range(50))]
