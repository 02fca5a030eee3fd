"""The alert engine: evaluates rules on agent, team and floor windows and moves alert slots atomically.

Every worker runs it; a compare-and-set in Redis on each slot (episode id and severity) makes
sure a transition is published once, whichever worker sees it first.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, cast

import orjson

from callpulse import catalogue as cat
from callpulse.cancelling import reraise_if_cancelling
from callpulse.settings import LIVE_QUEUE_KPIS, LIVE_WINDOW, Rule, Settings
from streams import campaigns, queues
from streams import windows as w
from streams.alerts import Alert, alert_key, evaluate
from streams.queuestore import QueueStore
from streams.schedule import FloorView, next_change_ms
from streams.states import TIMED_KEYS
from streams.store import AgentWindows, WindowStore

log = logging.getLogger("callpulse.alerts")

_COARSE = campaigns.COARSE_WINDOWS_S

CAS_LUA = r"""
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local tag = ''
if cur then
  local c = cjson.decode(cur)
  tag = c.id .. '|' .. c.severity
end
if tag ~= ARGV[2] then return 0 end
if ARGV[3] == '' then redis.call('HDEL', KEYS[1], ARGV[1]) else redis.call('HSET', KEYS[1], ARGV[1], ARGV[3]) end
redis.call('PUBLISH', KEYS[2], ARGV[4])
redis.call('LPUSH', KEYS[3], ARGV[4])
redis.call('LTRIM', KEYS[3], 0, 199)
return 1
"""

Publish = Callable[[Alert], Awaitable[None]]
SLOTS_PER_CALL = 1000


class AlertEngine:
    """Evaluate thresholds and publish each alert transition exactly once across workers."""

    def __init__(
        self, settings: Settings, store: WindowStore, publish: Publish, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.settings = settings
        self.store = store
        self.publish = publish
        self.clock = clock
        self.ns = store.ns
        self._cas = store.client.register_script(CAS_LUA)
        self.rule_windows_s = sorted({settings.window_s(r.window) for r in self._all_rules()})
        # Whether a rule watches a KPI made of time in state (occupancy): then an agent's windows move with its
        # state intervals leaving them, and batches that only change time in state need a check.
        self.states_matter = any(r.kpi in TIMED_KEYS for r in self._all_rules())
        self.queue_store = QueueStore(store.client, store.ns, tz=store.tz)
        self.queue_windows_s = sorted(
            {settings.window_s(r.window) for r in self._queue_rules() if r.window != LIVE_WINDOW}
        )
        self._token = uuid.uuid4().hex  # this engine's name on the sweep lease
        self._view: FloorView | None = None  # the floor as this engine's last sweep left it
        self._plans: dict[str | None, list[tuple[str, Rule, int]]] = {}

    def _queue_rules(self) -> Iterable[Rule]:
        yield from self.settings.queue_rules.values()
        for rules in self.settings.queue_kpi_overrides.values():
            yield from rules.values()

    def _all_rules(self) -> Iterable[Any]:
        yield from self.settings.rules.values()
        for rules in self.settings.team_rules.values():
            yield from rules.values()

    async def current(self) -> dict[str, Alert]:
        """Live alert slots from the store."""
        # redis-py types replies as bytes | str (it cannot see decode_responses); our clients never decode
        raw = cast("dict[bytes, bytes]", await self.store.client.hgetall(f"{self.ns}alerts"))
        return {k.decode(): Alert.from_state(orjson.loads(v)) for k, v in raw.items()}

    async def slots(self, keys: Iterable[str]) -> dict[str, Alert]:
        """The live alert slots among `keys` (absent ones left out): the cost follows the subjects, not the floor.

        Asked for more slots than there are live alerts (a batch touching thousands of agents, each with a slot
        per rule), it reads the live alerts instead: whichever is smaller.
        """
        names = sorted(set(keys))
        out: dict[str, Alert] = {}
        if len(names) > await self.store.client.hlen(f"{self.ns}alerts"):
            wanted = set(names)
            return {k: a for k, a in (await self.current()).items() if k in wanted}
        for i in range(0, len(names), SLOTS_PER_CALL):
            part = names[i : i + SLOTS_PER_CALL]
            values = await self.store.client.hmget(f"{self.ns}alerts", part)
            out.update({k: Alert.from_state(orjson.loads(v)) for k, v in zip(part, values, strict=True) if v})
        return out

    def _rules_of(self, team: str | None) -> list[tuple[str, Rule, int]]:
        """(kpi, rule, window in seconds) of every rule that applies to a team's subjects, worked out once."""
        plan = self._plans.get(team)
        if plan is None:
            plan = []
            for kpi in sorted(self.settings.rules.keys() | self.settings.team_rules.get(team or "", {}).keys()):
                rule = self.settings.rule_for(kpi, team)
                if rule is not None:
                    plan.append((kpi, rule, self.settings.window_s(rule.window)))
            self._plans[team] = plan
        return plan

    def slot_keys(self, scope: str, subject: str | None, team: str | None) -> list[str]:
        """The alert slots the rules give one subject."""
        return [alert_key(scope, subject, kpi, rule.window) for kpi, rule, _ in self._rules_of(team)]

    async def check_agents(self, agents: Iterable[str]) -> int:
        """Evaluate agent-scope rules for agents a batch touched; returns transitions published."""
        agents = list(agents)
        if not agents or not self.rule_windows_s or not await self.store.initialised():
            return 0
        now_ms = int(self.clock() * 1000)
        rows = await self.store.read_windows(
            now_ms, self.rule_windows_s, only=agents, quiet_states=not self.states_matter
        )
        current = await self.slots(k for r in rows for k in self.slot_keys("agent", r.agent_id, r.team))
        n = 0
        for row in rows:
            n += await self._evaluate_subject("agent", row.agent_id, row.team, row.sums, current, now_ms)
        if self._view is not None:
            self._absorb(self._view, rows, now_ms)
        return n

    def _absorb(self, view: FloorView, rows: list[AgentWindows], now_ms: int) -> None:
        """Hand a check's reads to the sweeper's view: the next round need not read these agents again."""
        oldest_ms = now_ms - round(self._span_s(now_ms) * 1000)
        for row in rows:
            if row.last_ts_ms <= oldest_ms:
                if row.agent_id not in view.members:
                    view.note_absent(row.agent_id, row.read_us)  # an old event: nothing for the sweep to do
                continue  # a member leaving the floor: the sweep reads it again and resolves what it had
            teams = view.put(row.agent_id, row.team, row.sums, row.read_us)
            if teams is None:
                continue
            view.schedule.set(row.agent_id, self._next_change(row, now_ms))
            view.pending_teams |= teams
            view.floor_pending = True

    async def sweep(self) -> int:
        """Evaluate what can have changed since the last sweep, so alerts also resolve when only time passes.

        One worker sweeps (a lease in Redis it renews while it lives). Its first round, and the first after it
        took the lease over or the store was rebuilt, reads the whole floor; later rounds read only the agents
        an apply touched since and those whose windows moved (the schedule), then their teams and the floor.
        Nothing while the windows are rebuilt.
        """
        if not self.rule_windows_s:
            return 0
        generation = await self.store.generation()
        if generation is None:
            self._view = None
            return 0
        lease_ms = max(1000, int(self.settings.sweep_interval_s * 3000))
        if not await self.store.hold_lease("sweep-lease", self._token, lease_ms):
            self._view = None  # another worker sweeps: what this one knew goes stale
            return 0
        view = self._view
        if view is None or view.generation != generation:
            return await self._sweep_all(generation)
        try:
            return await self._sweep_changes(view)
        except BaseException:
            self._view = None  # what this round took off the schedule is lost: read the whole floor next time
            raise

    async def _sweep_all(self, generation: str) -> int:
        _, since_us = await self.store.changed_since(0)
        now_ms = int(self.clock() * 1000)
        rows = await self._read(now_ms, None)
        view = FloorView(self.rule_windows_s, generation, since_us)
        current = await self.current()
        n = 0
        seen: set[str] = set()
        for i, row in enumerate(rows):
            if i % 100 == 99:
                await asyncio.sleep(0)  # a big floor's sweep must not hold up the batches waiting on this loop
            n += await self._evaluate_subject("agent", row.agent_id, row.team, row.sums, current, now_ms, seen)
            view.put(row.agent_id, row.team, row.sums, row.read_us)
            view.schedule.set(row.agent_id, self._next_change(row, now_ms))
        for team, sums in view.teams.items():
            n += await self._evaluate_subject("team", team, team, sums, current, now_ms, seen)
        n += await self._evaluate_subject("floor", None, None, view.floor, current, now_ms, seen)
        n += await self._sweep_queues(current, now_ms, seen)
        n += await self._sweep_campaigns(current, now_ms, seen)
        for key, alert in current.items():
            if key not in seen:  # subject left the floor, or its rule is gone: the window emptied
                n += await self._transition(alert, alert.to_state() | {"status": "resolved", "ts_ms": now_ms}, now_ms)
        self._view = view
        return n

    async def _sweep_changes(self, view: FloorView) -> int:
        changed, since_us = await self.store.changed_since(view.since_us)
        now_ms = int(self.clock() * 1000)
        # Agents the per-batch check read after their apply are already in the view (and were evaluated).
        due = {a for a, applied_us in changed.items() if not view.fresh(a, applied_us)}
        due |= set(view.schedule.pop_due(now_ms))
        teams, floor_moved = set(view.pending_teams), view.floor_pending
        view.pending_teams, view.floor_pending = set(), False
        if not due and not teams and not floor_moved:
            view.since_us = since_us
            return await self._sweep_queue_side(now_ms)
        rows = await self._read(now_ms, due) if due else []
        oldest_ms = now_ms - round(self._span_s(now_ms) * 1000)
        present = {r.agent_id: r for r in rows if r.last_ts_ms > oldest_ms}
        gone = due - present.keys()
        keys: list[str] = []
        for agent in gone:
            member = view.members.get(agent)
            keys += self.slot_keys("agent", agent, member.team if member else None)
            teams |= view.remove(agent)
        for row in present.values():
            keys += self.slot_keys("agent", row.agent_id, row.team)
            teams |= view.put(row.agent_id, row.team, row.sums, row.read_us) or set()
            view.schedule.set(row.agent_id, self._next_change(row, now_ms))
        for team in teams:
            keys += self.slot_keys("team", team, team)
        keys += self.slot_keys("floor", None, None)
        current = await self.slots(keys)
        n = 0
        for i, row in enumerate(present.values()):
            if i % 100 == 99:
                await asyncio.sleep(0)
            n += await self._evaluate_subject("agent", row.agent_id, row.team, row.sums, current, now_ms)
        for team in sorted(teams):
            sums = view.teams.get(team)
            if sums is not None:
                n += await self._evaluate_subject("team", team, team, sums, current, now_ms)
        n += await self._evaluate_subject("floor", None, None, view.floor, current, now_ms)
        # Agents that left the floor and teams left empty: their windows hold nothing any more.
        empty = {("team", t) for t in teams if view.team_size(t) == 0} | {("agent", a) for a in gone}
        for alert in current.values():
            if (alert.scope, alert.subject) in empty:
                n += await self._transition(alert, alert.to_state() | {"status": "resolved", "ts_ms": now_ms}, now_ms)
        view.since_us = since_us
        return n + await self._sweep_queue_side(now_ms)

    def _queue_side(self, alert: Alert) -> bool:
        """Whether the queue or campaign sweep owns this alert (not the agents' view)."""
        if alert.scope in ("queue", "campaign"):
            return True
        if alert.scope != "floor":
            return False
        rule = self.settings.campaign_rules.get(alert.kpi)
        return alert.kpi in self.settings.queue_rules or (rule is not None and rule.window in _COARSE)

    async def _sweep_queue_side(self, now_ms: int) -> int:
        """Queue and campaign rules every round, whatever the agents did: live values (the longest wait) move
        with time alone. Their alerts whose queue or campaign left the floor resolve."""
        current = {k: a for k, a in (await self.current()).items() if self._queue_side(a)}
        seen: set[str] = set()
        n = await self._sweep_queues(current, now_ms, seen)
        n += await self._sweep_campaigns(current, now_ms, seen)
        for key, alert in current.items():
            if key not in seen:
                n += await self._transition(alert, alert.to_state() | {"status": "resolved", "ts_ms": now_ms}, now_ms)
        return n

    async def _read(self, now_ms: int, agents: Iterable[str] | None) -> list[AgentWindows]:
        """The rule windows of `agents` (None: the floor); time in state sliding out of a window reschedules an
        agent only when a rule watches it."""
        return await self.store.read_windows(
            now_ms, self.rule_windows_s, only=agents, quiet_states=not self.states_matter
        )

    def _span_s(self, now_ms: int) -> float:
        return max(w.span_s(now_ms, ws, self.store.tz) for ws in self.rule_windows_s)

    def _next_change(self, row: AgentWindows, now_ms: int) -> int:
        return next_change_ms(
            row.first_buckets,
            now_ms=now_ms,
            last_ts_ms=row.last_ts_ms,
            span_ms=round(self._span_s(now_ms) * 1000),
            tz=self.store.tz,
        )

    async def _evaluate_subject(
        self,
        scope: str,
        subject: str | None,
        team: str | None,
        sums: dict[int, w.Sums],
        current: dict[str, Alert],
        now_ms: int,
        seen: set[str] | None = None,
    ) -> int:
        n = 0
        for kpi, rule, window_s in self._rules_of(team):
            key = alert_key(scope, subject, kpi, rule.window)
            if seen is not None:
                seen.add(key)
            cur = current.get(key)
            nxt = evaluate(
                rule,
                scope=scope,
                subject=subject,
                value=cat.BY_KEY[kpi].result(sums[window_s]),
                samples=w.samples(sums[window_s], kpi),
                current=cur,
                now_ms=now_ms,
                hysteresis=self.settings.hysteresis,
            )
            if nxt is not None:
                n += await self._transition(cur, nxt.to_state(), now_ms)
        return n

    async def _sweep_queues(self, current: dict[str, Alert], now_ms: int, seen: set[str]) -> int:
        """Queue rules per queue (scope 'queue') and on the floor's totals (scope 'floor'); live values at now, so a
        caller waiting ever longer fires `longest_wait_seconds` with no new event."""
        settings = self.settings
        if not settings.queue_rules and not settings.queue_kpi_overrides:
            return 0
        rows = await self.queue_store.queues(
            now_ms,
            self.queue_windows_s,
            longest_s=settings.longest_window_s,
            max_wait_ms=lambda q: settings.queue(q).max_wait_s * 1000,
            lookback_ms=settings.max_wait_s * 1000,
        )
        n = 0
        for row in rows:
            kpis = settings.queue_rules.keys() | settings.queue_kpi_overrides.get(row.queue, {}).keys()
            n += await self._evaluate_queue("queue", row.queue, kpis, row.sums, row.waiting, row.oldest_entry_ms,
                                            current, now_ms, seen)  # fmt: skip
        totals = {ws: w.total(r.sums.get(ws, {}) for r in rows) for ws in self.queue_windows_s}
        entries = [r.oldest_entry_ms for r in rows if r.oldest_entry_ms is not None]
        waiting = sum(r.waiting for r in rows)
        oldest = min(entries) if entries else None
        n += await self._evaluate_queue(
            "floor", None, settings.queue_rules.keys(), totals, waiting, oldest, current, now_ms, seen
        )
        return n

    async def _evaluate_queue(
        self,
        scope: str,
        queue: str | None,
        kpis: Iterable[str],
        sums: dict[int, w.Sums],
        waiting: int,
        oldest_ms: int | None,
        current: dict[str, Alert],
        now_ms: int,
        seen: set[str],
    ) -> int:
        n = 0
        for kpi in sorted(kpis):
            rule = self.settings.queue_rule_for(kpi, queue)
            if rule is None:
                continue
            if kpi in LIVE_QUEUE_KPIS:
                longest = None if oldest_ms is None else max(0, now_ms - oldest_ms) / 1000
                value: float | None = waiting if kpi == "waiting" else longest
                samples = waiting
            else:
                window_sums = sums.get(self.settings.window_s(rule.window), {})
                value = queues.kpis_from_sums(window_sums)[kpi]
                samples = queues.samples(window_sums, kpi)
            n += await self._judge(rule, scope, queue, value, samples, current, now_ms, seen)
        return n

    async def _sweep_campaigns(self, current: dict[str, Alert], now_ms: int, seen: set[str]) -> int:
        """Campaign rules per campaign (scope 'campaign') and on the floor's totals (scope 'floor')."""
        rules = self.settings.campaign_rules
        if not rules:
            return 0
        rolling = sorted({self.settings.window_s(r.window) for r in rules.values() if r.window not in _COARSE})
        named, floor = await self.queue_store.campaigns(now_ms, rolling)
        n = 0
        for row in [*named, floor]:
            scope = "floor" if row.campaign == campaigns.FLOOR else "campaign"
            for kpi, rule in sorted(rules.items()):
                if scope == "floor" and rule.window not in _COARSE:
                    continue  # the floor's rolling windows are watched by the agent rules ([kpi.*])
                window_sums = row.sums.get(rule.window, {})
                value = campaigns.kpis_from_sums(window_sums)[kpi]
                subject = None if scope == "floor" else row.campaign
                n += await self._judge(rule, scope, subject, value, campaigns.samples(window_sums), current, now_ms,
                                       seen)  # fmt: skip
        return n

    async def _judge(
        self,
        rule: Rule,
        scope: str,
        subject: str | None,
        value: float | None,
        samples: int,
        current: dict[str, Alert],
        now_ms: int,
        seen: set[str],
    ) -> int:
        key = alert_key(scope, subject, rule.kpi, rule.window)
        seen.add(key)
        cur = current.get(key)
        nxt = evaluate(rule, scope=scope, subject=subject, value=value, samples=samples, current=cur, now_ms=now_ms,
                       hysteresis=self.settings.hysteresis)  # fmt: skip
        return 0 if nxt is None else await self._transition(cur, nxt.to_state(), now_ms)

    async def _transition(self, cur: Alert | None, new_state: dict[str, Any], now_ms: int) -> int:
        new = Alert.from_state(new_state)
        expected = f"{cur.id}|{cur.severity}" if cur else ""
        stored = "" if new.status == "resolved" else orjson.dumps(new.to_state()).decode()
        message = orjson.dumps(new.to_message()).decode()
        won = await self._cas(
            keys=[f"{self.ns}alerts", f"{self.ns}alert-feed", f"{self.ns}alert-log"],
            args=[new.key, expected, stored, message],
        )
        if not int(won):
            return 0
        log.info("alert %s %s %s %s=%s (threshold %s)", new.status, new.severity, new.key, new.kpi, new.value,
                 new.threshold)  # fmt: skip
        try:
            await self.publish(new)
        except Exception:
            reraise_if_cancelling()
            log.exception("could not publish alert %s to the alerts topic", new.id)
        return 1
