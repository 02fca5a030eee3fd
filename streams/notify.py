"""Deliver alert transitions to the `[[notify.webhook]]` receivers, off the pipeline.

The alert engine publishes each transition once across workers (a compare-and-set in Redis); the worker that
won it hands the alert message to `Notifier.submit`, which never waits: the message goes into a bounded
queue and a background task POSTs it to every matching webhook. Each webhook has its own sender and bounded
queue, so a dead receiver only delays (and, once its queue is full, drops) its own notifications: retries
back off exponentially up to `notify_backoff_max_s`, and failures are counted in the worker's metrics and
logged by host. A webhook's URL path is its credential: it never appears in a log line or a metric.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge

from callpulse.cancelling import reraise_if_cancelling
from callpulse.settings import SEVERITIES, Settings, Webhook
from streams import notices
from streams.store import WindowStore

log = logging.getLogger("callpulse.notify")

TeamOf = Callable[[str], Awaitable[str | None]]
EPISODE_MEMORY_S = 7 * 86400  # how long "this webhook was told of the episode" is kept without a resolve


class EpisodeMemory:
    """Which webhooks were told of an episode, shared by the workers (so any of them can send the resolve)."""

    async def told(self, alert_id: str) -> set[int]:
        """Indexes of webhooks told of the episode."""
        return set()

    async def note(self, alert_id: str, hooks: set[int]) -> None:
        """Remember that these webhooks were told."""

    async def forget(self, alert_id: str) -> None:
        """The episode resolved."""


class StoreEpisodeMemory(EpisodeMemory):
    """EpisodeMemory kept in the window store's Redis."""

    def __init__(self, store: WindowStore) -> None:
        self.store = store

    async def told(self, alert_id: str) -> set[int]:
        """Indexes of webhooks told of the episode, from Redis."""
        return await self.store.notified_hooks(alert_id)

    async def note(self, alert_id: str, hooks: set[int]) -> None:
        """Remember in Redis that these webhooks were told."""
        await self.store.note_notified(alert_id, hooks, keep_s=EPISODE_MEMORY_S)

    async def forget(self, alert_id: str) -> None:
        """Drop the episode's record from Redis."""
        await self.store.forget_notified(alert_id)


class NotifyMetrics:
    """The worker's notification counters, by webhook index and host (never the URL path)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["hook", "host"]
        self.sent = Counter("callpulse_notify_sent", "Alert notifications a webhook accepted (2xx)", labels,
                            registry=registry)  # fmt: skip
        self.failures = Counter(
            "callpulse_notify_failures",
            "Failed POST attempts to a webhook (no answer, connection refused, HTTP error)",
            labels,
            registry=registry,
        )
        self.dropped = Counter(
            "callpulse_notify_dropped",
            "Notifications given up: retries exhausted, rejected (4xx) or the webhook's queue full",
            [*labels, "reason"],
            registry=registry,
        )
        self.up = Gauge("callpulse_notify_receiver_up", "1 while a webhook's last POST succeeded (or none yet)",
                        labels, registry=registry)  # fmt: skip
        self.queued = Gauge("callpulse_notify_queued", "Notifications waiting for a webhook", labels,
                            registry=registry)  # fmt: skip


def describe(exc: BaseException, timeout_s: float) -> str:
    """A failed POST for a log line, without the URL (aiohttp's own messages print it, path and all)."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout_s:g} s"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect ({exc.os_error.strerror or type(exc.os_error).__name__})"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__


class _Reject(Exception):
    """The receiver refused the notification for good (a 4xx other than 408 and 429): no retry."""


class _Retry(Exception):
    """A failed attempt worth retrying; `after_s` is the receiver's Retry-After, if any."""

    def __init__(self, reason: str, after_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.after_s = after_s


class WebhookSender:
    """One webhook: a bounded queue and a task POSTing its bodies in order, with capped exponential backoff."""

    def __init__(self, index: int, hook: Webhook, settings: Settings, metrics: NotifyMetrics) -> None:
        self.index = index
        self.hook = hook
        self.timeout_s = settings.notify_timeout_s
        self.max_attempts = settings.notify_max_attempts
        self.backoff_s = settings.notify_backoff_s
        self.backoff_max_s = settings.notify_backoff_max_s
        self.queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(settings.notify_queue_size)
        self.labels = (str(index), hook.host)
        self.metrics = metrics
        self.delay_s = 0.0  # the current backoff; kept across notifications while the receiver stays down
        self.failing = False
        metrics.up.labels(*self.labels).set(1)
        metrics.queued.labels(*self.labels).set(0)

    @property
    def name(self) -> str:
        """How logs name the webhook: its index in the TOML and its host."""
        return f"notify.webhook[{self.index}] ({self.hook.host})"

    def put(self, what: str, body: bytes) -> None:
        """Queue a body without waiting; a full queue drops it (counted and logged)."""
        try:
            self.queue.put_nowait((what, body))
        except asyncio.QueueFull:
            self.metrics.dropped.labels(*self.labels, "queue_full").inc()
            log.warning("%s: dropped %s, %d notifications already wait for this receiver", self.name, what,
                        self.queue.qsize())  # fmt: skip
        self.metrics.queued.labels(*self.labels).set(self.queue.qsize())

    async def run(self, session: aiohttp.ClientSession) -> None:
        """Send queued bodies one at a time, forever."""
        while True:
            what, body = await self.queue.get()
            self.metrics.queued.labels(*self.labels).set(self.queue.qsize())
            await self._deliver(session, what, body)

    async def _deliver(self, session: aiohttp.ClientSession, what: str, body: bytes) -> None:
        for attempt in range(1, self.max_attempts + 1):
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            try:
                await self._post(session, body)
            except _Reject as exc:
                self._failed()
                self.metrics.dropped.labels(*self.labels, "rejected").inc()
                log.error("%s refused %s (%s): check the webhook's URL and format; not retried", self.name, what, exc)
                return
            except _Retry as exc:
                # One warning when the receiver starts failing; while it stays down, only give-ups are logged.
                level = logging.DEBUG if self.failing else logging.WARNING
                self._failed()
                self.delay_s = min(self.backoff_max_s, max(self.delay_s * 2, self.backoff_s, exc.after_s or 0.0))
                log.log(level, "%s: POST of %s failed (%s), attempt %d of %d; next in %g s", self.name, what,
                        exc.reason, attempt, self.max_attempts, self.delay_s)  # fmt: skip
                continue
            self.metrics.sent.labels(*self.labels).inc()
            self.metrics.up.labels(*self.labels).set(1)
            if self.failing:
                log.info("%s answers again", self.name)
            self.failing = False
            self.delay_s = 0.0
            return
        self.metrics.dropped.labels(*self.labels, "gave_up").inc()
        log.warning("%s: gave up on %s after %d attempts (see callpulse_notify_failures_total)", self.name, what,
                    self.max_attempts)  # fmt: skip

    def _failed(self) -> None:
        self.metrics.failures.labels(*self.labels).inc()
        self.metrics.up.labels(*self.labels).set(0)
        self.failing = True

    async def _post(self, session: aiohttp.ClientSession, body: bytes) -> None:
        headers = {"Content-Type": "application/json"}
        try:
            async with asyncio.timeout(self.timeout_s):
                async with session.post(self.hook.url, data=body, headers=headers, allow_redirects=False) as resp:
                    await resp.read()
                    status = resp.status
                    retry_after = resp.headers.get("Retry-After", "")
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise _Retry(describe(exc, self.timeout_s)) from None
        if 200 <= status < 300:
            return
        if status in (408, 429) or status >= 500:
            after = float(retry_after) if retry_after.isdigit() else None
            raise _Retry(f"HTTP {status}", min(after, self.backoff_max_s) if after is not None else None)
        raise _Reject(f"HTTP {status}")


class Notifier:
    """Route alert messages to the webhooks they match; `submit` from the alert path, `run` as a background task."""

    def __init__(
        self,
        settings: Settings,
        registry: CollectorRegistry,
        *,
        team_of: TeamOf | None = None,
        memory: EpisodeMemory | None = None,
    ) -> None:
        self.hooks = settings.webhooks
        self.metrics = NotifyMetrics(registry)
        self.senders = [WebhookSender(i, hook, settings, self.metrics) for i, hook in enumerate(self.hooks)]
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue(settings.notify_queue_size)
        self.team_of = team_of
        self.memory = memory or EpisodeMemory()
        self.timeout_s = settings.notify_timeout_s

    def submit(self, message: dict[str, Any]) -> None:
        """Hand over one alert transition; returns at once (a full inbox drops it, counted and logged)."""
        if not self.senders:
            return
        try:
            self.inbox.put_nowait(message)
        except asyncio.QueueFull:
            for sender in self.senders:
                self.metrics.dropped.labels(*sender.labels, "queue_full").inc()
            log.warning("notifications backlog full (%d): dropped alert %s", self.inbox.qsize(), message.get("id"))

    async def run(self) -> None:
        """Deliver until cancelled: one task per webhook, this one routing the inbox to them."""
        if not self.senders:
            return
        # Each attempt is bounded by asyncio.timeout in WebhookSender._post; the session adds none of its own.
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:
            tasks = [asyncio.create_task(s.run(session), name=f"notify-{s.index}") for s in self.senders]
            try:
                while True:
                    message = await self.inbox.get()
                    try:
                        await self.route(message)
                    except Exception:
                        reraise_if_cancelling()
                        log.exception("could not route alert %s to the webhooks", message.get("id"))
            finally:
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                left = sum(s.queue.qsize() for s in self.senders) + self.inbox.qsize()
                if left:
                    log.warning("stopping with %d notifications undelivered", left)

    async def route(self, message: dict[str, Any]) -> list[int]:
        """Queue the message's body for each webhook it matches; returns their indexes."""
        team = await self._team(message)
        alert_id = str(message.get("id"))
        told = await self._told(alert_id) if self._needs_memory() else set()
        chosen: list[int] = []
        for sender in self.senders:
            hook = sender.hook
            heard = sender.index in told or not _remembers(hook)
            if notices.wants(hook, message, team=team, heard_of_episode=heard):
                what = f"alert {alert_id} ({notices.transition(message)} {message.get('severity')})"
                sender.put(what, orjson.dumps(notices.body(hook, message, team)))
                chosen.append(sender.index)
        await self._remember(alert_id, message, {i for i in chosen if _remembers(self.hooks[i])})
        return chosen

    def _needs_memory(self) -> bool:
        return any(_remembers(h) for h in self.hooks)

    async def _team(self, message: dict[str, Any]) -> str | None:
        if message.get("scope") == "team":
            return str(message.get("team"))
        if message.get("scope") != "agent" or self.team_of is None:
            return None
        try:
            return await self.team_of(str(message.get("agent_id")))
        except Exception as exc:
            reraise_if_cancelling()
            log.warning("could not read agent %s's team for its notification: %s", message.get("agent_id"), exc)
            return None

    async def _told(self, alert_id: str) -> set[int]:
        try:
            return await self.memory.told(alert_id)
        except Exception as exc:
            reraise_if_cancelling()
            log.warning("could not read which webhooks heard of alert %s: %s", alert_id, exc)
            return set()

    async def _remember(self, alert_id: str, message: dict[str, Any], chosen: set[int]) -> None:
        try:
            if message.get("status") == "resolved":
                if self._needs_memory():
                    await self.memory.forget(alert_id)
            elif chosen:
                await self.memory.note(alert_id, chosen)
        except Exception as exc:
            reraise_if_cancelling()
            log.warning("could not record which webhooks heard of alert %s: %s", alert_id, exc)


def _remembers(hook: Webhook) -> bool:
    """Only a hook above the lowest severity can miss the start of an episode, so only its hearing is recorded."""
    return hook.min_severity != SEVERITIES[0]
