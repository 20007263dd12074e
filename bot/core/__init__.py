"""Channel-neutral conversation model: routing, escalation, handoff, conversations."""
