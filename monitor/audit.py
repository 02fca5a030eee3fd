"""The audit log: every acknowledgement and snooze, who did it and when, kept 30 days (contract 2e).

Entries live in one Redis sorted set per deployment (`<namespace>audit`), scored by time in ms, so every monitor
sees the same log and old entries are trimmed by score. `record` adds its commands to the caller's transaction,
so an ack or a snooze and its audit entry are written together or not at all.
"""

from __future__ import annotations

import itertools
import os
import time
from typing import Any, Literal, NotRequired, TypedDict

import orjson
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from monitor.auth import Role
from streams.alerts import iso

RETENTION_S = 30 * 86400
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_NAME_CHARS = 64
_ACTIONS = itertools.count()  # this process's actions, in order (record's nonce)


class AuditEntry(TypedDict):
    """One line of `GET /api/audit`: `id` for an ack; `kpi` with `agent_id` or `team` and `minutes` for a snooze."""

    ts: str
    action: Literal["ack", "snooze"]
    by: str
    role: Role
    name: str | None
    id: NotRequired[str]
    kpi: NotRequired[str]
    agent_id: NotRequired[str]
    team: NotRequired[str]
    minutes: NotRequired[float]
    until: NotRequired[str]


def clean_name(value: Any) -> str | None:
    """The name a page sent with an ack or a snooze (`by`), trimmed; None when it sent none."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"by is {value!r}, must be the name of the person acting")
    name = " ".join(value.split())
    if len(name) > MAX_NAME_CHARS or not name.isprintable():
        raise ValueError(f"by is {value[:80]!r}, must be a printable name of at most {MAX_NAME_CHARS} characters")
    return name or None


def by_label(role: Role, name: str | None) -> str:
    """`by` as the log shows it: the role, then the name when the page sent one ('supervisor:Dana')."""
    return f"{role}:{name}" if name else role


def key(ns: str) -> str:
    """The sorted set holding a deployment's audit log."""
    return f"{ns}audit"


def new_entry(action: Literal["ack", "snooze"], role: Role, name: str | None, now_ms: int) -> AuditEntry:
    """An entry with the fields every action has; the caller adds what was acted on."""
    return {"ts": iso(now_ms), "action": action, "by": by_label(role, name), "role": role, "name": name}


def record(pipe: Pipeline, ns: str, entry: AuditEntry, now_ms: int) -> None:
    """Queue the commands that append `entry` and drop entries older than 30 days on `pipe`."""
    # Entries of the same millisecond have the same score, and a sorted set orders those by member: the member
    # starts with a nonce that grows with each action (time in ns, then this process's count), so they list in
    # the order they were taken; its random tail keeps two monitors' identical actions apart.
    nonce = f"{time.time_ns():020d}{next(_ACTIONS):012d}{os.urandom(3).hex()}"
    member = orjson.dumps({"n": nonce, "e": entry})
    pipe.zadd(key(ns), {member: now_ms})
    pipe.zremrangebyscore(key(ns), "-inf", now_ms - RETENTION_S * 1000)
    pipe.expire(key(ns), RETENTION_S)


def parse_limit(values: list[str] | None) -> int:
    """`?limit=` of `GET /api/audit`: 1 to 1000, default 100; ValueError names the rule."""
    if not values:
        return DEFAULT_LIMIT
    text = values[0]
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise ValueError(f"limit is {text!r}, must be a whole number from 1 to {MAX_LIMIT}")
    return int(text)


async def latest(client: aioredis.Redis, ns: str, limit: int, *, now_ms: int | None = None) -> list[AuditEntry]:
    """The newest `limit` entries of the last 30 days, newest first."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    raw = await client.zrevrangebyscore(key(ns), "+inf", now_ms - RETENTION_S * 1000, start=0, num=limit)
    return [orjson.loads(member)["e"] for member in raw if isinstance(member, bytes)]
