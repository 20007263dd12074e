"""The triage gateway: channels, routing, handoff and the store of record."""
