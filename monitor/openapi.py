"""The monitor's HTTP API as an OpenAPI 3.1 document, built from the same names the server uses.

Served at `GET /api/openapi.json` (with the deployment's windows) and written to `docs/openapi.json` (with the
defaults) by `python -m callpulse.reference`; a test checks it with openapi-spec-validator and against live replies.
"""

from __future__ import annotations

from typing import Any

from callpulse.settings import KPI_KEYS, Settings
from monitor import audit
from monitor.auth import ROLES

SECURITY: list[dict[str, list[str]]] = [{"bearer": []}, {"query_token": []}]
NULLABLE_NUMBER = {"type": ["number", "null"]}
RFC3339 = {"type": "string", "format": "date-time"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref("Error")}}}


def _json_reply(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _kpis() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "KPI values in the window; a KPI whose denominator is 0 is null, counts and sums are 0.",
        "properties": {kpi: NULLABLE_NUMBER for kpi in KPI_KEYS},
        "required": list(KPI_KEYS),
        "additionalProperties": NULLABLE_NUMBER,
    }


def _alert() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "An alert transition, as on the websocket feed and the `alerts` topic.",
        "required": ["type", "id", "status", "kpi", "scope", "window", "value", "threshold", "severity", "ts"],
        "properties": {
            "type": {"const": "alert"},
            "id": {"type": "string", "description": "one id per breach episode"},
            "status": {"enum": ["firing", "resolved"]},
            "kpi": {"type": "string"},
            "scope": {"enum": ["agent", "team", "floor", "queue", "campaign"]},
            "agent_id": {"type": "string"},
            "team": {"type": "string"},
            "queue": {"type": "string"},
            "campaign": {"type": "string"},
            "window": {"type": "string"},
            "value": NULLABLE_NUMBER,
            "threshold": {"type": "number"},
            "severity": {"enum": ["warning", "critical"]},
            "ts": RFC3339,
            "since": RFC3339,
            "acknowledged": {"type": "boolean"},
            "muted": {"type": "boolean"},
        },
    }


def _schemas() -> dict[str, Any]:
    row_common = {
        "kpis": _ref("Kpis"),
        "breaches": {"type": "array", "items": {"type": "string"}, "description": "KPIs past a threshold"},
        "levels": {"type": "object", "additionalProperties": {"enum": ["warning", "critical"]}},
        "muted": {"type": "array", "items": {"type": "string"}, "description": "KPIs snoozed for this row"},
    }
    return {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
        "Kpis": _kpis(),
        "Agent": {
            "type": "object",
            "required": ["agent_id", "team", "state", "kpis", "breaches"],
            "properties": {
                "agent_id": {"type": "string"},
                "team": {"type": ["string", "null"]},
                "state": {"type": ["string", "null"], "description": "latest agent.state, null before any"},
                **row_common,
            },
        },
        "Team": {
            "type": "object",
            "required": ["team", "kpis", "breaches"],
            "properties": {"team": {"type": "string"}, "agents": {"type": "integer"}, **row_common},
        },
        "Floor": {
            "type": "object",
            "required": ["kpis"],
            "properties": {"agents": {"type": "integer"}, **row_common},
        },
        "Alert": _alert(),
        "Snooze": {
            "type": "object",
            "required": ["kpi", "until"],
            "properties": {
                "kpi": {"type": "string"},
                "agent_id": {"type": "string"},
                "team": {"type": "string"},
                "until": RFC3339,
            },
        },
        "Snapshot": {
            "type": "object",
            "required": ["as_of", "window", "agents", "teams", "floor", "alerts"],
            "properties": {
                "as_of": RFC3339,
                "status": {
                    "enum": ["live", "rebuilding"],
                    "description": "rebuilding: a worker is replaying Kafka into an empty Redis; numbers are partial",
                },
                "window": {"type": "string"},
                "windows": {"type": "array", "items": {"type": "string"}},
                "agents": {"type": "array", "items": _ref("Agent")},
                "teams": {"type": "array", "items": _ref("Team")},
                "floor": _ref("Floor"),
                "alerts": {"type": "array", "items": _ref("Alert"), "description": "active alerts, newest first"},
                "snoozes": {"type": "array", "items": _ref("Snooze")},
                "thresholds": {"type": "object", "description": "the rule watching each KPI"},
            },
        },
        "Role": {
            "type": "object",
            "required": ["role", "may_act"],
            "properties": {"role": {"enum": list(ROLES)}, "may_act": {"type": "boolean"}},
        },
        "AuditEntry": {
            "type": "object",
            "description": "`id` for an ack; `kpi` with `agent_id` or `team`, `minutes` and `until` for a snooze.",
            "required": ["ts", "action", "by", "role"],
            "properties": {
                "ts": RFC3339,
                "action": {"enum": ["ack", "snooze"]},
                "by": {"type": "string", "description": "the role, then ':' and the name the page sent, if any"},
                "role": {"enum": list(ROLES)},
                "name": {"type": ["string", "null"], "maxLength": audit.MAX_NAME_CHARS},
                "id": {"type": "string"},
                "kpi": {"type": "string"},
                "agent_id": {"type": "string"},
                "team": {"type": "string"},
                "minutes": {"type": "number"},
                "until": RFC3339,
            },
        },
        **feed_schemas(),
        "Health": {
            "type": "object",
            "required": ["ok", "redis"],
            "properties": {
                "ok": {"type": "boolean"},
                "redis": {"type": "boolean"},
                "rebuilding": {"type": "boolean", "description": "a worker is rebuilding the windows from Kafka"},
                "clients": {"type": "integer"},
            },
        },
    }


def feed_schemas() -> dict[str, Any]:
    """The websocket messages that are not HTTP replies: what a client sends, and the broadcasts besides snapshots
    and alerts. `docs/asyncapi.yaml` refers to these (and to Snapshot and Alert) for the `/ws` channel."""
    subject = {"agent_id": {"type": "string", "minLength": 1}, "team": {"type": "string", "minLength": 1}}
    by = {
        "type": "string",
        "maxLength": audit.MAX_NAME_CHARS,
        "description": "the name of the person acting, recorded in the audit log",
    }
    return {
        "SnapshotMessage": {
            "allOf": [
                _ref("Snapshot"),
                {"type": "object", "required": ["type"], "properties": {"type": {"const": "snapshot"}}},
            ]
        },
        "DeltaMessage": {
            "type": "object",
            "description": "server to a full-floor client that asked for `delta=true`: the agents that changed since "
            "version `since` (whole rows) and those that left; every other field as in the snapshot (docs/reads.md)",
            "required": ["type", "since", "version", "changed", "removed", "as_of", "window", "teams", "floor"],
            "properties": {
                "type": {"const": "delta"},
                "since": {"type": "integer"},
                "version": {"type": "integer"},
                "changed": {"type": "array", "items": _ref("Agent")},
                "removed": {"type": "array", "items": {"type": "string"}},
                "as_of": {"type": "string", "format": "date-time"},
                "window": {"type": "string"},
                "teams": {"type": "array", "items": _ref("Team")},
                "floor": _ref("Floor"),
                "alerts": {"type": "array", "items": _ref("Alert")},
            },
        },
        "AckRequest": {
            "type": "object",
            "description": "client to server: acknowledge an alert (refused for a read-only viewer)",
            "required": ["type", "id"],
            "properties": {
                "type": {"const": "ack"},
                "id": {"type": "string", "minLength": 1, "maxLength": 100},
                "by": by,
            },
        },
        "SnoozeRequest": {
            "type": "object",
            "description": "client to server: mute a KPI for an agent or a team (refused for a read-only viewer)",
            "required": ["type", "kpi", "minutes"],
            "properties": {
                "type": {"const": "snooze"},
                "kpi": {"enum": list(KPI_KEYS)},
                "minutes": {"type": "number", "exclusiveMinimum": 0, "maximum": 1440},
                **subject,
                "by": by,
            },
            "anyOf": [{"required": ["agent_id"]}, {"required": ["team"]}],
        },
        "AckMessage": {
            "type": "object",
            "description": "server to every client: an alert was acknowledged",
            "required": ["type", "id", "acknowledged"],
            "properties": {"type": {"const": "ack"}, "id": {"type": "string"}, "acknowledged": {"type": "boolean"}},
        },
        "SnoozeMessage": {
            "type": "object",
            "description": "server to every client: a KPI is muted for an agent or a team until `until`",
            "required": ["type", "kpi", "until"],
            "properties": {"type": {"const": "snooze"}, "kpi": {"type": "string"}, **subject, "until": RFC3339},
        },
        "ErrorMessage": {
            "type": "object",
            "description": "server to one client: its message was refused and changed nothing",
            "required": ["type", "error"],
            "properties": {
                "type": {"const": "error"},
                "error": {"type": "string"},
                "message": {"type": "string", "description": "the same text (first edition)"},
            },
        },
    }


DESCRIPTION = """\
The callpulse monitor serves one port: the wallboard page, this JSON API, the websocket feed (`/ws`, its messages \
are described in `docs/asyncapi.yaml`) and Prometheus metrics.

Tokens: with `CALLPULSE_TOKEN` set, every path but `/healthz`, `/static/*` and this document needs it, as \
`Authorization: Bearer <token>` or `?token=<token>`. With `CALLPULSE_SUPERVISOR_TOKEN` set too, `CALLPULSE_TOKEN` \
is read-only and acknowledging, snoozing and `/api/audit` need the supervisor token, which opens everything else too.

Methods: GET and HEAD. Any other method on any path is answered `405 Method Not Allowed` with `Allow: GET`."""


def document(settings: Settings) -> dict[str, Any]:
    """The OpenAPI 3.1 document for a monitor running with `settings`."""
    windows = list(settings.window_names)
    unauthorized = _error("missing or wrong token")
    paths: dict[str, Any] = {
        "/api/snapshot": {
            "get": {
                "operationId": "getSnapshot",
                "summary": "Every agent's, team's and the floor's KPIs in one window, with the active alerts",
                "parameters": [
                    {"name": "window", "in": "query", "schema": {"enum": windows, "default": windows[0]}},
                    {
                        "name": "team",
                        "in": "query",
                        "schema": {"type": "string"},
                        "description": "only this team's agents (teams, floor and alerts stay)",
                    },
                    {
                        "name": "agents",
                        "in": "query",
                        "schema": {"enum": ["true", "false"], "default": "true"},
                        "description": "false: no agent rows (the floor, teams, queues and alerts only)",
                    },
                ],
                "security": SECURITY,
                "responses": {
                    "200": _json_reply("the snapshot", _ref("Snapshot")),
                    "400": _error("unknown window"),
                    "401": unauthorized,
                    "503": _error("Redis unavailable"),
                },
            }
        },
        "/api/audit": {
            "get": {
                "operationId": "getAudit",
                "summary": "The latest acknowledgements and snoozes of the last 30 days, newest first",
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": audit.MAX_LIMIT,
                            "default": audit.DEFAULT_LIMIT,
                        },
                    },
                ],
                "security": SECURITY,
                "responses": {
                    "200": _json_reply("audit entries", {"type": "array", "items": _ref("AuditEntry")}),
                    "400": _error("bad limit"),
                    "401": unauthorized,
                    "403": _error("a read-only token while CALLPULSE_SUPERVISOR_TOKEN is set"),
                    "503": _error("Redis unavailable"),
                },
            }
        },
        "/api/role": {
            "get": {
                "operationId": "getRole",
                "summary": "The role the given token has, and whether it may acknowledge and snooze",
                "security": SECURITY,
                "responses": {"200": _json_reply("the role", _ref("Role")), "401": unauthorized},
            }
        },
        "/api/openapi.json": {
            "get": {
                "operationId": "getOpenApi",
                "summary": "This document",
                "security": [],
                "responses": {"200": _json_reply("OpenAPI 3.1", {"type": "object"})},
            }
        },
        "/": {
            "get": {
                "operationId": "getWallboard",
                "summary": "The live wallboard page (URL parameters: docs/wallboard.md)",
                "security": SECURITY,
                "responses": {"200": {"description": "HTML", "content": {"text/html": {}}}, "401": unauthorized},
            }
        },
        "/ws": {
            "get": {
                "operationId": "openFeed",
                "summary": "Websocket upgrade: the live feed (messages in docs/asyncapi.yaml)",
                "parameters": [
                    {"name": "window", "in": "query", "schema": {"enum": windows, "default": windows[0]}},
                    {"name": "team", "in": "query", "schema": {"type": "string"}},
                    {
                        "name": "agents",
                        "in": "query",
                        "schema": {"enum": ["true", "false"], "default": "true"},
                        "description": "false: no agent rows (the floor, teams, queues and alerts only)",
                    },
                    {
                        "name": "delta",
                        "in": "query",
                        "schema": {"enum": ["true", "false"], "default": "false"},
                        "description": "full floor only: deltas (DeltaMessage) after the first snapshot",
                    },
                ],
                "security": SECURITY,
                "responses": {
                    "101": {"description": "switching to the websocket protocol"},
                    "400": _error("unknown window"),
                    "401": unauthorized,
                    "403": _error("the browser's Origin is not allowed"),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "getMetrics",
                "summary": "Prometheus exposition: team, floor, alert and event series (per agent: /metrics/agents)",
                "security": SECURITY,
                "responses": {
                    "200": {"description": "Prometheus text format 0.0.4", "content": {"text/plain": {}}},
                    "401": unauthorized,
                    "503": {"description": "Redis unavailable", "content": {"text/plain": {}}},
                },
            }
        },
        "/metrics/agents": {
            "get": {
                "operationId": "getAgentMetrics",
                "summary": "Prometheus exposition of the per-agent series: callpulse_agent_kpi, callpulse_agent_score",
                "security": SECURITY,
                "responses": {
                    "200": {"description": "Prometheus text format 0.0.4", "content": {"text/plain": {}}},
                    "401": unauthorized,
                    "503": {"description": "Redis unavailable", "content": {"text/plain": {}}},
                },
            }
        },
        "/healthz": {
            "get": {
                "operationId": "getHealth",
                "summary": "Liveness and Redis reachability (no token needed)",
                "security": [],
                "responses": {
                    "200": _json_reply("healthy", _ref("Health")),
                    "503": _json_reply("Redis unreachable", _ref("Health")),
                },
            }
        },
        "/static/{name}": {
            "get": {
                "operationId": "getStatic",
                "summary": "The wallboard's script and style sheet (no token needed)",
                "security": [],
                "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "the file"}, "404": _error("no such file")},
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "callpulse monitor",
            "version": "2",
            "description": DESCRIPTION,
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "servers": [{"url": "http://127.0.0.1:8700", "description": "the default CALLPULSE_HTTP"}],
        "security": SECURITY,
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "CALLPULSE_TOKEN (read-only) or CALLPULSE_SUPERVISOR_TOKEN",
                },
                "query_token": {
                    "type": "apiKey",
                    "in": "query",
                    "name": "token",
                    "description": "the same tokens in the URL, for wallboard screens",
                },
            },
        },
    }
