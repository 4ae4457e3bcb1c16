"""Monitor actor: liveness of every actor, connection and trading state, alerts, audit trail, metrics, dashboard."""
