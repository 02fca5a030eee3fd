"""Websocket deltas for full-floor clients: what a client at some version is sent."""

from __future__ import annotations

from typing import Any

import orjson

from monitor.delta import REMOVED_KEPT, FloorView


def snap(*agents: tuple[str, int], floor: int = 0) -> dict[str, Any]:
    return {
        "as_of": "2026-11-30T14:00:00Z",
        "agents": [{"agent_id": a, "kpis": {"calls_handled": n}} for a, n in agents],
        "teams": [],
        "floor": {"kpis": {"calls_handled": floor}},
    }


def message(view: FloorView, since: int | None) -> dict[str, Any]:
    return orjson.loads(view.message(since))


def test_a_new_client_gets_the_whole_snapshot_with_its_version() -> None:
    view = FloorView()
    view.update(snap(("ann", 1), ("bob", 2)))
    msg = message(view, None)
    assert (msg["type"], msg["version"]) == ("snapshot", 1)
    assert [a["agent_id"] for a in msg["agents"]] == ["ann", "bob"]


def test_a_delta_carries_only_changed_and_removed_agents_and_the_rest_whole() -> None:
    view = FloorView()
    view.update(snap(("ann", 1), ("bob", 2), ("cat", 3)))
    view.update(snap(("ann", 1), ("bob", 5), ("dan", 1), floor=7))
    msg = message(view, 1)
    assert (msg["type"], msg["since"], msg["version"]) == ("delta", 1, 2)
    assert {a["agent_id"]: a["kpis"]["calls_handled"] for a in msg["changed"]} == {"bob": 5, "dan": 1}
    assert msg["removed"] == ["cat"]
    assert "agents" not in msg
    assert msg["floor"] == {"kpis": {"calls_handled": 7}}


def test_a_client_two_versions_behind_gets_both_changes_in_one_delta() -> None:
    view = FloorView()
    view.update(snap(("ann", 1), ("bob", 1)))
    view.update(snap(("ann", 2), ("bob", 1)))
    view.update(snap(("ann", 2), ("bob", 3)))
    assert {a["agent_id"] for a in message(view, 2)["changed"]} == {"bob"}
    assert {a["agent_id"] for a in message(view, 1)["changed"]} == {"ann", "bob"}


def test_an_agent_back_after_leaving_is_changed_not_removed() -> None:
    view = FloorView()
    view.update(snap(("ann", 1), ("bob", 1)))
    view.update(snap(("ann", 1)))
    view.update(snap(("ann", 1), ("bob", 1)))
    msg = message(view, 1)
    assert (msg["removed"], [a["agent_id"] for a in msg["changed"]]) == ([], ["bob"])


def test_a_client_older_than_the_removed_list_gets_the_whole_snapshot() -> None:
    view = FloorView()
    view.update(snap(("ann", 1)))
    for n in range(REMOVED_KEPT + 1):
        view.update(snap(("ann", n)))
    assert message(view, 1)["type"] == "snapshot"
    assert message(view, view.version - 1)["type"] == "delta"
