"""Steady-state load with probes: event -> window lag and event -> websocket alert latency.

A background producer sends the simulator's floor at `rate_per_s`, paced by count, each event stamped with
ts = its send time (ms). Interleaved with it:
- lag probes: an `agent.state` event for a fresh agent `lagprobe-N` with ts = the send time; a poller asks
  Redis (`ZMSCORE <ns>agents`, every ~2 ms) when each probe's agent appears, i.e. when its batch was applied;
- alert probes: five connected 900 s calls for a fresh agent `alertprobe-N` sent in one go (AHT 900 s over
  5 samples breaches the 15m AHT rule); the time from the fifth send to the `{"type":"alert","status":"firing"}`
  message on a websocket connected to the monitor's /ws.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import orjson
import redis.asyncio as aioredis
import websockets
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from callpulse.settings import Settings
from callpulse.simulate import generate
from streams.store import namespace


@dataclass
class LoadResult:
    """What a load run measured; latencies in seconds."""

    duration_s: float = 0.0
    background_sent: int = 0
    background_rate_per_s: float = 0.0
    background_acked: int = 0
    send_errors: int = 0
    lag_s: list[float] = field(default_factory=list)
    ack_s: list[float] = field(default_factory=list)  # probe send -> broker acknowledged it
    visible_s: list[float] = field(default_factory=list)  # probe send -> a plain consumer tailing the topic got it
    backlog_at_end: int = 0  # events sent but not yet applied when the measured window closed
    lag_lost: int = 0
    alert_s: list[float] = field(default_factory=list)
    alert_eval_s: list[float] = field(default_factory=list)  # probe sent -> the alert's ts (the worker's evaluation)
    alert_lost: int = 0
    ws_messages: int = 0
    ws_snapshot_bytes: int = 0
    poll_interval_s: float = 0.0


def _key(event: dict[str, Any]) -> bytes | None:
    key = event.get("agent_id") or event.get("ticket_id")
    return key.encode() if isinstance(key, str) else None


async def run_load(
    settings: Settings,
    *,
    ws_url: str,
    rate_per_s: float,
    agents: int,
    warmup_s: float,
    duration_s: float,
    lag_probes: int,
    alert_interval_s: float,
    seed: int = 11,
    drain_s: float = 10.0,
) -> LoadResult:
    """Run the load for warmup_s + duration_s (probes only after the warm-up) and return the measurements."""
    res = LoadResult()
    topics = {"calls": settings.topic("calls"), "tickets": settings.topic("tickets")}
    ns = namespace(settings.topic_prefix)
    bg = AIOKafkaProducer(bootstrap_servers=settings.kafka, acks=1, linger_ms=5)
    # Probes go through their own producer without linger, so they are not held back for a batch of ours.
    probe = AIOKafkaProducer(bootstrap_servers=settings.kafka, acks=1, linger_ms=0)
    poll_client = aioredis.Redis.from_url(settings.redis_url)
    await bg.start()
    await probe.start()
    stop_bg = asyncio.Event()
    stop_probes = asyncio.Event()
    lag_pending: dict[str, int] = {}
    probe_sent: dict[bytes, float] = {}
    tail_ready = asyncio.Event()
    alert_pending: dict[str, float] = {}
    polls = [0, 0.0]
    tasks: list[asyncio.Task[Any]] = []

    def on_acked(fut: asyncio.Future[Any]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            res.send_errors += 1
        else:
            res.background_acked += 1

    async def background() -> None:
        # The simulator gives the events' content; they are paced by count and stamped with their send time.
        events: Iterator[tuple[str, dict[str, Any]]] = generate(
            agents=agents, rate=rate_per_s, duration_s=math.inf, seed=seed, start_s=time.time()
        )
        t0 = time.monotonic()
        while not stop_bg.is_set():
            due = int((time.monotonic() - t0) * rate_per_s)
            ts = round(time.time(), 3)
            while res.background_sent < due:
                topic, event = next(events)
                event["ts"] = ts
                fut = await bg.send(topics[topic], orjson.dumps(event), key=_key(event))
                fut.add_done_callback(on_acked)
                res.background_sent += 1
            await asyncio.sleep(0.005)

    async def lag_probe_sender(run_tag: str) -> None:
        interval = duration_s / max(1, lag_probes)
        for i in range(lag_probes):
            if stop_probes.is_set():
                break
            agent = f"lagprobe-{run_tag}-{i}"
            ts_ms = int(time.time() * 1000)
            ev = {"event_id": f"{agent}-ev", "type": "agent.state", "ts": ts_ms / 1000, "agent_id": agent}
            ev["state"] = "available"
            lag_pending[agent] = ts_ms
            probe_sent[agent.encode()] = ts_ms / 1000
            fut = await probe.send(topics["calls"], orjson.dumps(ev), key=agent.encode())
            fut.add_done_callback(lambda f, t=ts_ms / 1000: res.ack_s.append(time.time() - t))
            await asyncio.sleep(interval)

    async def tail() -> None:
        # A plain consumer at the end of `calls`: when a probe becomes readable from the broker.
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka, group_id=None, enable_auto_commit=False, fetch_max_wait_ms=10
        )
        await consumer.start()
        try:
            parts = [TopicPartition(topics["calls"], p) for p in consumer.partitions_for_topic(topics["calls"]) or ()]
            consumer.assign(parts)
            await consumer.seek_to_end(*parts)
            tail_ready.set()
            while True:
                got = await consumer.getmany(timeout_ms=50)
                at = time.time()
                for messages in got.values():
                    for m in messages:
                        if m.key is not None and m.key in probe_sent:
                            res.visible_s.append(at - probe_sent.pop(m.key))
        finally:
            await consumer.stop()

    async def lag_poller() -> None:
        key = f"{ns}agents"
        while True:
            if lag_pending:
                names = list(lag_pending)
                t_a = time.time()
                scores = await poll_client.zmscore(key, names)
                t_b = time.time()
                polls[0] += 1
                polls[1] += t_b - t_a
                seen_at = (t_a + t_b) / 2
                for name, score in zip(names, scores, strict=True):
                    if score is not None:
                        res.lag_s.append(max(0.0, seen_at - lag_pending.pop(name) / 1000))
            await asyncio.sleep(0.002)

    async def alert_probe_sender(run_tag: str) -> None:
        i = 0
        while not stop_probes.is_set():
            agent = f"alertprobe-{run_tag}-{i}"
            i += 1
            now = time.time()
            for k in range(5):
                ev = {
                    "event_id": f"{agent}-{k}",
                    "type": "call.ended",
                    "ts": round(now, 3),
                    "call_id": f"{agent}-call-{k}",
                    "agent_id": agent,
                    "direction": "inbound",
                    "connected": True,
                    "talk_seconds": 900,
                    "hold_seconds": 0,
                    "wrap_seconds": 0,
                    "resolved": True,
                }
                await probe.send(topics["calls"], orjson.dumps(ev), key=agent.encode())
            alert_pending[agent] = time.time()  # the fifth send has just been handed to the producer
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop_probes.wait(), alert_interval_s)

    async def ws_listener(ws: Any) -> None:
        async for message in ws:
            at = time.time()
            res.ws_messages += 1
            if not isinstance(message, str):
                continue
            if not message.startswith('{"type":"alert"'):
                res.ws_snapshot_bytes += len(message)
                continue
            msg = orjson.loads(message)
            agent = msg.get("agent_id")
            if msg.get("status") == "firing" and msg.get("kpi") == "aht_seconds" and agent in alert_pending:
                sent = alert_pending.pop(agent)
                res.alert_s.append(at - sent)
                res.alert_eval_s.append(datetime.fromisoformat(msg["ts"]).timestamp() - sent)

    async def applied() -> int:
        raw = cast("dict[bytes, bytes]", await poll_client.hgetall(f"{ns}stats"))  # bytes: not decode_responses
        total = 0
        for k, v in raw.items():
            topic, _, result = k.decode().partition("|")
            if topic in ("calls", "tickets") and result in ("ok", "late", "invalid"):
                total += int(v)
        return total

    run_tag = f"{int(time.time()) % 100000}"
    try:
        async with websockets.connect(ws_url, max_size=None, open_timeout=30) as ws:
            tasks.append(asyncio.create_task(ws_listener(ws)))
            tasks.append(asyncio.create_task(background()))
            tasks.append(asyncio.create_task(lag_poller()))
            tasks.append(asyncio.create_task(tail()))
            await asyncio.wait_for(tail_ready.wait(), 30)
            await asyncio.sleep(warmup_s)
            started = time.monotonic()
            sent_at_start = res.background_sent
            probes = [
                asyncio.create_task(lag_probe_sender(run_tag)),
                asyncio.create_task(alert_probe_sender(run_tag)),
            ]
            await asyncio.sleep(duration_s)
            stop_probes.set()
            await asyncio.gather(*probes)
            res.duration_s = time.monotonic() - started
            sent_in_window = res.background_sent - sent_at_start
            res.backlog_at_end = res.background_sent - await applied()
            deadline = time.monotonic() + drain_s
            while (lag_pending or alert_pending) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            res.background_rate_per_s = sent_in_window / res.duration_s
            stop_bg.set()
    finally:
        stop_bg.set()
        stop_probes.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await bg.stop()
        await probe.stop()
        await poll_client.aclose()
    res.lag_lost = len(lag_pending)
    res.alert_lost = len(alert_pending)
    res.poll_interval_s = (polls[1] / polls[0] if polls[0] else 0.0) + 0.002
    return res
