"""The monitor: HTTP (wallboard, snapshot API, /metrics, /healthz) and the websocket feed on one port.

Reads Redis only. Alert transitions arrive on a Redis channel and go to every client at once;
snapshots are recomputed at most once a second when the windows changed (and every few
seconds anyway, since time passing moves rolling windows).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Coroutine, Mapping
from http import HTTPStatus
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import parse_qs, urlsplit

import orjson
import redis.asyncio as aioredis
import redis.exceptions
from prometheus_client import CollectorRegistry
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosedError
from websockets.http11 import Request, Response

from callpulse import gcpolicy
from callpulse.binding import bind_problem
from callpulse.cancelling import reraise_if_cancelling, together
from callpulse.connections import redis_options
from callpulse.exceptions import SettingsError
from callpulse.settings import KPI_KEYS, Settings, is_loopback
from monitor import audit, openapi, queueview, snapshot
from monitor.auth import REFUSAL, Role, may_act, role_of
from monitor.delta import FloorView
from monitor.feed import Client
from monitor.floorcache import FloorCache
from monitor.groupcache import GroupCache
from monitor.methods import ALLOWED_METHODS, MethodGuardConnection
from monitor.metrics import AgentCollector, KpiCollector
from streams.alerts import Alert, iso
from streams.queuestore import CampaignRow, QueueRow, QueueStore
from streams.store import WindowStore, namespace

log = logging.getLogger("callpulse.monitor")
_T = TypeVar("_T")

STATIC_DIR = Path(__file__).parent / "static"
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css"}
SNAPSHOT_MIN_INTERVAL_S = 1.0
SNAPSHOT_HEARTBEAT_S = 2.0
PUBSUB_BATCH = 500  # pub/sub messages handled together at most
CACHE_REFRESH_S = 0.05  # the floor cache follows changes in the background: a read then has little left to fetch
REDIS_MAX_CONNECTIONS = 64


def _response(status: int, body: bytes, content_type: str, extra: Mapping[str, str] | None = None) -> Response:
    headers = Headers()
    headers["Content-Type"] = content_type
    headers["Content-Length"] = str(len(body))
    headers["Cache-Control"] = "no-store"
    headers["Connection"] = "close"
    for k, v in (extra or {}).items():
        headers[k] = v
    return Response(status, HTTPStatus(status).phrase, headers, body)


def _json(status: int, data: Any) -> Response:
    return _response(status, orjson.dumps(data), "application/json")


def _agents_flag(query: Mapping[str, list[str]]) -> bool | None:
    """The `agents=` query parameter: True (the default) or False; None when it is neither."""
    raw = (query.get("agents") or ["true"])[0].lower()
    return {"true": True, "1": True, "false": False, "0": False}.get(raw)


def _snooze_key(field: bytes) -> tuple[str, str, str]:
    """A snoozes hash field, written as 'kpi|scope|subject', as (kpi, scope, subject)."""
    kpi, scope, subject = field.decode().split("|", 2)
    return kpi, scope, subject


def _error_event(text: str) -> str:
    """A websocket error message; `message` repeats `error` for clients of the first edition."""
    return orjson.dumps({"type": "error", "error": text, "message": text}).decode()


class Monitor:
    """Serves one port; state (alerts, acks, snoozes) lives in Redis so several monitors agree."""

    def __init__(
        self, settings: Settings, client: aioredis.Redis, *, registry: CollectorRegistry | None = None
    ) -> None:
        self.settings = settings
        self.redis = client
        self.store = WindowStore(client, namespace(settings.topic_prefix), tz=settings.tz)
        self.queues = QueueStore(client, self.store.ns, tz=settings.tz)
        self.ns = self.store.ns
        self.registry = registry or CollectorRegistry()
        # Every read (snapshots, /ws, /metrics) serves from one cache of the floor, refreshed by what changed.
        groups = GroupCache(
            self.store, settings.windows_s, longest_s=settings.longest_window_s, lookback_ms=settings.max_wait_s * 1000
        )
        self.floor = FloorCache(self.store, settings.windows_s, settings.longest_window_s, groups=groups)
        self.groups = groups
        self._memo: snapshot.Memo = {}  # agents' KPI values between snapshots (monitor/snapshot.py)
        self._sections: queueview.SectionMemo = {}  # queue and campaign entries between snapshots
        self.collector = KpiCollector(settings, self.store, self.registry, self.floor)
        self.collector.clients = lambda: len(self.clients)
        self.agent_collector = AgentCollector(settings, self.store, CollectorRegistry(), self.floor)
        self.clients: set[Client] = set()
        self._dirty = asyncio.Event()
        self._floor_views: dict[str, FloorView] = {}  # window -> the full-floor view deltas are made against
        self._tasks: list[asyncio.Task[Any]] = []
        self.server: Server | None = None
        self.redis_ok = True
        self.openapi = orjson.dumps(openapi.document(settings))

    # --- HTTP --------------------------------------------------------------------------

    def _authorized(self, request: Request) -> bool:
        return role_of(self.settings, request) is not None

    def _origin_ok(self, request: Request) -> bool:
        origin = request.headers.get("Origin")
        if origin is None:
            return True  # not a browser: token auth is what protects the feed
        if origin in self.settings.allowed_origins:
            return True
        host = request.headers.get("Host", "")
        return urlsplit(origin).netloc == host

    async def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Answer GET and HEAD (405 for other methods); let /ws through to the websocket handshake once checked."""
        path = urlsplit(request.path).path
        if request.method not in ALLOWED_METHODS or (request.method == "HEAD" and path == "/ws"):
            body = orjson.dumps({"error": f"method {request.method} is not allowed on {path!r}: use GET"})
            return _response(405, body, "application/json", {"Allow": "GET"})
        response = await self._route(request)
        if request.method == "HEAD" and response is not None:
            return Response(response.status_code, response.reason_phrase, response.headers, b"")
        return response

    async def _route(self, request: Request) -> Response | None:
        url = urlsplit(request.path)
        path = url.path
        if path == "/healthz":
            ok = await self._ping()
            rebuilding = ok and await self._rebuilding()
            body = {"ok": ok and not rebuilding, "redis": ok, "rebuilding": rebuilding, "clients": len(self.clients)}
            return _json(200 if body["ok"] else 503, body)
        if path in ("/metrics", "/metrics/agents"):
            if not self._authorized(request):
                return _json(401, {"error": "missing or wrong token: scrape with 'Authorization: Bearer <token>'"})
            collector = self.collector if path == "/metrics" else self.agent_collector
            try:
                exposition = await collector.scrape()
            except redis.exceptions.RedisError as exc:
                return _response(503, f"redis unavailable: {exc}\n".encode(), "text/plain; charset=utf-8")
            return _response(200, exposition, "text/plain; version=0.0.4; charset=utf-8")
        if path.startswith("/static/"):
            return self._static(path.removeprefix("/static/"))
        if path == "/api/openapi.json":
            return _response(200, self.openapi, "application/json")
        role = role_of(self.settings, request)
        if role is None:
            return _json(401, {"error": "missing or wrong token: pass ?token= or 'Authorization: Bearer <token>'"})
        if path == "/api/role":
            return _json(200, {"role": role, "may_act": may_act(role)})
        if path == "/api/audit":
            return await self._audit(role, parse_qs(url.query))
        if path == "/":
            return self._static("index.html")
        if path == "/api/snapshot":
            query = parse_qs(url.query)
            window = (query.get("window") or [self.settings.window_names[0]])[0]
            team = query["team"][0] if query.get("team") else None
            if window not in self.settings.window_names:
                allowed = ", ".join(self.settings.window_names)
                return _json(400, {"error": f"window is {window!r}, must be one of {allowed}"})
            agents = _agents_flag(query)
            if agents is None:
                return _json(400, {"error": f"agents is {query['agents'][0]!r}, must be true or false"})
            try:
                snap = await self.snapshot(window, team, agents=agents)
            except redis.exceptions.RedisError as exc:
                return _json(503, {"error": f"Redis unavailable ({exc}); the worker keeps events until it is back"})
            return _json(200, snap)
        if path == "/ws":
            if not self._origin_ok(request):
                return _json(403, {"error": f"origin {request.headers.get('Origin')!r} is not allowed"})
            query = parse_qs(url.query)
            window = (query.get("window") or [self.settings.window_names[0]])[0]
            if window not in self.settings.window_names:
                return _json(
                    400, {"error": f"window is {window!r}, must be one of {', '.join(self.settings.window_names)}"}
                )
            if _agents_flag(query) is None:
                return _json(400, {"error": f"agents is {query['agents'][0]!r}, must be true or false"})
            return None
        return _json(
            404, {"error": f"no such path {path!r}; try /, /api/snapshot, /ws, /metrics, /metrics/agents or /healthz"}
        )

    async def _audit(self, role: Role, query: Mapping[str, list[str]]) -> Response:
        if not may_act(role):
            return _json(403, {"error": "the audit log needs the supervisor token (CALLPULSE_SUPERVISOR_TOKEN)"})
        try:
            limit = audit.parse_limit(query.get("limit"))
        except ValueError as exc:
            return _json(400, {"error": str(exc)})
        try:
            return _json(200, await audit.latest(self.redis, self.ns, limit))
        except redis.exceptions.RedisError as exc:
            return _json(503, {"error": f"Redis unavailable ({exc}); the audit log is kept there"})

    def _static(self, name: str) -> Response:
        suffix = name[name.rfind(".") :] if "." in name else ""
        if "/" in name or name.startswith(".") or suffix not in STATIC_TYPES:
            return _json(404, {"error": f"no static file {name!r}"})
        try:
            body = (STATIC_DIR / name).read_bytes()
        except (FileNotFoundError, OSError):
            return _json(404, {"error": f"no static file {name!r}"})
        return _response(200, body, STATIC_TYPES[suffix])

    async def _ping(self) -> bool:
        try:
            await self.redis.ping()
            self.redis_ok = True
        except redis.exceptions.RedisError:
            self.redis_ok = False
        return self.redis_ok

    async def _rebuilding(self) -> bool:
        """Whether a worker is rebuilding the windows from Kafka now (Redis came back without its data)."""
        try:
            return not await self.store.initialised() and await self.store.rebuilding()
        except redis.exceptions.RedisError:
            return False

    # --- snapshots ---------------------------------------------------------------------

    async def _alert_state(self) -> tuple[list[dict[str, Any]], dict[tuple[str, str, str], int]]:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hvals(f"{self.ns}alerts")
            pipe.smembers(f"{self.ns}acked")
            pipe.hgetall(f"{self.ns}snoozes")
            raw_alerts, acked, raw_snoozes = await pipe.execute()
        acked_ids = {a.decode() for a in acked}
        snoozes: dict[tuple[str, str, str], int] = {}
        for field, until in raw_snoozes.items():
            snoozes[_snooze_key(field)] = int(until)
        alerts = []
        for raw in raw_alerts:
            state = orjson.loads(raw)
            msg = Alert.from_state(state).to_message()
            msg["acknowledged"] = msg["id"] in acked_ids
            msg["muted"] = self._muted(msg, snoozes, int(time.time() * 1000))
            alerts.append(msg)
        alerts.sort(key=lambda a: a["since"], reverse=True)
        return alerts, snoozes

    @staticmethod
    def _muted(msg: Mapping[str, Any], snoozes: Mapping[tuple[str, str, str], int], now_ms: int) -> bool:
        if msg.get("scope") == "agent":
            until = snoozes.get((msg["kpi"], "agent", msg.get("agent_id", "")))
        elif msg.get("scope") == "team":
            until = snoozes.get((msg["kpi"], "team", msg.get("team", "")))
        else:
            return False
        return until is not None and until > now_ms

    async def snapshot(self, window: str, team: str | None = None, *, agents: bool = True) -> dict[str, Any]:
        """The contract's snapshot for a window, current to now; `team`/`agents=False` narrow its scope.

        Served from the floor cache (monitor/floorcache.py): a refresh reads from Redis only the agents that
        changed since the last one (by an event or by time), and team and floor totals are kept, so a scoped
        snapshot costs what it shows, whatever the floor's size.
        """
        window_s = self.settings.window_s(window)
        # The request's reads from Redis all run alongside each other and before the reply is built, which is
        # then built in one go: a background refresh that runs meanwhile never stretches the build.
        now_ms, (alerts, snoozes), rebuilding = await together(
            self.floor.refresh(), self._alert_state(), self._rebuilding()
        )
        cache = self.floor
        # The roster is everyone on the floor (an event in the longest window), as in /metrics: an agent idle
        # for 20 minutes stays on the 15m board with zero counts instead of vanishing from it. Rows hold the
        # snapshot's window only: scores come from the cache's own (scores_at).
        with gcpolicy.paused():  # what follows makes a dict or two per agent shown, none in a cycle
            rows = cache.agents_at(now_ms, [window_s], team, every=team is None) if agents else []
            teams = cache.teams_at(now_ms, [window_s], only=None if team is None else [team])
            floor = cache.floor_at(now_ms, [window_s])
            queue_rows, campaign_rows = self._queues_and_campaigns(now_ms, window_s)
            snap = snapshot.build(
                rows, window_s=window_s, settings=self.settings, now_ms=now_ms, alerts=alerts, snoozes=snoozes,
                team_filter=team, teams=teams, floor=floor, include_agents=agents,
                scored=cache.scores_at(now_ms, self.settings, None if team is None and agents else
                                       [r.agent_id for r in rows]),
                state_counts=cache.state_counts,
                queue_rows=queue_rows, campaign_rows=campaign_rows, memo=self._memo, sections=self._sections,
            )  # fmt: skip
        # "rebuilding" while a worker replays Kafka into a Redis that came back empty: the numbers are partial.
        snap["status"] = "rebuilding" if rebuilding else "live"
        return snap

    def _queues_and_campaigns(self, now_ms: int, window_s: int) -> tuple[list[QueueRow], list[CampaignRow]]:
        settings = self.settings
        queue_rows = self.groups.queues_at(now_ms, [window_s], lambda q: settings.queue(q).max_wait_s * 1000)
        named, _floor = self.groups.campaigns_at(now_ms, [window_s])
        return queue_rows, named

    async def _refresh_loop(self) -> None:
        """Keep the floor cache close to the store, so a request's own refresh has little left to read, and read
        ahead the agents due at the next bucket edge (alongside: requests and refreshes go on meanwhile)."""
        ahead: asyncio.Task[int | None] | None = None
        try:
            while True:
                await asyncio.sleep(CACHE_REFRESH_S)
                now_ms = await _logged("floor cache refresh", self.floor.refresh())
                if now_ms is not None:  # score what the refresh read, so a request scores only what its own did
                    self.floor.score_ahead(now_ms, self.settings)
                if ahead is None or ahead.done():
                    ahead = asyncio.create_task(_logged("floor cache read ahead", self.floor.read_ahead()))
        finally:
            if ahead is not None:
                ahead.cancel()

    async def _snapshot_loop(self) -> None:
        last_push = 0.0
        while True:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancel that lands as the event
            # is set (as _listen does on resubscribing), and stop() then waits for this loop forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SNAPSHOT_HEARTBEAT_S):
                    await self._dirty.wait()
            since = time.monotonic() - last_push
            if since < SNAPSHOT_MIN_INTERVAL_S:
                await asyncio.sleep(SNAPSHOT_MIN_INTERVAL_S - since)
            self._dirty.clear()
            last_push = time.monotonic()
            if not self.clients:
                continue
            try:
                await self._push_snapshots()
            except redis.exceptions.RedisError as exc:
                reraise_if_cancelling()
                log.warning("snapshot refresh failed, Redis unavailable: %s", exc)
                # Boards must not keep a green "live" pill over numbers that stopped moving.
                status = {"type": "status", "redis": False, "message": f"Redis unavailable ({exc})"}
                self._broadcast(orjson.dumps(status).decode())
            except Exception:
                reraise_if_cancelling()
                log.exception("snapshot refresh failed")

    async def _push_snapshots(self) -> None:
        views = {(c.window, c.team, c.agents) for c in self.clients if not c.closed}
        for window, team, agents in views:
            members = [c for c in self.clients if (c.window, c.team, c.agents) == (window, team, agents)]
            if team is None and agents:
                view = self._floor_views.setdefault(window, FloorView())
                version = view.update(await self.snapshot(window))
                for c in members:
                    c.push_snapshot(view.message(c.sent_version if c.delta else None), version)
                continue
            snap = await self.snapshot(window, team, agents=agents)
            snap["type"] = "snapshot"
            text = orjson.dumps(snap).decode()
            for c in members:
                c.push_snapshot(text)

    # --- Redis pub/sub ------------------------------------------------------------------

    async def _listen(self) -> None:
        delay = 0.2
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(f"{self.ns}changed", f"{self.ns}alert-feed", f"{self.ns}ui")
                delay = 0.2
                self._dirty.set()
                async for message in pubsub.listen():
                    # What else has arrived goes with it: the alerts among them cost one Redis round trip together,
                    # so a busy floor's alerts do not queue up behind one another's reads.
                    batch = [message]
                    while len(batch) < PUBSUB_BATCH:
                        more = await pubsub.get_message(timeout=0.0)
                        if more is None:
                            break
                        batch.append(more)
                    await self._on_messages(batch)
            except (redis.exceptions.RedisError, OSError) as exc:
                reraise_if_cancelling()
                log.warning("Redis pub/sub lost (%s); reconnecting in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def _on_messages(self, batch: list[dict[str, Any]]) -> None:
        """Pub/sub messages in the order they came: changes wake the snapshot loop, alerts go out with whether they
        are acknowledged and muted (read once for all of them), UI messages (acks, snoozes) go out as they are."""
        messages = [(m["channel"].decode(), m["data"]) for m in batch if m["type"] == "message"]
        alerts = [orjson.loads(data) for channel, data in messages if channel.endswith("alert-feed")]
        acked, snoozes = await self._alert_marks([a["id"] for a in alerts]) if alerts else (set(), {})
        now_ms = int(time.time() * 1000)
        pending = iter(alerts)
        out: list[str] = []
        for channel, data in messages:
            if channel.endswith("changed"):
                self._dirty.set()
            elif channel.endswith("alert-feed"):
                out += self._on_alert(next(pending), acked, snoozes, now_ms)
            else:
                out.append(data.decode())
        self._broadcast(*out)

    async def _alert_marks(self, ids: list[str]) -> tuple[set[str], dict[tuple[str, str, str], int]]:
        """Which of these alerts are acknowledged, and the snoozes now: one round trip."""
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.smismember(f"{self.ns}acked", ids)
                pipe.hgetall(f"{self.ns}snoozes")
                flags, raw = await pipe.execute()
        except redis.exceptions.RedisError:
            return set(), {}
        # redis-py types replies as bytes | str (it cannot see decode_responses); our clients never decode
        snoozes = {_snooze_key(k): int(v) for k, v in cast("dict[bytes, bytes]", raw).items()}
        return {i for i, flag in zip(ids, flags, strict=True) if flag}, snoozes

    def _on_alert(
        self, msg: dict[str, Any], acked: set[str], snoozes: dict[tuple[str, str, str], int], now_ms: int
    ) -> list[str]:
        """An alert with its marks: the message for clients (none for a muted firing; snapshots show it)."""
        msg["acknowledged"] = msg["id"] in acked
        msg["muted"] = self._muted(msg, snoozes, now_ms)
        self._dirty.set()
        return [] if msg["muted"] and msg["status"] == "firing" else [orjson.dumps(msg).decode()]

    def _broadcast(self, *texts: str) -> None:
        """Messages to every client, in order, together (a burst is not a slow client: Client.push_events)."""
        for c in list(self.clients):
            c.push_events(texts)

    # --- websocket ----------------------------------------------------------------------

    async def handler(self, ws: ServerConnection) -> None:
        """One websocket client: initial snapshot, then feed; reads ack/snooze messages."""
        assert ws.request is not None  # the handler runs after the handshake
        query = parse_qs(urlsplit(ws.request.path).query)
        role = role_of(self.settings, ws.request) or "viewer"  # process_request already refused a wrong token
        window = (query.get("window") or [self.settings.window_names[0]])[0]
        team = query["team"][0] if query.get("team") else None
        agents = _agents_flag(query) is not False
        client = Client(ws, window=window, team=team, max_alerts=max(16, self.settings.ws_queue_size),
                        send_timeout_s=10.0, agents=agents)  # fmt: skip
        # A full-floor client that asks for deltas gets the agents that changed since its last message.
        client.delta = team is None and agents and (query.get("delta") or ["false"])[0].lower() in ("true", "1")
        self.clients.add(client)
        client.start()
        try:
            try:
                if team is None and agents:
                    # Full floor: the whole snapshot now, deltas against it afterwards.
                    view = self._floor_views.setdefault(window, FloorView())
                    version = view.update(await self.snapshot(window))
                    client.push_snapshot(view.message(None), version)
                else:
                    snap = await self.snapshot(window, team, agents=agents)
                    snap["type"] = "snapshot"
                    client.push_snapshot(orjson.dumps(snap).decode())
            except redis.exceptions.RedisError as exc:
                client.push_event(_error_event(f"Redis unavailable: {exc}"))
                status = {"type": "status", "redis": False, "message": f"Redis unavailable ({exc})"}
                client.push_event(orjson.dumps(status).decode())
            async for message in ws:
                await self._on_message(client, message, role)
        except ConnectionClosedError:
            pass  # a dropped slow client or a screen that lost its network: routine, not a handler failure
        finally:
            self.clients.discard(client)
            client.closed = True
            if client.task is not None:
                client.task.cancel()

    async def _on_message(self, client: Client, message: str | bytes, role: Role) -> None:
        try:
            data = orjson.loads(message)
            if not isinstance(data, dict):
                raise ValueError("message must be a JSON object")
            kind = data.get("type")
            if kind not in ("ack", "snooze"):
                raise ValueError(f"type is {kind!r}, must be 'ack' or 'snooze'")
            if not may_act(role):
                raise ValueError(REFUSAL)
            name = audit.clean_name(data.get("by"))
            if kind == "ack":
                await self.acknowledge(data.get("id"), role=role, name=name)
            else:
                await self.snooze(data, role=role, name=name)
        except (ValueError, orjson.JSONDecodeError) as exc:
            client.push_event(_error_event(str(exc)))
        except redis.exceptions.RedisError as exc:
            client.push_event(_error_event(f"Redis unavailable: {exc}"))

    async def acknowledge(self, alert_id: Any, *, role: Role = "operator", name: str | None = None) -> None:
        """Mark an alert acknowledged for every client of every monitor, and log who did it."""
        if not isinstance(alert_id, str) or not alert_id or len(alert_id) > 100:
            raise ValueError(f"ack id is {alert_id!r}, must be an alert id string")
        now_ms = int(time.time() * 1000)
        entry = audit.new_entry("ack", role, name, now_ms)
        entry["id"] = alert_id
        msg = {"type": "ack", "id": alert_id, "acknowledged": True}
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.sadd(f"{self.ns}acked", alert_id)
            pipe.expire(f"{self.ns}acked", 7 * 86400)
            audit.record(pipe, self.ns, entry, now_ms)
            pipe.publish(f"{self.ns}ui", orjson.dumps(msg))
            await pipe.execute()

    async def snooze(self, data: Mapping[str, Any], *, role: Role = "operator", name: str | None = None) -> None:
        """Mute one KPI for an agent or a team for N minutes, for everyone, and log who did it."""
        kpi = data.get("kpi")
        if kpi not in KPI_KEYS:
            raise ValueError(f"snooze kpi is {kpi!r}, must be one of {', '.join(KPI_KEYS)}")
        minutes = data.get("minutes")
        if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or not 0 < minutes <= 24 * 60:
            raise ValueError(f"snooze minutes is {minutes!r}, must be a number from 1 to 1440")
        if isinstance(data.get("agent_id"), str) and data["agent_id"]:
            scope, subject = "agent", data["agent_id"]
        elif isinstance(data.get("team"), str) and data["team"]:
            scope, subject = "team", data["team"]
        else:
            raise ValueError("snooze needs agent_id or team")
        now_ms = int(time.time() * 1000)
        until_ms = now_ms + int(minutes * 60_000)
        subject_key = "agent_id" if scope == "agent" else "team"
        msg = {"type": "snooze", "kpi": kpi, subject_key: subject, "until": iso(until_ms)}
        entry = audit.new_entry("snooze", role, name, now_ms)
        entry["kpi"], entry["minutes"], entry["until"] = kpi, minutes, iso(until_ms)
        if scope == "agent":
            entry["agent_id"] = subject
        else:
            entry["team"] = subject
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(f"{self.ns}snoozes", f"{kpi}|{scope}|{subject}", until_ms)
            audit.record(pipe, self.ns, entry, now_ms)
            pipe.publish(f"{self.ns}ui", orjson.dumps(msg))
            await pipe.execute()

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> Server:
        """Bind and start serving; refuses a non-loopback bind without a token."""
        s = self.settings
        if not s.token and not is_loopback(s.http_host):
            raise SettingsError(
                f"refusing to serve on {s.http_host}:{s.http_port} without a token: anyone on the network could "
                "read the floor's data; set CALLPULSE_TOKEN, or bind 127.0.0.1 with CALLPULSE_HTTP"
            )
        try:
            self.server = await serve(
                self.handler,
                s.http_host,
                s.http_port,
                process_request=self.process_request,
                create_connection=MethodGuardConnection,
                max_size=s.ws_max_message_bytes,
                max_queue=16,
                write_limit=64 * 1024,
                ping_interval=s.ws_ping_interval_s,
                ping_timeout=s.ws_ping_timeout_s,
                close_timeout=2,
                server_header="callpulse",
            )
        except OSError as exc:
            raise bind_problem("CALLPULSE_HTTP (--http)", s.http_host, s.http_port, exc) from exc
        self._tasks = [
            asyncio.create_task(self._listen()),
            asyncio.create_task(self._snapshot_loop()),
            asyncio.create_task(self._refresh_loop()),
        ]
        return self.server

    @property
    def port(self) -> int:
        """The bound port (useful when settings asked for port 0)."""
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop accepting, close clients with 1001, cancel background tasks."""
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        # Cancel until done: a task that misses one cancel (a race inside a library) must not hang shutdown.
        pending = {task for task in self._tasks if not task.done()}
        while pending:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.2)
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _logged(what: str, step: Coroutine[Any, Any, _T]) -> _T | None:
    """Run a background step of the floor cache: its result, or None after logging how it failed (the next step
    tries again).

    A cancel stays a cancel: redis-py may turn one that lands inside a command into an error of its own, which
    would be logged here and the loop would go on, never to end (`Task.cancelling()` still says it was asked).
    """
    result: _T | None = None
    try:
        result = await step
    except redis.exceptions.ResponseError:
        log.exception("%s failed: Redis refused a read", what)  # a bug, not an outage
    except redis.exceptions.RedisError as exc:
        log.debug("%s failed, Redis unavailable: %s", what, exc)
    except Exception:
        log.exception("%s failed", what)
    reraise_if_cancelling()  # also after a step that returned: a library may have swallowed the cancel whole
    return result


def redis_client(settings: Settings) -> aioredis.Redis:
    """The monitor's Redis client: one blocking pool that survives a Redis restart without a failed read."""
    # A blocking pool: when many clients connect at once (wallboards reconnecting after a restart), their initial
    # snapshots wait for a connection instead of failing with redis-py's "Too many connections" (its default pool
    # raises at 100 connections in use). After a Redis restart every pooled connection is dead, and redis-py only
    # finds out when it uses one ("Connection closed by server."): a command that fails so is sent once more on a
    # new connection. Every command the monitor sends may run twice: reads, and the ack and snooze writes (a set
    # member, a hash field and an audit member fixed before sending). A timeout is not retried: a Redis that hangs
    # answers 503 after socket_timeout, not twice that.
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url, max_connections=REDIS_MAX_CONNECTIONS, timeout=10, socket_timeout=5,
        socket_connect_timeout=5, retry=Retry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,)),
        **redis_options(settings),
    )  # fmt: skip
    return aioredis.Redis(connection_pool=pool)


async def serve_forever(settings: Settings) -> None:
    """The `callpulse monitor` command: serve until SIGINT/SIGTERM, then shut down gracefully."""
    logging.getLogger("websockets").setLevel(logging.WARNING)
    client = redis_client(settings)
    pool = client.connection_pool
    monitor = Monitor(settings, client)
    await monitor.start()
    heap = asyncio.create_task(gcpolicy.keep())  # the floor cache's heap: no full collection every few seconds
    log.info("monitor serving http://%s:%d/ (snapshot /api/snapshot, feed /ws, /metrics)", settings.http_host,
             monitor.port)  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("monitor stopping: closing %d clients", len(monitor.clients))
    heap.cancel()
    await monitor.stop()
    await client.aclose()
    await pool.aclose()
