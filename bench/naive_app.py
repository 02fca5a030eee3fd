"""The naive baseline: a minimal Faust app that awaits one Redis call per event.

Run as a script (`python bench/naive_app.py`), configured by environment variables:
BENCH_KAFKA (bootstrap), BENCH_REDIS (URL), BENCH_TOPICS (comma-separated), BENCH_GROUP (app id and
consumer group), BENCH_COUNT_KEY (a Redis key where the running total of processed events is published
every 50 ms, so the benchmark can watch progress without adding a call per event), BENCH_DATADIR.
"""

from __future__ import annotations

import json
import os
from typing import Any

import faust
import redis.asyncio as aioredis


def build(env: dict[str, str]) -> faust.App:
    """Build the naive app: per event, json-decode and HINCRBY the agent's counter for the event type."""
    app = faust.App(
        env["BENCH_GROUP"],
        broker=[f"kafka://{h}" for h in env["BENCH_KAFKA"].split(",")],
        value_serializer="raw",
        key_serializer="raw",
        broker_session_timeout=6.0,
        broker_heartbeat_interval=1.5,
        consumer_auto_offset_reset="earliest",
        topic_allow_declare=False,
        topic_disable_leader=True,
        web_enabled=False,
        datadir=env.get("BENCH_DATADIR", "naive-data"),
    )
    client = aioredis.Redis.from_url(env["BENCH_REDIS"])
    count_key = env["BENCH_COUNT_KEY"]
    done = [0]

    async def consume(stream: Any) -> None:
        async for value in stream:
            event = json.loads(value)
            await client.hincrby(f"naive:{event.get('agent_id') or event.get('ticket_id')}", event["type"], 1)
            done[0] += 1

    for i, name in enumerate(env["BENCH_TOPICS"].split(",")):
        topic = app.topic(name, value_type=bytes, key_type=bytes)
        app.agent(topic, name=f"naive{i}")(consume)

    @app.timer(0.05)
    async def publish_count() -> None:
        await client.set(count_key, done[0])

    return app


def main() -> None:
    """Run the naive worker until SIGTERM."""
    app = build(dict(os.environ))
    worker = faust.Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
