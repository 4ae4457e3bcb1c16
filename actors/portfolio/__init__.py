"""Portfolio actor: account summary, positions, per-strategy P&L, reconciliation with the gateway."""
