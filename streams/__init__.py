"""The stream side of callpulse: events in, exact rolling KPI windows in Redis, alerts out.

Public: `events.decode` (validation), `kpis` and `windows` (the pure KPI core),
`batch.plan` (one atomic store write per batch), `store.WindowStore` (Redis),
`processor.Processor` (shared by the Faust agents and replay), `app.build_app` (the Faust app),
`consumer.BatchConsumer` (whole fetches into the agents) and `health.WorkerHealth` (metrics, /healthz).
"""
