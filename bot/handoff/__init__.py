"""The handoff: its state machine, its envelope, the desk where agents take conversations, and the
webhooks on its events."""
