"""Webhook notifications on real processes: Kafka -> `callpulse worker` -> Redis -> a real local HTTP receiver.

Each alert transition (fired, escalated, resolved) reaches every matching `[[notify.webhook]]` once, in the
hook's format, however many workers run; a dead or hanging receiver slows nothing else and shows up in the
worker's metrics and log by host, never by its secret path.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from callpulse.embedded import free_port
from callpulse.kafka import ensure_topics
from callpulse.settings import Settings, load_thresholds
from tests.helpers import async_wait_for
from tests.integration.test_alerts_e2e import (
    PARTITIONS,
    AlertsTopic,
    agent_state,
    breach,
    call_ended,
    produce_calls,
    worker_events,
)

pytestmark = pytest.mark.integration


class Receiver:
    """A real HTTP server on a free port that answers `status` and records every POST (path, JSON body)."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.posts: list[tuple[str, Any]] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        self.posts.append((request.path, orjson.loads(await request.read())))
        return web.Response(status=self.status, text="ok")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def bodies(self, path: str) -> list[Any]:
        return [body for p, body in self.posts if p == path]

    def all_bodies(self) -> list[Any]:
        return [body for _p, body in self.posts]


class HangingReceiver:
    """Accepts connections and reads requests but never answers: the worst receiver there is."""

    def __init__(self) -> None:
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self.port = 0

    async def __aenter__(self) -> HangingReceiver:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        with contextlib.suppress(Exception):
            while await reader.read(65536):
                pass


def configured(settings: Settings, tmp_path: Path, toml: str) -> Settings:
    """Settings reading `toml` as the thresholds file (the worker child process reads the same file)."""
    path = tmp_path / "thresholds.toml"
    path.write_text(toml, encoding="utf-8")
    return settings.replace(config_path=str(path), **load_thresholds(toml))


def hook(url: str, fmt: str = "json", min_severity: str = "warning", teams: list[str] | None = None) -> str:
    lines = ["[[notify.webhook]]", f'url = "{url}"', f'format = "{fmt}"', f'min_severity = "{min_severity}"']
    if teams is not None:
        lines.append(f"teams = {orjson.dumps(teams).decode()}")
    return "\n".join(lines) + "\n"


def worker_metrics(worker: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The worker's /metrics as {(sample name, sorted labels): value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{worker.web_port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def metric(worker: Any, name: str, **labels: str) -> float:
    try:
        samples = worker_metrics(worker)
    except OSError:
        return 0.0
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def transitions(bodies: list[dict[str, Any]], **match: Any) -> list[tuple[str, str]]:
    """(status, severity) of the json bodies whose fields equal `match`, in arrival order."""
    return [(b["status"], b["severity"]) for b in bodies if all(b.get(k) == v for k, v in match.items())]


async def test_transitions_reach_matching_webhooks_in_their_formats(
    settings: Settings, stack: Any, tmp_path: Path
) -> None:
    async with Receiver() as rx:
        paths = {
            "all": "/services/T0/B0/all-secret",
            "critical": "/services/T0/B1/critical-secret",
            "north": "/workflows/north-secret",
            "south": "/hooks/south-secret",
        }
        toml = (
            hook(rx.url(paths["all"]))
            + hook(rx.url(paths["critical"]), "slack", "critical")
            + hook(rx.url(paths["north"]), "teams", teams=["north"])
            + hook(rx.url(paths["south"]), teams=["south"])
        )
        settings = configured(settings, tmp_path, toml)
        await ensure_topics(settings)
        worker = stack.worker(settings)
        now = time.time()

        def at_all_hook(status: str, severity: str) -> set[str]:
            """Scopes (agent ag-n, team north, floor) with a transition to status/severity at the json hook."""
            got = rx.bodies(paths["all"])
            return {b["scope"] for b in got if (b["status"], b["severity"]) == (status, severity)}

        scopes = {"agent", "team", "floor"}
        # Five calls of 400 s: AHT 400, a warning (360) for the agent, team north and the floor.
        await produce_calls(settings, [call_ended("ag-n", n, 400, ts=now - 60 + n, team="north") for n in range(5)])
        await async_wait_for(
            lambda: at_all_hook("firing", "warning") == scopes, timeout_s=60, message="the warnings firing"
        )
        # Five calls of 900 s: AHT 650, escalated to critical (480).
        await produce_calls(settings, [call_ended("ag-n", n, 900, ts=now - 50 + n, team="north") for n in range(5, 10)])
        await async_wait_for(
            lambda: at_all_hook("firing", "critical") == scopes, timeout_s=60, message="the escalations"
        )
        # Thirty calls of 60 s (one partition, so they land together): AHT 207.5, under 360 by over 5 %: resolved.
        await produce_calls(
            settings, [call_ended("ag-n", n, 60, ts=now - 40 + n, team="north") for n in range(10, 40)], [0] * 30
        )

        def resolved_at(path: str) -> set[str]:
            return {b["scope"] for b in rx.bodies(path) if b.get("status") == "resolved"}

        await async_wait_for(
            lambda: resolved_at(paths["all"]) == scopes, timeout_s=60, message="every scope resolved (json)"
        )
        await async_wait_for(
            lambda: sum(b["text"].startswith("RESOLVED") for b in rx.bodies(paths["critical"])) == 3,
            message="the critical-only slack hook hearing the three resolves",
        )
        await async_wait_for(
            lambda: len(rx.bodies(paths["north"])) == sum(b["scope"] != "floor" for b in rx.bodies(paths["all"])),
            message="the north teams hook hearing every agent and team transition",
        )

        everything = rx.bodies(paths["all"])
        agent = transitions(everything, agent_id="ag-n")
        assert agent[0] == ("firing", "warning") and ("firing", "critical") in agent, agent
        assert agent[-1][0] == "resolved" and [t for t in agent if t[0] == "resolved"] == [agent[-1]], agent
        first = everything[0]
        assert {"type", "id", "status", "kpi", "scope", "window", "value", "threshold", "severity", "ts"} <= set(first)
        assert len({b["id"] for b in everything if b.get("agent_id") == "ag-n"}) == 1, "one episode, one id"

        # Slack, critical only: it starts hearing of an episode at its escalation, then hears it out; no warning
        # ever opens an episode there.
        slack = rx.bodies(paths["critical"])
        for who in ("agent ag-n (team north)", "team north ", "the floor"):
            mine = [b["text"] for b in slack if f"for {who}" in b["text"]]
            assert mine[0].startswith("CRITICAL escalated: AHT over 15m"), mine
            assert mine[-1].startswith("RESOLVED: AHT over 15m"), mine
        escalated = next(b for b in slack if "agent ag-n" in b["text"])
        # 10m 50s when the five long calls land in one batch; in any case over the critical threshold.
        assert re.fullmatch(
            r"CRITICAL escalated: AHT over 15m for agent ag-n \(team north\) is \d+m \d\ds \(threshold 8m 00s\)",
            escalated["text"],
        ), escalated["text"]
        assert escalated["attachments"][0]["color"] == "#d62728"

        # Teams, north only: the agent's and the team's transitions as Adaptive Cards, not the floor's.
        cards = rx.bodies(paths["north"])
        heads = [c["attachments"][0]["content"]["body"][0]["text"] for c in cards]
        assert all(c["type"] == "message" for c in cards)
        assert {c["attachments"][0]["contentType"] for c in cards} == {"application/vnd.microsoft.card.adaptive"}
        assert not any("the floor" in h for h in heads), heads
        assert heads[0].startswith("WARNING fired: AHT over 15m for "), heads

        assert rx.bodies(paths["south"]) == [], "a hook for team south hears nothing of team north"
        assert metric(worker, "callpulse_notify_sent_total", hook="0", host=f"127.0.0.1:{rx.port}") == len(everything)
        assert worker.alive(), worker.log_tail()


async def test_dead_receivers_slow_nothing_and_are_reported(settings: Settings, stack: Any, tmp_path: Path) -> None:
    refused_port = free_port()  # nothing listens here
    async with HangingReceiver() as hanging, Receiver() as rx:
        secrets = {"hanging": "/hang/secret-h4ng", "refused": "/refused/secret-r3fu", "live": "/live/secret-l1ve"}
        toml = (
            # A minute per attempt at the hanging hook: delivered in line, it would hold every later alert.
            '[notify]\ntimeout = "60s"\nmax_attempts = 3\n\n'
            + hook(f"http://127.0.0.1:{hanging.port}{secrets['hanging']}")
            + hook(f"http://127.0.0.1:{refused_port}{secrets['refused']}")
            + hook(rx.url(secrets["live"]))
        )
        settings = configured(settings, tmp_path, toml)
        await ensure_topics(settings)
        worker = stack.worker(settings)
        agents = [f"ag-d{i}" for i in range(6)]
        for i, agent in enumerate(agents):
            await breach(settings, [agent], first=i * 10)
            await async_wait_for(
                lambda agent=agent: transitions(rx.bodies(secrets["live"]), agent_id=agent),
                message=f"{agent}'s alert at the live hook while the others are dead",
            )
        assert hanging.connections >= 1, "the hanging hook was tried"
        assert await worker_events(worker) >= 5 * len(agents)

        refused = {"hook": "1", "host": f"127.0.0.1:{refused_port}"}
        await async_wait_for(lambda: metric(worker, "callpulse_notify_failures_total", **refused) >= 2,
                             message="failed attempts counted for the refused hook")  # fmt: skip
        assert metric(worker, "callpulse_notify_receiver_up", **refused) == 0
        assert metric(worker, "callpulse_notify_receiver_up", hook="2", host=f"127.0.0.1:{rx.port}") == 1
        assert metric(worker, "callpulse_notify_failures_total", hook="2", host=f"127.0.0.1:{rx.port}") == 0

        log_text = worker.log_tail(1_000_000)
        assert f"notify.webhook[1] (127.0.0.1:{refused_port}): POST of alert" in log_text, log_text[-3000:]
        assert "cannot connect" in log_text
        with urllib.request.urlopen(f"http://127.0.0.1:{worker.web_port}/metrics", timeout=5) as resp:
            metrics_text = resp.read().decode()
        for secret in secrets.values():
            assert secret not in log_text, f"the webhook path {secret} leaked into the worker's log"
            assert secret not in metrics_text, f"the webhook path {secret} leaked into /metrics"
        assert worker.alive(), worker.log_tail()


async def test_two_workers_post_each_transition_once(settings: Settings, stack: Any, tmp_path: Path) -> None:
    async with Receiver() as rx:
        settings = configured(settings, tmp_path, hook(rx.url("/hooks/once-secret")))
        await ensure_topics(settings)
        workers = [stack.worker(settings), stack.worker(settings)]
        # Wait until both workers consume (each processed something): as in test_alerts_e2e.
        await produce_calls(settings, [agent_state("probe0", 0, ts=time.time())])

        async def first_batch_done() -> bool:
            return sum([await worker_events(w) for w in workers]) > 0

        await async_wait_for(first_batch_done, timeout_s=30, message="the first batch (and the rebuild) done")
        n = 1
        deadline = time.monotonic() + 60
        while not all([await worker_events(w) for w in workers]):
            assert time.monotonic() < deadline, "both workers never consumed"
            await produce_calls(settings, [agent_state(f"probe{p}", n, ts=time.time()) for p in range(PARTITIONS)])
            n += 1
            await asyncio.sleep(0.5)

        async with AlertsTopic(settings) as topic:
            agents = [f"ag{i}" for i in range(8)]
            await breach(settings, agents, team_of=lambda a: "red" if int(a[2:]) % 2 else "blue")
            expected = {(a, "firing") for a in agents}
            await async_wait_for(
                lambda: {(b.get("agent_id"), b["status"]) for b in rx.all_bodies()} >= expected,
                timeout_s=45,
                message="every agent's alert at the hook",
            )
            # A late sentinel: once it is through, both workers have swept the others several times over.
            await breach(settings, ["ag-sentinel"])
            await async_wait_for(lambda: any(b.get("agent_id") == "ag-sentinel" for b in rx.all_bodies()),
                                 message="the sentinel at the hook")  # fmt: skip
            await async_wait_for(lambda: topic.alerts(agent_id="ag-sentinel"), message="the sentinel on the topic")

            def key(a: dict[str, Any]) -> tuple[str, str, str, str]:
                return a["id"], a["status"], a["severity"], a["ts"]

            await async_wait_for(lambda: {key(b) for b in rx.all_bodies()} == {key(a) for a in topic.values},
                                 message="the hook holding exactly the transitions on the alerts topic")  # fmt: skip
            posted = Counter(key(b) for b in rx.all_bodies())
            duplicated = {k: c for k, c in posted.items() if c != 1}
            assert not duplicated, f"a transition was POSTed more than once: {duplicated}"
            assert len(posted) >= len(agents) + 1
        for w in workers:
            assert w.alive(), w.log_tail()
