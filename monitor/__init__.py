"""The serving side of callpulse: one port for the wallboard page, the snapshot API, the websocket feed and /metrics.

Public: `server.Monitor` (and `server.serve_forever`, the `callpulse monitor` command),
`snapshot.build` (the contract's snapshot from window rows), `metrics.KpiCollector`.
"""
