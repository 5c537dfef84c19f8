"""What every sluice service shares: names, schemas, settings, errors, SSE, auth, store, telemetry."""
