"""Per-client outbound queues for the websocket feed.

Each client gets one slot for the latest snapshot (older ones are dropped) and a bounded list of
alerts (never dropped: a client that falls that far behind is disconnected instead). A sender
task per client does the writing, so a stalled client only ever blocks itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import deque
from collections.abc import Sequence
from typing import Any

from websockets.asyncio.server import ServerConnection

log = logging.getLogger("callpulse.monitor")
SEND_BUFFER_BYTES = 64 * 1024  # the kernel doubles it: ~128 KiB, several seconds of snapshots and alerts


class Client:
    """One websocket client: what it watches and what is waiting to be sent to it."""

    def __init__(
        self,
        ws: ServerConnection,
        *,
        window: str,
        team: str | None,
        max_alerts: int,
        send_timeout_s: float,
        agents: bool = True,
    ) -> None:
        self.ws = ws
        self.window = window
        self.team = team
        self.agents = agents
        self.delta = False  # full floor, `delta=true`: deltas after the first snapshot (monitor/delta.py)
        self.sent_version: int | None = None  # the floor view version of the last snapshot/delta sent
        self._snapshot_version: int | None = None
        self.max_alerts = max_alerts
        self.send_timeout_s = send_timeout_s
        self._snapshot: str | None = None
        self._alerts: deque[str] = deque()
        self._wake = asyncio.Event()
        self.closed = False
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Cap the kernel send buffer, then start the sender task."""
        # Left to autotuning, the kernel buffers up to ~4 MB for a peer that doesn't read: the stall would go
        # unnoticed for minutes (nothing blocks until then) and each such client would pin megabytes of kernel
        # memory. A fixed buffer of a few seconds of feed makes the 10 s stall timeout and the alert cap bite.
        sock = self.ws.transport.get_extra_info("socket") if self.ws.transport is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        self.task = asyncio.create_task(self._run(), name=f"ws-sender-{id(self)}")

    def push_snapshot(self, text: str, version: int | None = None) -> None:
        """Queue a snapshot or delta (bringing the client to `version`), replacing one not yet sent.

        A delta replacing an unsent one must have been built from `sent_version`, so it covers both.
        """
        self._snapshot = text
        self._snapshot_version = version
        self._wake.set()

    def push_event(self, text: str) -> None:
        """Queue an alert/ack/snooze message; never dropped, so overflowing disconnects the client."""
        self.push_events([text])

    def push_events(self, texts: Sequence[str]) -> None:
        """Queue messages that arrived together, in order. Never dropped: a client still holding `max_alerts`
        unsent from before is too slow and is disconnected; a burst of any size is fine for one that keeps up."""
        if self.closed or not texts:
            return
        if len(self._alerts) >= self.max_alerts:
            log.warning("websocket client %s is %d messages behind; disconnecting it", self.remote, len(self._alerts))
            self.drop(1008, "client too slow")
            return
        self._alerts.extend(texts)
        self._wake.set()

    @property
    def remote(self) -> Any:
        """The peer address, for logs."""
        return self.ws.remote_address

    def drop(self, code: int, reason: str) -> None:
        """Disconnect now, without waiting on a client that doesn't read."""
        if self.closed:
            return
        self.closed = True
        self._alerts.clear()
        self._snapshot = None
        self._wake.set()
        transport = self.ws.transport
        try:
            self.ws.protocol.send_close(code, reason)
            self.ws.send_data()
        except Exception:
            pass
        transport.abort()

    async def _run(self) -> None:
        try:
            while not self.closed:
                await self._wake.wait()
                self._wake.clear()
                while not self.closed and (self._alerts or self._snapshot is not None):
                    if self._alerts:
                        text = self._alerts.popleft()
                    elif self._snapshot is not None:  # always, by the loop's condition
                        text, self._snapshot = self._snapshot, None
                        if self._snapshot_version is not None:
                            self.sent_version = self._snapshot_version
                    try:
                        await asyncio.wait_for(self.ws.send(text), self.send_timeout_s)
                    except TimeoutError:
                        log.warning("websocket client %s stalled for %.0f s; disconnecting", self.remote,
                                    self.send_timeout_s)  # fmt: skip
                        self.drop(1008, "client stalled")
                        return
        except Exception:  # connection closed under us
            self.closed = True
