"""Websocket deltas for full-floor clients: only the agents that changed since the client's last message.

Pure: snapshots in, message texts out. A `FloorView` numbers each snapshot of one view (window) and
remembers, per agent, the version in which its row last changed and the agents that left. A client that
was last sent version V gets `{"type": "delta", ...}`: every field of the snapshot but `agents`, plus

    "since": V,                      # the version the client already has
    "version": N,                    # the version this message brings it to
    "changed": [<agent row>, ...],   # agents new or different since V (whole rows, as in the snapshot)
    "removed": ["<agent_id>", ...]   # agents that left the floor since V

A client with no version yet (just connected), or one older than the removed list remembers, gets the
whole snapshot (`"type": "snapshot"`, with `"version"`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

REMOVED_KEPT = 600  # versions (~10 min of pushes) a departed agent stays in the removed list


@dataclass
class FloorView:
    """The latest full-floor snapshot of one window, with when each agent's row last changed."""

    version: int = 0
    rows: dict[str, tuple[int, bytes, dict[str, Any]]] = field(default_factory=dict)
    removed: dict[str, int] = field(default_factory=dict)
    snapshot: dict[str, Any] = field(default_factory=dict)
    _texts: dict[int | None, str] = field(default_factory=dict)

    def update(self, snap: dict[str, Any]) -> int:
        """Take a new snapshot of the view; return its version."""
        self.version += 1
        seen: set[str] = set()
        for row in snap.get("agents", []):
            agent = row["agent_id"]
            seen.add(agent)
            raw = orjson.dumps(row)
            old = self.rows.get(agent)
            if old is None or old[1] != raw:
                self.rows[agent] = (self.version, raw, row)
                self.removed.pop(agent, None)
        for agent in [a for a in self.rows if a not in seen]:
            del self.rows[agent]
            self.removed[agent] = self.version
        oldest = self.version - REMOVED_KEPT
        for agent in [a for a, v in self.removed.items() if v <= oldest]:
            del self.removed[agent]
        self.snapshot = snap
        self._texts = {}
        return self.version

    def message(self, since: int | None) -> str:
        """The text that brings a client at version `since` (None: nothing yet) to the current version."""
        if since not in self._texts:
            self._texts[since] = orjson.dumps(self._message(since)).decode()
        return self._texts[since]

    def _message(self, since: int | None) -> dict[str, Any]:
        if since is None or since < self.version - REMOVED_KEPT or since > self.version:
            return {**self.snapshot, "type": "snapshot", "version": self.version}
        body = {k: v for k, v in self.snapshot.items() if k != "agents"}
        changed = [row for v, _, row in self.rows.values() if v > since]
        removed = sorted(a for a, v in self.removed.items() if v > since)
        return {**body, "type": "delta", "since": since, "version": self.version, "changed": changed,
                "removed": removed}  # fmt: skip
