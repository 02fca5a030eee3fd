"""The Redis window store: one atomic, idempotent write per batch, pipelined window reads.

The key layout is in `streams.keys` (the scripts, in `streams.lua`, build the same names from the namespace). Team and
floor totals are not stored: readers keep them as they read agents (monitor/floorcache.py for the monitor,
streams/schedule.FloorView for the alert sweep), one agent's old sums out and new ones in.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from typing import Any, cast

import orjson
import redis.asyncio as aioredis

from streams import keys, states
from streams import windows as w
from streams.batch import LAG_BOUNDS_S
from streams.lua import APPLY_LUA, LEASE_LUA, MARK_REBUILT_LUA, READ_LUA

READ_AGENTS_PER_CALL = 100
READ_META = 4  # team, state, since, reason ahead of each row's sums


def read_head(
    ns: str,
    now_ms: int,
    windows_s: Sequence[int],
    tz: tzinfo,
    fields: Sequence[str],
    *,
    quiet: Sequence[str] = (),
) -> list[Any]:
    """The read scripts' leading arguments (READ_LUA, READ_GROUPS_LUA): chunk range, window bounds in buckets,
    field names and the fields `firsts` ignores."""
    bounds = [w.window_buckets(now_ms, ws, tz) for ws in windows_s]
    lo = min(b_lo for b_lo, _ in bounds)
    hi = now_ms // w.BUCKET_MS
    head: list[Any] = [ns, w.chunk_of(lo + 1), w.chunk_of(hi), w.CHUNK_BUCKETS, len(bounds)]
    for b_lo, b_hi in bounds:
        head += [b_lo, b_hi]
    return [*head, len(fields), *fields, len(quiet), *quiet]


def new_generation() -> str:
    """A fresh store generation: when it started, and a random part so two rebuilds never share one."""
    return f"{int(time.time())}-{uuid.uuid4().hex[:12]}"


@dataclass
class ApplyResult:
    """What one apply did: ok=False means state conflicts (key -> current raw value), nothing written."""

    ok: bool
    empty: bool = False
    stale: bool = False  # the plan's generation is not the store's: `generation` is the store's
    generation: str | None = None
    applied: int = 0
    duplicates: int = 0
    conflicts: dict[str, str] = field(default_factory=dict)


@dataclass
class AgentWindows:
    """One agent as read from the store: team, state and counter sums per window (seconds -> sums)."""

    agent_id: str
    team: str | None
    state: str | None
    last_ts_ms: int
    sums: dict[int, w.Sums]
    since_ms: int | None = None  # when the current state began (its agent.state ts)
    reason: str | None = None  # the current state's reason
    # Per window, the first bucket in it holding a count (None: empty), or an earlier one: when the window next
    # changes by time alone (streams.schedule.next_change_ms).
    first_buckets: dict[int, int | None] = field(default_factory=dict)
    # Redis's time of the read (µs): the applies scored in `dirty` up to it are in these sums.
    read_us: int = field(default=0, compare=False)
    # Set by a reader that keeps rows between reads (monitor.floorcache): equal versions, equal written sums.
    version: int = field(default=0, compare=False)
    # The state history's tally (set by the floor cache, monitor/floorcache.py): time in state at any moment.
    tally: states.Tally | None = field(default=None, compare=False)


@dataclass
class TeamWindows:
    """One team: how many agents on the floor are in it now and its counter sums per window."""

    team: str
    agents: int
    sums: dict[int, w.Sums]
    # The counters alone (no time in state) when the reader keeps them: equal counters, equal KPIs not made of
    # time in state (the snapshot reuses those).
    counters: dict[int, w.Sums] | None = None


def namespace(topic_prefix: str) -> str:
    """The Redis key namespace for a deployment (topic prefixes keep test runs apart)."""
    return f"cp:{topic_prefix}"


class WindowStore:
    """Redis access for windows, states and stats; the client is injected."""

    def __init__(self, client: aioredis.Redis, ns: str, *, tz: tzinfo = UTC) -> None:
        self.client = client
        self.ns = ns
        self.tz = tz  # where the calendar window `today` starts
        self._apply = client.register_script(APPLY_LUA)
        self._read = client.register_script(READ_LUA)
        self._mark_rebuilt = client.register_script(MARK_REBUILT_LUA)
        self._lease = client.register_script(LEASE_LUA)

    async def read_states(self, keys: Iterable[str]) -> dict[str, bytes | None]:
        """Current raw values of customer/ticket state keys (None when absent)."""
        keys = list(keys)
        if not keys:
            return {}
        # redis-py types replies as bytes | str (it cannot see decode_responses); our clients never decode
        values = cast("list[bytes | None]", await self.client.mget(keys))
        return dict(zip(keys, values, strict=True))

    async def apply(self, payload: Mapping[str, Any]) -> ApplyResult:
        """Run one batch's plan atomically; on a state conflict nothing is written."""
        raw = await self._apply(args=[orjson.dumps(payload)])
        if int(raw[0]) == 2:
            return ApplyResult(False, empty=True)
        if int(raw[0]) == 3:
            return ApplyResult(False, stale=True, generation=_s(raw[1]))
        if int(raw[0]) == 0:
            flat = raw[1]
            conflicts = {_s(flat[i]): _s(flat[i + 1]) for i in range(0, len(flat), 2)}
            return ApplyResult(False, conflicts=conflicts)
        return ApplyResult(True, applied=int(raw[1]), duplicates=int(raw[2]))

    async def active_agents(self, now_ms: int, window_s: float) -> dict[str, int]:
        """Agents with an event in the `window_s` seconds ending now -> their latest event ts."""
        rows = await self.client.zrangebyscore(
            f"{self.ns}agents", f"({now_ms - round(window_s * 1000)}", "+inf", withscores=True
        )
        return {_s(agent): int(score) for agent, score in cast("list[tuple[bytes, float]]", rows)}  # withscores pairs

    async def read_windows(
        self,
        now_ms: int,
        windows_s: Sequence[int],
        only: Iterable[str] | None = None,
        *,
        open_state: bool = True,
        quiet_states: bool = False,
    ) -> list[AgentWindows]:
        """Active agents (all, or those in `only`) with counter sums for each window, in one pipelined read.

        The current state's time up to now is in the sums unless `open_state` is False (what is written only).
        With `quiet_states`, its `first_buckets` ignore time in state (for a reader that does not use it: it needs
        no re-read when time in state slides out of a window).
        """
        bounds = [w.window_buckets(now_ms, ws, self.tz) for ws in windows_s]
        if only is None:
            agents = await self.active_agents(now_ms, max(w.span_s(now_ms, ws, self.tz) for ws in windows_s))
        else:
            names = sorted(set(only))
            scores = await self.client.zmscore(f"{self.ns}agents", names) if names else []
            agents = {a: int(sc) for a, sc in zip(names, scores, strict=True) if sc is not None}
        if not agents:
            return []
        # Summed inside Redis: whole chunks by their totals, the chunks a window edge cuts by their buckets.
        quiet = tuple(states.STATE_FIELDS.values()) if quiet_states else ()
        head = self._read_head(now_ms, windows_s, quiet=quiet)
        names = sorted(agents)
        groups = [names[i : i + READ_AGENTS_PER_CALL] for i in range(0, len(names), READ_AGENTS_PER_CALL)]
        # One script call per group, in turn: each blocks Redis only briefly, so batch writes slip in between.
        results = [await self._read(args=[*head, *group]) for group in groups]
        out: list[AgentWindows] = []
        nf = len(w.FIELDS)
        nwin = len(bounds)
        step = READ_META + nwin * nf + nwin
        for group, reply in zip(groups, results, strict=True):
            read_us, flat = int(reply[0]), reply[1:]
            for k, agent in enumerate(group):
                row = flat[k * step : (k + 1) * step]
                team, state, since, reason = _s(row[0]), _s(row[1]), _s(row[2]), _s(row[3])
                since_ms = int(since) if since else None
                sums = {
                    ws: dict(zip(w.FIELDS, row[READ_META + j * nf : READ_META + (j + 1) * nf], strict=True))
                    for j, ws in enumerate(windows_s)
                }
                for ws, window_sums in sums.items() if open_state else ():  # the current state counts up to now
                    states.add_open(window_sums, state or None, since_ms, now_ms, ws, self.tz)
                tail = row[READ_META + nwin * nf :]
                firsts = {ws: (None if int(tail[j]) < 0 else int(tail[j])) for j, ws in enumerate(windows_s)}
                out.append(
                    AgentWindows(
                        agent,
                        team or None,
                        state or None,
                        agents[agent],
                        sums,
                        since_ms,
                        reason or None,
                        firsts,
                        read_us,
                    )
                )
        return out

    async def changed_since(self, since_us: int) -> tuple[dict[str, int], int]:
        """Agents an apply touched at or after `since_us` (Redis time, µs) with the time of it, and Redis's time now.

        The time is read first: an apply that runs in between is listed now and again next time, never missed.
        """
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.time()
            pipe.zrangebyscore(keys.dirty_key(self.ns), since_us, "+inf", withscores=True)
            (secs, micros), rows = await pipe.execute()
        return {_s(a): int(score) for a, score in rows}, int(secs) * 1_000_000 + int(micros)

    async def redis_time_us(self) -> int:
        """Redis's clock now (µs): the clock `dirty` is scored by."""
        secs, micros = await self.client.time()
        return int(secs) * 1_000_000 + int(micros)

    async def hold_lease(self, name: str, token: str, ttl_ms: int) -> bool:
        """Take the lease `name` if free, or renew it if `token` holds it; False while another holds it."""
        return bool(await self._lease(keys=[f"{self.ns}{name}"], args=[token, ttl_ms]))

    def _read_head(self, now_ms: int, windows_s: Sequence[int], *, quiet: Sequence[str] = ()) -> list[Any]:
        return read_head(self.ns, now_ms, windows_s, self.tz, w.FIELDS, quiet=quiet)

    async def initialised(self) -> bool:
        """Whether this Redis holds callpulse data (False after a restart without persistence)."""
        return bool(await self.client.exists(f"{self.ns}epoch"))

    async def generation(self) -> str | None:
        """The store's generation (a new one after each rebuild), None while it holds no complete windows."""
        raw = await self.client.get(f"{self.ns}epoch")
        return None if raw is None else _s(raw)

    async def mark_initialised(self) -> str:
        """Record that the windows are complete up to what Kafka retained; return the store's generation."""
        await self.client.set(f"{self.ns}epoch", new_generation(), nx=True)
        return await self.generation() or ""

    async def mark_rebuilt(self, lock: str, token: str) -> bool:
        """Open a new generation if the rebuild holding `lock` with `token` still owns it.

        False when Redis lost its data again during the rebuild (the lock went with it): what was replayed
        before that is gone, and the rebuild must start over.
        """
        return bool(await self._mark_rebuilt(keys=[lock, f"{self.ns}epoch"], args=[token, new_generation()]))

    @property
    def replay_lock_key(self) -> str:
        """The key a rebuild holds while it replays Kafka into this store."""
        return f"{self.ns}replay-lock"

    async def rebuilding(self) -> bool:
        """Whether a rebuild holds the replay lock now."""
        return bool(await self.client.exists(self.replay_lock_key))

    async def agent_team(self, agent: str) -> str | None:
        """The agent's current team (of its latest event naming one), or None."""
        team = await self.client.hget(keys.meta_key(self.ns, agent), "team")
        return _s(team) or None if team is not None else None

    async def notified_hooks(self, alert_id: str) -> set[int]:
        """Indexes of the webhooks already told of this alert episode."""
        return {int(_s(i)) for i in await self.client.smembers(keys.notified_key(self.ns, alert_id))}

    async def note_notified(self, alert_id: str, hooks: Iterable[int], *, keep_s: int) -> None:
        """Remember for `keep_s` seconds that these webhooks were told of the episode."""
        hooks = list(hooks)
        if hooks:
            key = keys.notified_key(self.ns, alert_id)
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.sadd(key, *hooks)
                pipe.expire(key, keep_s)
                await pipe.execute()

    async def forget_notified(self, alert_id: str) -> None:
        """The episode is over: drop its record of told webhooks."""
        await self.client.delete(keys.notified_key(self.ns, alert_id))

    async def read_stats(self) -> dict[str, int]:
        """Event counters (topic|result) and the raw lag histogram fields."""
        raw = await self.client.hgetall(f"{self.ns}stats")
        return {_s(k): int(v) for k, v in raw.items()}


async def remove_namespace(client: aioredis.Redis, ns: str) -> int:
    """Delete every key under a namespace (the demo's own, on exit); returns how many were deleted."""
    removed = 0
    batch: list[bytes] = []
    async for key in client.scan_iter(match=f"{ns}*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            removed += await client.unlink(*batch)
            batch = []
    if batch:
        removed += await client.unlink(*batch)
    return removed


def lag_histogram(stats: Mapping[str, int]) -> tuple[list[tuple[str, int]], int, float]:
    """Cumulative (le, count) buckets, count and sum in seconds of the event-lag histogram."""
    buckets: list[tuple[str, int]] = []
    running = 0
    for i, bound in enumerate(LAG_BOUNDS_S, start=1):
        running += stats.get(f"lag|{i}", 0)
        buckets.append((repr(bound), running))
    running += stats.get(f"lag|{len(LAG_BOUNDS_S) + 1}", 0)
    buckets.append(("+Inf", running))
    return buckets, stats.get("lag|n", 0), stats.get("lag|sum_ms", 0) / 1000


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
