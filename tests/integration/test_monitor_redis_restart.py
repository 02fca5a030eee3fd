"""The monitor's Redis client survives a Redis restart: no read fails for a connection the restart closed.

After `redis-server` is killed and started again, every pooled connection is dead and redis-py finds out only when
it uses one. A snapshot sends its reads alongside each other on several pooled connections; each must answer from
the new server, not raise "Connection closed by server." (which the monitor turns into a 503).
"""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from callpulse.embedded import EmbeddedRedis
from callpulse.settings import Settings
from monitor.server import redis_client

pytestmark = pytest.mark.integration
CONCURRENT_READS = 20  # more than one connection each, as a snapshot's reads and several wallboards make


async def _concurrent_reads(client: aioredis.Redis) -> list[object]:
    return list(await asyncio.gather(*(client.get(f"k{i}") for i in range(CONCURRENT_READS))))


async def test_concurrent_reads_after_redis_restart_all_answer(redis_server: EmbeddedRedis) -> None:
    client = redis_client(Settings(redis_url=redis_server.url))
    try:
        await client.set("k0", "before")
        assert (await _concurrent_reads(client))[0] == b"before"
        assert len(client.connection_pool._available_connections) > 1  # several connections to lose
        redis_server.kill()
        redis_server.start()  # same port, empty: no data was saved
        assert await _concurrent_reads(client) == [None] * CONCURRENT_READS
    finally:
        await client.aclose()


async def test_a_write_after_redis_restart_lands_once(redis_server: EmbeddedRedis) -> None:
    client = redis_client(Settings(redis_url=redis_server.url))
    try:
        await client.ping()
        redis_server.kill()
        redis_server.start()
        assert await client.sadd("acked", "alert-1") == 1
        assert await client.smembers("acked") == {b"alert-1"}
    finally:
        await client.aclose()
