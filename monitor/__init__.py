"""The serving side of callpulse: one port for the wallboard page, the snapshot API, the websocket feed and /metrics.

Public: `server.Monitor` (and `server.serve_forever`, the `callpulse monitor` command),
`snapshot.build` (the contract's snapshot from window rows), `metrics.KpiCollector`, `auth.role_of` (the role a
token gives), `audit` (the log of acks and snoozes), `openapi.document` (the HTTP API as OpenAPI 3.1),
`methods.MethodGuardConnection` (405 for any method but GET and HEAD).
"""
